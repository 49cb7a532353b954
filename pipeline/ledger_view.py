"""The ledger in the terminal: the funnel (rows in / out / dropped / quarantined per op), then
why rows left (reasons and counters). Kept apart from ``ledger.py`` so the ledger itself needs
no terminal library."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table

from thresher.pipeline.ledger import Ledger


def ledger_table(ledger: Ledger, output_rows: int):
    """Rich renderables for the terminal: the funnel, then the reasons and counters."""
    funnel = Table(title="ledger", title_justify="left")
    funnel.add_column("op", no_wrap=True)
    for col in ("in", "out", "dropped", "quarantined", "s"):
        funnel.add_column(col, justify="right", no_wrap=True)
    why = Table(title="why", title_justify="left")
    why.add_column("op", no_wrap=True)
    why.add_column("", no_wrap=True)
    why.add_column("reason / counter")
    why.add_column("rows", justify="right", no_wrap=True)
    for e in ledger.entries.values():
        funnel.add_row(e.key, f"{e.rows_in:,}", f"{e.rows_out:,}", f"{e.n_dropped:,}",
                       f"{e.n_quarantined:,}", f"{e.seconds:.2f}")
        for kind, counter in (("dropped", e.dropped), ("quarantined", e.quarantined), ("counter", e.counters)):
            for reason, n in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])):
                why.add_row(e.key, kind, reason, f"{n:,}")
    tot = ledger.totals()
    funnel.caption = (f"input {tot['input']:,} = output {output_rows:,} + dropped {tot['dropped']:,} + "
                      f"quarantined {tot['quarantined']:,}" + (f" - created {tot['created']:,}" if tot["created"] else ""))
    return Group(funnel, why) if why.row_count else funnel
