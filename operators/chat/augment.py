"""LLM augmentation of instruction data: Self-Instruct-style expansion from seed examples with a
novelty filter, Evol-Instruct-style refinement, QA pairs from documents, and LLM2LLM-style
targeted augmentation of hard rows. Prompt templates are parameters; answers are parsed
tolerantly (JSON first, then numbered or bulleted lists) and rows whose answers cannot be parsed
go to quarantine, as do rows whose requests failed (with the request's error)."""

from __future__ import annotations

import json
import re
from typing import Literal

import numpy as np
import pyarrow as pa
import xxhash
from pydantic import Field

from thresher.operators.chat.formats import MESSAGES
from thresher.operators.chat.llmop import LLMOp, request_error
from thresher.operators.common.chat import turn_text
from thresher.pipeline.columns import set_column
from thresher.pipeline.llm import LLMConfig
from thresher.pipeline.ops import MapResult, OpParams
from thresher.pipeline.registry import register

EXPAND = ("You write new, diverse tasks for an assistant. Here are examples:\n{examples}\n\n"
          "Write {n} new tasks that differ from the examples in topic and form. "
          'Reply with a JSON object {{"tasks": ["...", "..."]}}.')
EVOLVE = {
    "harder": "Rewrite the task so that it requires more reasoning steps or constraints, keeping it answerable. "
              "Reply with the rewritten task only.\n\nTask:\n{instruction}",
    "clearer": "Rewrite the task so that it is unambiguous and self-contained, without changing what it asks. "
               "Reply with the rewritten task only.\n\nTask:\n{instruction}",
}
QA = ("Read the text and write {n} question-answer pairs a student could answer from it alone.\n\nText:\n{text}\n\n"
      'Reply with a JSON object {{"pairs": [{{"question": "...", "answer": "..."}}]}}.')
SIMILAR = ("A model answered this task badly. Write {n} new tasks that test the same skill in different words and "
           'contexts.\n\nTask:\n{instruction}\n\nReply with a JSON object {{"tasks": ["...", "..."]}}.')


def parse_list(text: str | None, key: str) -> list | None:
    """A list from a model's answer: ``{key: [...]}`` or a bare JSON list anywhere in it, else the
    items of a numbered or bulleted list; None if nothing parses."""
    if not text:
        return None
    for pattern in (r"\{.*\}", r"\[.*\]"):
        m = re.search(pattern, text, re.S)
        if m:
            try:
                v = json.loads(m.group(0))
                v = v.get(key) if isinstance(v, dict) else v
                if isinstance(v, list) and v:
                    return v
            except ValueError:
                pass
    items = [m.group(1).strip() for m in re.finditer(r"(?m)^\s*(?:\d+[.)]|[-*•])\s+(.+)$", text)]
    return items or None


def clean_rewrite(text: str | None) -> str | None:
    """A rewritten task without the chatter models wrap it in ("Sure! Here is ...:", quotes)."""
    if not text:
        return None
    t = text.strip()
    t = re.sub(r"(?i)^(sure|certainly|of course)[^\n]*(\n+|$)", "", t)
    t = re.sub(r"(?i)^(rewritten (task|prompt|instruction)|new task)\s*:\s*", "", t).strip()
    if len(t) > 1 and t[0] == t[-1] and t[0] in "\"'“”":
        t = t[1:-1].strip()
    return t or None


def lcs_len(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F1 on lower-cased words (Self-Instruct keeps new instructions below 0.7 with all others)."""
    x, y = a.lower().split(), b.lower().split()
    if not x or not y:
        return 0.0
    lcs = lcs_len(x, y)
    if lcs == 0:
        return 0.0
    p, r = lcs / len(x), lcs / len(y)
    return 2 * p * r / (p + r)


class _Out:
    """Output rows of a 1:N op: each copies its source row's other columns and gets new ``messages``
    and ``id``; ``keep_inputs`` starts with every input row unchanged."""

    def __init__(self, batch: pa.Table, id_key: str, keep_inputs: bool):
        self.batch = batch
        self.ids = batch.column(id_key).to_pylist() if id_key in batch.column_names else [None] * batch.num_rows
        n = batch.num_rows if keep_inputs else 0
        self.src, self.msgs = list(range(n)), batch.column("messages").to_pylist()[:n] if n else []
        self.new_ids, self.marks = list(self.ids[:n]), [None] * n

    def add(self, src: int, messages: list, suffix: str, mark: str | None = None) -> None:
        self.src.append(src)
        self.msgs.append(messages)
        self.new_ids.append(f"{self.ids[src]}{suffix}")
        self.marks.append(mark)

    def result(self) -> MapResult:
        out = self.batch.take(pa.array(self.src, pa.int64())) if self.src else self.batch.slice(0, 0)
        out = set_column(out, "messages", pa.array(self.msgs, MESSAGES))
        out = set_column(out, "id", pa.array(self.new_ids, pa.string()))
        return MapResult(out, quarantine=self.marks)


@register
class LLMExpandInstructions(LLMOp):
    """Self-Instruct-style expansion (Wang et al., 2023): for every ``every`` rows, show ``examples``
    of the batch's instructions (chosen by a seeded hash) and ask for ``n`` new tasks; a new task
    is kept only if its ROUGE-L against every instruction seen so far is below ``max_rouge_l``
    (0.7 in the paper). New rows are added (prompts only; answer them with ``llm_respond``)."""

    name = "llm_expand_instructions"
    one_to_many = True
    metrics = {**LLMOp.metrics, "new_tasks": "tasks added", "not_novel": "tasks dropped as too similar"}

    class Params(OpParams):
        llm: LLMConfig = Field(default_factory=lambda: LLMConfig(temperature=0.7), description="the generator")
        template: str = Field(EXPAND, description="prompt; {examples} and {n} are filled in")
        examples: int = Field(4, ge=1, le=16, description="seed tasks shown per request")
        n: int = Field(4, ge=1, le=32, description="tasks asked for per request")
        every: int = Field(8, ge=1, description="one request per this many input rows")
        max_rouge_l: float = Field(0.7, gt=0, le=1, description="a new task this similar to any seen is dropped")

    example = {"llm": {"model": "gen"}, "n": 4, "every": 8}

    def process(self, batch: pa.Table) -> MapResult:
        p = self.params
        seen = [s for s in turn_text(batch.column("messages"), ("user",)).to_pylist() if s]
        out = _Out(batch, self.ctx.id_key, keep_inputs=True)
        groups = list(range(0, batch.num_rows, p.every))
        prompts = []
        for g in groups:
            rng = np.random.default_rng(xxhash.xxh64_intdigest(f"{self.ctx.seed}:{out.ids[g]}".encode()))
            picks = rng.choice(len(seen), size=min(p.examples, len(seen)), replace=False) if seen else []
            prompts.append(p.template.format(examples="\n".join(f"- {seen[i]}" for i in picks), n=p.n))
        for g, (c,) in zip(groups, self._ask_k(prompts, 1), strict=True):
            text = c.text
            tasks = parse_list(text, "tasks")
            if tasks is None:  # a placeholder row, quarantined with the answer
                out.add(g, [{"role": "user", "content": (text or "")[:2000]}], "#expand-failed",
                        f"llm request failed ({c.error})" if text is None else "generator answer unparseable (no task list)")
                continue
            for j, task in enumerate(str(t).strip() for t in tasks):
                if not task or any(rouge_l(task, s) >= p.max_rouge_l for s in seen):
                    self.record("not_novel", 1)
                    continue
                seen.append(task)
                out.add(g, [{"role": "user", "content": task}], f"#new{j}")
                self.record("new_tasks", 1)
        return out.result()


@register
class LLMEvolveInstruction(LLMOp):
    """Evol-Instruct-style refinement (Xu et al., "WizardLM", 2023): rewrite each prompt to be
    harder or clearer; the original is kept in ``source_instruction``, the old answer is removed
    (answer again with ``llm_respond``). Empty or unchanged rewrites go to quarantine."""

    name = "llm_evolve_instruction"

    class Params(OpParams):
        llm: LLMConfig = Field(default_factory=lambda: LLMConfig(temperature=0.7), description="the rewriter")
        mode: Literal["harder", "clearer"] = Field("harder", description="deepen the task, or make it unambiguous")
        template: str | None = Field(None, description="prompt with {instruction} (default: the mode's)")

    example = {"llm": {"model": "gen"}, "mode": "harder"}

    def process(self, batch: pa.Table) -> MapResult:
        p = self.params
        tmpl = p.template or EVOLVE[p.mode]
        convs = batch.column("messages").to_pylist()
        last_user = [max((i for i, m in enumerate(c or []) if m["role"] == "user"), default=-1) for c in convs]
        prompts = [tmpl.format(instruction=c[i]["content"] if i >= 0 else "") for c, i in zip(convs, last_user, strict=True)]
        marks, source = [], []
        for k, asked in enumerate(self._ask_k(prompts, 1)):
            i = last_user[k]
            old = convs[k][i]["content"] if i >= 0 else None
            new = clean_rewrite(asked[0].text)
            source.append(old)
            failed = request_error(asked)
            if i >= 0 and failed:
                marks.append(f"llm request failed ({failed})")
                continue
            if i < 0 or new is None or new == old:
                marks.append("rewrite unusable (" + ("no user turn" if i < 0 else "empty or unchanged") + ")")
                continue
            marks.append(None)
            convs[k] = [*convs[k][:i], {"role": "user", "content": new}]
        out = set_column(batch, "messages", pa.array(convs, MESSAGES))
        return MapResult(set_column(out, "source_instruction", pa.array(source, pa.string())), quarantine=marks)


@register
class LLMQAFromText(LLMOp):
    """Pretraining text -> SFT rows: ask for ``n`` question-answer pairs grounded in each document
    (the text column or ``field``); each pair becomes a conversation. Documents whose answer has no
    parseable pairs go to quarantine."""

    name = "llm_qa_from_text"
    reads_text = True
    one_to_many = True
    metrics = {**LLMOp.metrics, "qa_pairs": "pairs written"}

    class Params(OpParams):
        llm: LLMConfig = Field(default_factory=LLMConfig, description="the generator")
        field: str | None = Field(None, description="text column (default: the recipe's)")
        n: int = Field(3, ge=1, le=20, description="question-answer pairs asked per document")
        template: str = Field(QA, description="prompt; {text} and {n} are filled in")
        max_chars: int = Field(6000, ge=200, description="text beyond this is cut before asking")

    example = {"llm": {"model": "gen"}, "n": 3}

    def process(self, batch: pa.Table) -> MapResult:
        p = self.params
        texts = batch.column(p.field or self.text_key).to_pylist()
        prompts = [p.template.format(text=(t or "")[: p.max_chars], n=p.n) for t in texts]
        out = _Out(batch, self.ctx.id_key, keep_inputs=False)
        for i, (c,) in enumerate(self._ask_k(prompts, 1)):
            pairs = [x for x in (parse_list(c.text, "pairs") or []) if isinstance(x, dict)
                     and str(x.get("question", "")).strip() and str(x.get("answer", "")).strip()]
            if not pairs:
                out.add(i, [], "", f"llm request failed ({c.error})" if c.text is None
                        else "generator answer unparseable (no question-answer pairs)")
                continue
            for j, qa in enumerate(pairs):
                out.add(i, [{"role": "user", "content": str(qa["question"]).strip()},
                            {"role": "assistant", "content": str(qa["answer"]).strip()}], f"#qa{j}")
                self.record("qa_pairs", 1)
        return out.result()


@register
class LLMTargetedAugment(LLMOp):
    """LLM2LLM-style targeted augmentation (Lee et al., 2024): for rows a score column flags as hard
    (below ``threshold``), ask for ``n`` new tasks testing the same skill; the originals stay and
    the new prompts are added (answer them with ``llm_respond``)."""

    name = "llm_targeted_augment"
    one_to_many = True
    metrics = {**LLMOp.metrics, "new_tasks": "tasks added"}

    class Params(OpParams):
        llm: LLMConfig = Field(default_factory=lambda: LLMConfig(temperature=0.7), description="the teacher")
        score_column: str = Field(description="per-row score (e.g. the student's correctness, judge_score)")
        threshold: float = Field(description="rows scoring below this are augmented")
        n: int = Field(3, ge=1, le=16, description="new tasks per hard row")
        template: str = Field(SIMILAR, description="prompt; {instruction} and {n} are filled in")

    example = {"llm": {"model": "teacher"}, "score_column": "judge_score", "threshold": 5, "n": 3}

    def process(self, batch: pa.Table) -> MapResult:
        p = self.params
        scores = batch.column(p.score_column).to_pylist()
        user = turn_text(batch.column("messages"), ("user",)).to_pylist()
        hard = [i for i, s in enumerate(scores) if s is not None and s < p.threshold]
        out = _Out(batch, self.ctx.id_key, keep_inputs=True)
        answers = self._ask_k([p.template.format(instruction=user[i], n=p.n) for i in hard], 1)
        for i, (c,) in zip(hard, answers, strict=True):
            text = c.text
            tasks = parse_list(text, "tasks")
            if tasks is None:
                out.add(i, [{"role": "user", "content": (text or "")[:2000]}], "#augment-failed",
                        f"llm request failed ({c.error})" if text is None else "teacher answer unparseable (no task list)")
                continue
            for j, task in enumerate(str(t).strip() for t in tasks[: p.n]):
                if task:
                    out.add(i, [{"role": "user", "content": task}], f"#aug{j}")
                    self.record("new_tasks", 1)
        return out.result()
