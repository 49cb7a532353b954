"""``thresher analyze`` in the terminal: what each op would drop, and threshold suggestions."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table


def _bound(lo, hi) -> str:
    fmt = lambda v: "-" if v is None else f"{v:g}"  # noqa: E731
    return f"[{fmt(lo)}, {fmt(hi)}]"


def analysis_tables(summary: dict):
    """Rich renderables: the would-drop funnel, and (with --suggest) one row per thresholded stat."""
    rows = summary["rows"] or 1
    funnel = Table(title=f"would drop ({summary['rows']:,} rows analysed, nothing dropped)", title_justify="left")
    funnel.add_column("op", no_wrap=True)
    funnel.add_column("alone", justify="right")
    funnel.add_column("first (as a run)", justify="right")
    for op in summary["ops"]:
        funnel.add_row(op["key"], f"{op['flagged']:,} ({op['flagged'] / rows:.1%})", f"{op['first']:,} ({op['first'] / rows:.1%})")
    parts = [funnel]
    if summary.get("suggestions"):
        t = Table(title="threshold suggestions (drop = share of all rows)", title_justify="left")
        for col in ("op", "stat", "now", "drop", "quantile", "drop", "sigma", "drop"):
            t.add_column(col, justify="right" if col == "drop" else "left", no_wrap=True)
        for s in summary["suggestions"]:
            t.add_row(s["op"], s["stat"], _bound(*s["current"]), f"{s['current_drop_share']:.1%}",
                      _bound(s["quantile"]["lo"], s["quantile"]["hi"]), f"{s['quantile']['drop_share']:.1%}",
                      _bound(s["sigma"]["lo"], s["sigma"]["hi"]), f"{s['sigma']['drop_share']:.1%}")
        parts.append(t)
    return Group(*parts)
