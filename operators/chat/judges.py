"""Judges: an LLM scores answers on a rubric (pointwise), or compares two answers in both orders
(pairwise, position bias cancelled, ties allowed), optionally K times with only confident verdicts
kept (after CLEAR); parsing survives chatty answers. ``heuristic_score`` scores without an LLM.
``llm_quality_score`` scores plain documents on FineWeb-Edu's educational-value rubric, the labels
``thresher train-quality --labels`` distils into a CPU classifier."""

from __future__ import annotations

import json
import re
import statistics
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from thresher.operators.chat.formats import CANDIDATES
from thresher.operators.chat.llmop import LLMOp, request_error
from thresher.operators.common.chat import turn_text
from thresher.pipeline.columns import set_column
from thresher.pipeline.llm import LLMConfig
from thresher.pipeline.ops import Mapper, MapResult, OpParams
from thresher.pipeline.registry import register

RUBRIC = ("Rate how well the answer serves the user: correct, complete, clear, honest, and no longer than needed. "
          "1 = useless or harmful, {max} = excellent.")
POINTWISE = ("{rubric}\n\n[Question]\n{question}\n\n[Answer]\n{answer}\n\n"
             'Reply with a JSON object {{"reason": "<one sentence>", "score": <1-{max}>}}.')
PAIRWISE = ("Which answer serves the user better? Judge correctness, completeness, clarity and honesty; "
            "ignore length and order.\n\n[Question]\n{question}\n\n[Answer A]\n{a}\n\n[Answer B]\n{b}\n\n"
            'Reply with a JSON object {{"reason": "<one sentence>", "winner": "A" | "B" | "tie"}}.')

# FineWeb-Edu's additive 5-point educational-value prompt (Penedo et al. 2024, "The FineWeb Datasets:
# Decanting the Web for the Finest Text Data at Scale", appendix; after Yuan et al. 2024's additive
# self-rewarding prompt): a point per criterion met, so scores are comparable across documents.
EDU_RUBRIC = """Below is an extract from a web page. Evaluate whether the page has a high educational value and \
could be useful in an educational setting for teaching from primary school to grade school levels using the \
additive 5-point scoring system described below. Points are accumulated based on the satisfaction of each criterion:

- Add 1 point if the extract provides some basic information relevant to educational topics, even if it includes \
some irrelevant or non-academic content like advertisements and promotional material.
- Add another point if the extract addresses certain elements pertinent to education but does not align closely \
with educational standards. It might mix educational content with non-educational material, offering a superficial \
overview of potentially useful topics, or presenting information in a disorganized manner and incoherent writing style.
- Award a third point if the extract is appropriate for educational use and introduces key concepts relevant to \
school curricula. It is coherent though it may not be comprehensive, or could include some extraneous information.
- Grant a fourth point if the extract is highly relevant and beneficial for educational purposes for a level not \
higher than grade school, exhibiting a clear and consistent writing style. It is similar to a chapter from a \
textbook or a tutorial, offering substantial educational content with minimal extraneous information.
- Bestow a fifth point if the extract is outstanding in its educational value, perfectly suited for teaching either \
at primary school or grade school. It follows detailed reasoning, the writing style is easy to follow and offers \
profound and thorough insights into the subject matter, devoid of any non-educational or complex content.

The extract:
{text}

After examining the extract:
- Briefly justify your total score, up to 100 words.
- Conclude with the score using the format: "Educational score: <total points>\""""

_NUM = r"(\d+(?:\.\d+)?)"


def parse_score(text: str, scale_max: int) -> float | None:
    """A score from a judge's answer: a JSON ``score``, 'Score: 7', '7/10' (rescaled), or the last
    number in range; None if there is none."""
    if not text:
        return None
    m = re.search(r"\{.*\}", text, re.S)
    if m:
        try:
            v = json.loads(m.group(0)).get("score")
            if isinstance(v, int | float) and 0 <= v <= scale_max:
                return float(v)
        except (ValueError, AttributeError):
            pass
    m = re.search(rf"(?i)\b(?:score|rating)\b\W{{0,3}}{_NUM}(?:\s*/\s*{_NUM})?", text)
    if not m:
        m = re.search(rf"{_NUM}\s*/\s*{_NUM}", text)
    if m:
        v, of = float(m.group(1)), m.group(2)
        if of and float(of) > 0:
            v = v / float(of) * scale_max
        return v if 0 <= v <= scale_max else None
    nums = [float(x) for x in re.findall(_NUM, text) if 0 <= float(x) <= scale_max]
    return nums[-1] if nums else None


def parse_edu_score(text: str, scale_max: int = 5) -> float | None:
    """The score of a FineWeb-Edu-style answer: its last 'Educational score: N' (the format the rubric
    asks for), else what ``parse_score`` finds; None if there is none."""
    found = re.findall(rf"(?i)educational\s+score\W{{0,3}}{_NUM}", text or "")
    if found and 0 <= float(found[-1]) <= scale_max:
        return float(found[-1])
    return parse_score(text, scale_max)


def parse_winner(text: str) -> str | None:
    """'A', 'B' or 'tie' from a judge's answer (JSON, [[A]], 'Answer A is better', 'tie')."""
    if not text:
        return None
    m = re.search(r"\{.*\}", text, re.S)
    if m:
        try:
            v = str(json.loads(m.group(0)).get("winner", "")).strip().lower()
            if v in ("a", "b", "tie"):
                return v.upper() if v != "tie" else "tie"
        except (ValueError, AttributeError):
            pass
    m = re.search(r"\[\[(A|B|C|tie)\]\]", text, re.I)
    if m:
        v = m.group(1).upper()
        return "tie" if v in ("C", "TIE") else v
    if re.search(r"(?i)\b(tie|equally good|both are equally)\b", text):
        return "tie"
    wins = re.findall(r"(?i)\b(?:answer|response|assistant)\s+(A|B)\b\s+(?:is|was)\s+(?:better|superior|preferred)", text)
    return wins[-1].upper() if wins else None


@register
class LLMJudge(LLMOp):
    """Score each row's last answer on a rubric (1..scale_max), K times if asked; the mean goes to
    ``judge_score`` and the agreement to ``judge_confidence`` (1 - spread / scale). Rows whose
    judgements cannot be parsed, or whose requests all failed, go to quarantine (with the parse
    failure or the request error); with ``min_confidence``, unconfident rows are dropped (CLEAR-style:
    keep only confident judgements). With ``target: candidates``, every candidate gets a score
    instead (for ``preference_pairs``); a row none of whose candidates could be judged because the
    requests failed goes to quarantine with the error."""

    name = "llm_judge"

    class Params(OpParams):
        llm: LLMConfig = Field(default_factory=LLMConfig, description="the judge model's server")
        target: Literal["response", "candidates"] = Field("response", description="the last assistant turn, or every candidate")
        rubric: str = Field(RUBRIC, description="what a good answer is; {max} is the top of the scale")
        scale_max: int = Field(10, ge=2, le=100, description="top of the score scale")
        samples: int = Field(1, ge=1, le=16, description="judgements per answer (use temperature > 0 for K > 1)")
        min_confidence: float = Field(0.0, ge=0, le=1, description="drop answers judged less consistently")

    example = {"llm": {"model": "judge"}, "samples": 3, "min_confidence": 0.8}

    def process(self, batch: pa.Table) -> MapResult:
        p = self.params
        question = turn_text(batch.column("messages"), ("user",)).to_pylist()
        rubric = p.rubric.format(max=p.scale_max)
        if p.target == "candidates":
            return self._candidates(batch, question, rubric)
        answers = turn_text(batch.column("messages"), ("assistant",)).to_pylist()
        last = [m[-1]["content"] if m and m[-1]["role"] == "assistant" else a
                for m, a in zip(batch.column("messages").to_pylist(), answers, strict=True)]
        prompts = [POINTWISE.format(rubric=rubric, question=q, answer=a, max=p.scale_max) for q, a in zip(question, last, strict=True)]
        scores, conf, marks = [], [], []
        for asked in self._ask_k(prompts, p.samples):
            texts = [c.text for c in asked]
            vals = [v for v in (parse_score(t, p.scale_max) for t in texts) if v is not None]
            if not vals:
                scores.append(None)
                conf.append(None)
                answered = [t for t in texts if t is not None]
                marks.append("judge answer unparseable (no score in: " + (answered[0] or "no answer")[:80] + ")"
                             if answered else f"llm request failed ({request_error(asked)})")
                continue
            scores.append(statistics.fmean(vals))
            spread = (max(vals) - min(vals)) / p.scale_max if len(vals) > 1 else 0.0
            conf.append(1.0 - spread if len(vals) == p.samples else (1.0 - spread) * len(vals) / p.samples)
            marks.append(None)
        out = set_column(batch, "judge_score", pa.array(scores, pa.float64()))
        out = set_column(out, "judge_confidence", pa.array(conf, pa.float64()))
        low = np.array([c is not None and c < p.min_confidence for c in conf])
        return MapResult(out, drop={"judge_not_confident": low} if p.min_confidence else None, quarantine=marks)

    def _candidates(self, batch: pa.Table, question: list[str], rubric: str) -> MapResult:
        p = self.params
        cands = batch.column("candidates").to_pylist()
        flat = [(i, j) for i, cs in enumerate(cands) for j in range(len(cs or []))]
        prompts = [POINTWISE.format(rubric=rubric, question=question[i], answer=cands[i][j]["content"], max=p.scale_max)
                   for i, j in flat]
        asked_by_row: list[list] = [[] for _ in cands]
        for (i, j), asked in zip(flat, self._ask_k(prompts, p.samples), strict=True):
            vals = [v for v in (parse_score(c.text, p.scale_max) for c in asked) if v is not None]
            cands[i][j] = dict(cands[i][j], score=statistics.fmean(vals) if vals else None)
            asked_by_row[i] += asked
        # a row is quarantined only when every request for it failed: then no score exists to pair on
        marks = [f"llm request failed ({request_error(a)})" if a and all(c.text is None for c in a) else None
                 for a in asked_by_row]
        return MapResult(set_column(batch, "candidates", pa.array(cands, CANDIDATES)), quarantine=marks)


@register
class LLMQualityScore(LLMOp):
    """Score plain documents with an LLM on a rubric — by default FineWeb-Edu's additive 0-5
    educational-value prompt (Penedo et al. 2024) — K times if asked, the mean to ``score_key``.
    These are the labels a FineWeb-Edu-style classifier is distilled from: run this on a sample,
    then ``thresher train-quality --model-type embedding-logreg --labels <output> --label-column
    edu_score`` (positive at >= 3, as FineWeb-Edu) and filter the corpus on CPU with
    ``quality_classifier``. Documents are cut to ``max_chars`` (cost); rows whose answers have no
    score, or whose requests failed, go to quarantine; ``min_score`` drops low-scoring rows."""

    name = "llm_quality_score"
    reads_text = True

    class Params(OpParams):
        llm: LLMConfig = Field(default_factory=LLMConfig, description="the scoring model's server")
        rubric: str = Field(EDU_RUBRIC, description="the prompt; {text} is the document, {max} the top of the scale")
        scale_max: int = Field(5, ge=1, le=100, description="top of the score scale")
        score_key: str = Field("edu_score", description="column for the score")
        max_chars: int = Field(4000, ge=100, description="send only the first N characters of a document")
        samples: int = Field(1, ge=1, le=16, description="scorings per document (use temperature > 0 for K > 1)")
        min_score: float | None = Field(None, ge=0, description="drop documents scoring below this (null: keep all)")

    example = {"llm": {"model": "judge"}, "min_score": 3}

    def process(self, batch: pa.Table) -> MapResult:
        p = self.params
        docs = pc.fill_null(pc.utf8_slice_codeunits(batch[self.text_key], 0, p.max_chars), "").to_pylist()
        prompts = [p.rubric.replace("{max}", str(p.scale_max)).replace("{text}", d) for d in docs]
        scores, marks = [], []
        for asked in self._ask_k(prompts, p.samples):
            vals = [v for v in (parse_edu_score(c.text, p.scale_max) for c in asked) if v is not None]
            scores.append(statistics.fmean(vals) if vals else None)
            answered = [c.text for c in asked if c.text is not None]
            marks.append(None if vals else "judge answer unparseable (no score in: " + answered[0][:80] + ")"
                         if answered else f"llm request failed ({request_error(asked)})")
        out = set_column(batch, p.score_key, pa.array(scores, pa.float64()))
        if p.min_score is None:
            return MapResult(out, quarantine=marks)
        low = np.array([s is not None and s < p.min_score for s in scores])
        return MapResult(out, drop={"llm_quality_too_low": low}, quarantine=marks)


@register
class LLMPairwiseJudge(LLMOp):
    """Compare ``chosen`` with ``rejected`` in both orders (A/B, then B/A) to cancel position bias:
    agreeing verdicts stand, disagreeing ones are a tie. ``pair_verdict`` is chosen / rejected /
    tie; with ``relabel``, pairs the judge prefers the other way are swapped; ties are dropped
    unless ``keep_ties``."""

    name = "llm_pairwise_judge"

    class Params(OpParams):
        llm: LLMConfig = Field(default_factory=LLMConfig, description="the judge model's server")
        relabel: bool = Field(True, description="swap chosen and rejected when the judge prefers rejected")
        keep_ties: bool = Field(False, description="keep pairs judged a tie (or judged inconsistently)")

    example = {"llm": {"model": "judge"}, "relabel": True}

    def process(self, batch: pa.Table) -> MapResult:
        p = self.params
        q = turn_text(batch.column("messages"), ("user",)).to_pylist()
        a = turn_text(batch.column("chosen"), ("assistant",)).to_pylist()
        b = turn_text(batch.column("rejected"), ("assistant",)).to_pylist()
        prompts = [PAIRWISE.format(question=qi, a=ai, b=bi) for qi, ai, bi in zip(q, a, b, strict=True)]
        prompts += [PAIRWISE.format(question=qi, a=bi, b=ai) for qi, ai, bi in zip(q, a, b, strict=True)]
        asked = [t[0] for t in self._ask_k(prompts, 1)]
        n = batch.num_rows
        verdicts, marks = [], []
        for c1, c2 in zip(asked[:n], asked[n:], strict=True):
            first, second = c1.text, c2.text
            w1, w2 = parse_winner(first), parse_winner(second)
            if w1 is None or w2 is None:
                verdicts.append(None)
                failed = request_error([c1, c2])
                marks.append(f"llm request failed ({failed})" if failed else "judge answer unparseable (no winner in: "
                             + ((first if w1 is None else second) or "no answer")[:80] + ")")
                continue
            marks.append(None)
            one = {"A": "chosen", "B": "rejected", "tie": "tie"}[w1]
            two = {"A": "rejected", "B": "chosen", "tie": "tie"}[w2]  # the second asked with the answers swapped
            verdicts.append(one if one == two else "tie")
        out = set_column(batch, "pair_verdict", pa.array(verdicts, pa.string()))
        if p.relabel:
            swap = pa.array([v == "rejected" for v in verdicts])
            chosen, rejected = out.column("chosen"), out.column("rejected")
            out = set_column(out, "chosen", pc.if_else(swap, rejected, chosen))
            out = set_column(out, "rejected", pc.if_else(swap, chosen, rejected))
        drop = {} if p.keep_ties else {"judged_tie": np.array([v == "tie" for v in verdicts])}
        return MapResult(out, drop=drop or None, quarantine=marks)


@register
class HeuristicScore(Mapper):
    """A score without an LLM, for when none is configured: rewards answers of reasonable length
    with some structure, penalises refusals and answers that repeat the question. Written to
    ``judge_score`` (0..10), or to every candidate with ``target: candidates``."""

    name = "heuristic_score"
    reads_text = False

    class Params(OpParams):
        target: Literal["response", "candidates"] = Field("response", description="score the last answer, or every candidate")
        ideal_words: int = Field(150, ge=1, description="answer length that scores best")

    example = {"target": "candidates"}

    def score(self, answers: list[str], questions: list[str]) -> list[float]:
        from thresher.operators.chat.filters import REFUSALS

        out = []
        for a, q in zip(answers, questions, strict=True):
            words = len(a.split())
            length = max(0.0, 1.0 - abs(np.log((words + 1) / (self.params.ideal_words + 1))) / 3)
            structure = min(1.0, (a.count("\n") + a.count(". ")) / 5)
            low = a.lower()
            refusal = any(r in low for r in REFUSALS)
            echo = q.strip() and q.strip().lower() in low
            out.append(round(10 * max(0.0, 0.6 * length + 0.4 * structure - 0.8 * refusal - 0.3 * bool(echo)), 3))
        return out

    def process(self, batch: pa.Table) -> pa.Table:
        q = turn_text(batch.column("messages"), ("user",)).to_pylist()
        if self.params.target == "candidates":
            cands = batch.column("candidates").to_pylist()
            for i, cs in enumerate(cands):
                if cs:
                    scores = self.score([c["content"] for c in cs], [q[i]] * len(cs))
                    cands[i] = [dict(c, score=s) for c, s in zip(cs, scores, strict=True)]
            return set_column(batch, "candidates", pa.array(cands, CANDIDATES))
        msgs = batch.column("messages").to_pylist()
        last = [m[-1]["content"] if m and m[-1]["role"] == "assistant" else "" for m in msgs]
        return set_column(batch, "judge_score", pa.array(self.score(last, q), pa.float64()))
