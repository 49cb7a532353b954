"""The ledger in the terminal: the funnel (rows in / out / dropped / quarantined per op), why rows
left (reasons, in rows), what the ops counted (counters, in their own units: dollars for costs), and
a run total for LLM use. Kept apart from ``ledger.py`` so the ledger itself needs no terminal
library."""

from __future__ import annotations

from collections import Counter

from rich.console import Group
from rich.table import Table

from thresher.pipeline.ledger import Ledger

COST_SUFFIX = "_micro_usd"  # counters in millionths of a dollar (integers, so they add up exactly)
LLM_TOTALS = ("llm_requests", "llm_cached", "llm_failed", "llm_prompt_tokens", "llm_completion_tokens")


def counter_label(name: str, value: int) -> tuple[str, str]:
    """(name, value) as a person reads them: a cost counter in dollars, others as counts."""
    if name.endswith(COST_SUFFIX):
        return name[: -len(COST_SUFFIX)] + " ($)", f"${value / 1e6:,.4f}"
    return name, f"{value:,}"


def llm_totals(ledger: Ledger) -> dict[str, int]:
    """LLM requests, tokens and cost (micro-dollars) summed over every op of the run."""
    total: Counter = Counter()
    for e in ledger.entries.values():
        for k, v in e.counters.items():
            if k in LLM_TOTALS or (k.startswith("llm_") and k.endswith(COST_SUFFIX)):
                total[k] += v
    return dict(total)


def ledger_table(ledger: Ledger, output_rows: int):
    """Rich renderables for the terminal: the funnel, the reasons (rows), the counters, LLM totals."""
    funnel = Table(title="ledger", title_justify="left")
    funnel.add_column("op", no_wrap=True)
    for col in ("in", "out", "dropped", "quarantined", "s"):
        funnel.add_column(col, justify="right", no_wrap=True)
    why = Table(title="why rows left", title_justify="left")
    why.add_column("op", no_wrap=True)
    why.add_column("", no_wrap=True)
    why.add_column("reason")
    why.add_column("rows", justify="right", no_wrap=True)
    counted = Table(title="counters", title_justify="left")
    counted.add_column("op", no_wrap=True)
    counted.add_column("counter")
    counted.add_column("value", justify="right", no_wrap=True)
    for e in ledger.entries.values():
        funnel.add_row(e.key, f"{e.rows_in:,}", f"{e.rows_out:,}", f"{e.n_dropped:,}",
                       f"{e.n_quarantined:,}", f"{e.seconds:.2f}")
        for kind, counter in (("dropped", e.dropped), ("quarantined", e.quarantined)):
            for reason, n in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])):
                why.add_row(e.key, kind, reason, f"{n:,}")
        for name, n in sorted(e.counters.items()):
            counted.add_row(e.key, *counter_label(name, n))
    tot = ledger.totals()
    funnel.caption = (f"input {tot['input']:,} = output {output_rows:,} + dropped {tot['dropped']:,} + "
                      f"quarantined {tot['quarantined']:,}" + (f" - created {tot['created']:,}" if tot["created"] else ""))
    parts = [funnel] + [t for t in (why, counted) if t.row_count]
    llm = llm_totals(ledger)
    if llm.get("llm_requests"):
        cost = sum(v for k, v in llm.items() if k.endswith(COST_SUFFIX))
        parts.append(f"LLM, whole run: {llm.get('llm_requests', 0):,} requests ({llm.get('llm_cached', 0):,} cached, "
                     f"{llm.get('llm_failed', 0):,} failed), {llm.get('llm_prompt_tokens', 0):,} prompt + "
                     f"{llm.get('llm_completion_tokens', 0):,} completion tokens, ${cost / 1e6:,.4f}")
    return Group(*parts) if len(parts) > 1 else funnel
