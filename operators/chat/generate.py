"""LLM generation over chat rows: answers for prompts that have none (the first augmentation step
of Self-Instruct-style pipelines and of synthetic preference data)."""

from __future__ import annotations

import pyarrow as pa
from pydantic import Field

from thresher.operators.chat.formats import MESSAGES
from thresher.operators.chat.llmop import LLMOp, request_error
from thresher.pipeline.columns import set_column
from thresher.pipeline.llm import LLMConfig
from thresher.pipeline.ops import MapResult, OpParams
from thresher.pipeline.registry import register


@register
class LLMRespond(LLMOp):
    """Answer every conversation that ends with a user turn through an OpenAI-compatible server
    (``llm``), appending the assistant turn; rows the server cannot answer after its retries go to
    quarantine with the error. Answers are cached by request, so a rerun never pays twice; token
    use and cost go to the ledger."""

    name = "llm_respond"

    class Params(OpParams):
        llm: LLMConfig = Field(default_factory=LLMConfig, description="server, model, sampling, retries, cache")
        system_prompt: str | None = Field(None, description="prepended when the conversation has no system turn")
        overwrite: bool = Field(False, description="also re-answer conversations that end with an assistant turn "
                                "(the last answer is replaced)")

    example = {"llm": {"base_url": "http://127.0.0.1:8000/v1", "model": "Qwen/Qwen2.5-7B-Instruct"}}

    def process(self, batch: pa.Table) -> MapResult:
        p = self.params
        convs = batch.column("messages").to_pylist()
        todo, bodies = [], []
        for i, msgs in enumerate(convs):
            if not msgs:
                continue
            if msgs[-1]["role"] == "assistant":
                if not p.overwrite:
                    continue
                msgs = msgs[:-1]
            if p.system_prompt and msgs[0]["role"] != "system":
                msgs = [{"role": "system", "content": p.system_prompt}, *msgs]
            todo.append((i, msgs))
            bodies.append(self.client.body(msgs))
        marks: list[str | None] = [None] * batch.num_rows
        for (i, msgs), c in zip(todo, self._complete(bodies), strict=True):
            if c.text is None:
                marks[i] = f"llm request failed ({c.error})"
            elif not c.text.strip():
                marks[i] = "llm answer empty"
            else:
                convs[i] = [*msgs, {"role": "assistant", "content": c.text}]
        return MapResult(set_column(batch, "messages", pa.array(convs, MESSAGES)), quarantine=marks)


@register
class LLMCandidates(LLMOp):
    """Sample N answers per prompt (seeds seed..seed+N-1, temperature from ``llm``) into
    ``candidates`` — the first step of synthetic preference data: prompts -> N responses -> judge
    (``llm_judge target: candidates`` or ``heuristic_score``) -> ``preference_pairs``. A prompt
    with fewer than two answers goes to quarantine, with the error of its failed requests."""

    name = "llm_candidates"

    class Params(OpParams):
        llm: LLMConfig = Field(default_factory=lambda: LLMConfig(temperature=0.8), description="the sampling model")
        n: int = Field(4, ge=2, le=32, description="answers per prompt")

    example = {"llm": {"model": "policy", "temperature": 0.8}, "n": 4}

    def process(self, batch: pa.Table) -> MapResult:
        from thresher.operators.chat.formats import CANDIDATES

        p = self.params
        convs = batch.column("messages").to_pylist()
        prompts = [m[:-1] if m and m[-1]["role"] == "assistant" else (m or []) for m in convs]
        base = p.llm.seed or 0
        bodies = [self.client.body(m, seed=base + j) for m in prompts for j in range(p.n)]
        done = self._complete(bodies)
        cands, marks = [], []
        for i in range(len(prompts)):
            mine = done[i * p.n:(i + 1) * p.n]
            texts = [c.text for c in mine if c.text and c.text.strip()]
            cands.append([{"content": t, "rank": None, "score": None} for t in texts])
            why = request_error(mine)
            marks.append(None if len(texts) >= 2 else
                         f"fewer than 2 answers ({len(texts)} of {p.n})" + (f": {why}" if why else ": the others were empty"))
        out = set_column(batch, "messages", pa.array(prompts, MESSAGES))
        return MapResult(set_column(out, "candidates", pa.array(cands, CANDIDATES)), quarantine=marks)
