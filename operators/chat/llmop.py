"""The base of chat ops that call an LLM: a client per worker (built in ``setup``), K answers per
prompt with distinct seeds, usage and cost recorded as ledger counters."""

from __future__ import annotations

from collections.abc import Iterable

from thresher.pipeline.errors import FatalOpError
from thresher.pipeline.llm import ChatClient, Completion
from thresher.pipeline.ops import Mapper, Resources


class LLMOp(Mapper):
    """A mapper with ``params.llm``: ``self.client`` in every worker; ``_ask_k`` for single-turn prompts.

    Requests cost money and time, so a failed request is never re-sent by the runner: the client
    retries it, the op quarantines the row with the request's error, and an exception quarantines
    the batch once (``isolate_errors``) instead of bisecting it. A rejected key or an unreachable
    server raises ``FatalOpError`` from the client, which stops the run."""

    reads_text = False
    isolate_errors = False
    paid = True
    resources = Resources(cpus=0.5, memory_mb=256)
    metrics = {"llm_requests": "requests (cached included)", "llm_cached": "answered from the cache (paid by another run)",
               "llm_failed": "requests that failed after retries", "llm_retries": "retries",
               "llm_prompt_tokens": "prompt tokens billed", "llm_completion_tokens": "completion tokens billed",
               "llm_cost_micro_usd": "cost in millionths of a dollar"}

    def setup(self) -> None:
        # the run id lets the client count answers this run paid for before an interruption (--resume)
        self.client = ChatClient(self.params.llm, run_id=self.ctx.run_id, attempt_id=self.ctx.attempt_id)

    def _ask_k(self, prompts: list[str], k: int) -> list[list[Completion]]:
        """K completions per prompt (seeds seed..seed+K-1: distinct samples, each cacheable)."""
        base = self.params.llm.seed or 0
        bodies = [self.client.body([{"role": "user", "content": p}], seed=base + j) for p in prompts for j in range(k)]
        done = self._complete(bodies)
        return [done[i * k:(i + 1) * k] for i in range(len(prompts))]

    def _complete(self, bodies: list[dict]) -> list[Completion]:
        """The client's completions, with its usage recorded as this op's ledger counters."""
        try:
            done = self.client.complete_many(bodies)
        except FatalOpError:
            # the run stops and this batch's ledger with it; what the batch paid is in the cache,
            # under this run's id, and counts on --resume (an op reused in-process must not count it twice)
            self.client.take_counters()
            raise
        for key, v in self.client.take_counters().items():
            self.record(key, v)
        return done


def request_error(completions: Iterable[Completion]) -> str | None:
    """Why requests failed, for a row's quarantine reason ("2 of 4 requests failed: <first error>";
    one request: its error), or None when none failed. The client has redacted the errors."""
    done = list(completions)
    failed = [c.error or "no answer" for c in done if c.text is None]
    if not failed:
        return None
    return failed[0] if len(done) == 1 else f"{len(failed)} of {len(done)} requests failed: {failed[0]}"
