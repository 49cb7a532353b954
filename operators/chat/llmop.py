"""The base of chat ops that call an LLM: a client per worker (built in ``setup``), K answers per
prompt with distinct seeds, usage and cost recorded as ledger counters."""

from __future__ import annotations

import pyarrow as pa

from pipeline.llm import ChatClient
from pipeline.ops import Mapper, Resources


class LLMOp(Mapper):
    """A mapper with ``params.llm``: ``self.client`` in every worker; ``_ask_k`` for single-turn prompts."""

    reads_text = False
    resources = Resources(cpus=0.5, memory_mb=256)
    metrics = {"llm_requests": "requests (cached included)", "llm_cached": "answered from the cache",
               "llm_failed": "requests that failed after retries", "llm_retries": "retries",
               "llm_prompt_tokens": "prompt tokens billed", "llm_completion_tokens": "completion tokens billed",
               "llm_cost_micro_usd": "cost in millionths of a dollar"}

    def setup(self) -> None:
        self.client = ChatClient(self.params.llm)

    def _ask_k(self, prompts: list[str], k: int) -> list[list[str | None]]:
        """K answers per prompt (seeds seed..seed+K-1: distinct samples, each cacheable)."""
        base = self.params.llm.seed or 0
        bodies = [self.client.body([{"role": "user", "content": p}], seed=base + j) for p in prompts for j in range(k)]
        done = self.client.complete_many(bodies)
        for key, v in self.client.take_counters().items():
            self.record(key, v)
        return [[c.text for c in done[i * k:(i + 1) * k]] for i in range(len(prompts))]


def set_column(table: pa.Table, name: str, values) -> pa.Table:
    """``table`` with column ``name`` replaced, or added."""
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)
