"""The ledger table a person reads after a run: counters apart from row counts, costs in dollars,
and a run total for LLM use (issue 14 reported `llm_cost_micro_usd 72,192` under a "rows" header)."""

from __future__ import annotations

import io

from rich.console import Console

from thresher.pipeline.ledger import Ledger
from thresher.pipeline.ledger_view import ledger_table


def render(ledger: Ledger, rows: int) -> str:
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(ledger_table(ledger, rows))
    return out.getvalue()


def test_counters_costs_and_llm_totals():
    led = Ledger([("llm_candidates", "llm_candidates", 0), ("llm_judge", "llm_judge", 1)])
    led["read"].rows_in = led["read"].rows_out = 10
    for key, cost, req in (("llm_candidates", 72_192, 40), ("llm_judge", 27_808, 10)):
        e = led[key]
        e.rows_in, e.rows_out = 10, 9
        e.quarantined["llm request failed"] = 1
        e.counters.update({"llm_requests": req, "llm_cached": 4, "llm_failed": 1, "llm_prompt_tokens": 1000,
                           "llm_completion_tokens": 500, "llm_cost_micro_usd": cost})
    text = render(led, 9)
    why, counters = text.split("why rows left")[1].split("counters")
    assert "llm request failed" in why and "llm_cost" not in why  # row reasons only
    assert "llm_cost ($)" in counters and "$0.0722" in counters and "$0.0278" in counters
    assert "72,192" not in text
    assert ("LLM, whole run: 50 requests (8 cached, 2 failed), 2,000 prompt + 1,000 completion tokens, "
            "$0.1000") in text


def test_no_llm_line_without_llm_ops():
    led = Ledger([("exact_dedup", "exact_dedup", 0)])
    led["read"].rows_in = led["read"].rows_out = 3
    e = led["exact_dedup"]
    e.rows_in, e.rows_out = 3, 2
    e.dropped["exact_duplicate"] = 1
    text = render(led, 2)
    assert "exact_duplicate" in text and "LLM, whole run" not in text and "counters" not in text
