"""Pairwise judgements (a prompt, two responses, which one is better) straight into preference pairs."""

from __future__ import annotations

import math
from collections import Counter
from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from thresher.operators.chat.formats import KEEP_COLUMNS, MESSAGES, carried_columns
from thresher.operators.common.chat import ChatFormatError, check, check_reply, msg, read_turns
from thresher.pipeline.ops import Mapper, MapResult, OpParams
from thresher.pipeline.registry import register

Label = int | str


def _norm(value) -> str | None:
    """A label as text, so 1, 1.0, "1" and " 1 " are the same label (CSV columns are text)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip().lower()


def _score(value, field: str) -> float:
    try:
        s = float(value)
    except (TypeError, ValueError):
        raise ChatFormatError(f"bad score (field {field}: {value!r} is not a number)") from None
    if math.isnan(s):
        raise ChatFormatError(f"bad score (field {field} is NaN)")
    return s


@register
class PairwiseToPairs(Mapper):
    """Pairwise judgements -> preference pairs: a prompt, two responses and which is better (a
    label, the majority of several annotators' labels, or a score per response) become a canonical
    DPO row (``messages``, ``chosen``, ``rejected``, ``chosen_score``, ``rejected_score``,
    ``margin``), ready for ``chat_export to: dpo``. The field names and label values are parameters:
    PandaLM is ``response_fields: [response1, response2]``, ``first_label: 1``, ``second_label: 2``,
    ``tie_labels: [0]`` (its test set: ``label_field: [annotator1, annotator2, annotator3]``, prompt
    ``[instruction, input]``); Auto-J is ``response_fields: ["response 1", "response 2"]``,
    ``first_label: 0``, ``second_label: 1``, ``tie_labels: [2]``. Ties are dropped (``tie``) unless
    ``keep_ties``; identical responses and annotators without a majority are dropped with their
    reason; a missing field, an unknown label or a score that is not a number sends the row to
    quarantine."""

    name = "pairwise_to_pairs"
    reads_text = False
    metrics = {"pairs": "pairs written", "ties_kept": "pairs written although judged a tie (keep_ties)"}

    class Params(OpParams):
        prompt_field: str | list[str] = Field("prompt", description="the prompt: text or a list of messages; a "
                                              "list of fields joins their non-empty texts with a newline (e.g. "
                                              "[instruction, input])")
        system_field: str | None = Field(None, description="an optional system message")
        response_fields: list[str] = Field(default_factory=lambda: ["response1", "response2"], min_length=2,
                                           max_length=2, description="the two responses (text or assistant turns)")
        label_field: str | list[str] | None = Field("label", description="which response is better; a list of "
                                                    "fields: the label most of them give (annotators)")
        first_label: Label = Field(1, description="label value: the first response is better")
        second_label: Label = Field(2, description="label value: the second response is better")
        tie_labels: list[Label] = Field(default_factory=lambda: [0], description="label values that mean a tie")
        score_fields: list[str] | None = Field(None, min_length=2, max_length=2, description="instead of a "
                                               "label: a score per response (higher is better; equal is a tie)")
        min_margin: float = Field(0.0, ge=0, description="with scores: drop pairs whose score difference is not "
                                  "above this (below_margin)")
        keep_ties: bool = Field(False, description="keep ties as pairs (first response as chosen, margin 0)")
        keep_columns: list[str] | Literal["all"] = Field("all", description=KEEP_COLUMNS + "; the fields the op "
                                                         "reads are consumed, the id column always stays")

        @model_validator(mode="after")
        def _labels_differ(self):
            labels = [_norm(self.first_label), _norm(self.second_label), *(_norm(t) for t in self.tie_labels)]
            if len(set(labels)) != len(labels):
                raise ValueError("first_label, second_label and tie_labels must all differ")
            if self.score_fields is None and self.label_field is None:
                raise ValueError("set label_field (which response is better) or score_fields (a score per response)")
            return self

    example = {"prompt_field": "prompt", "response_fields": ["response 1", "response 2"], "label_field": "label",
               "first_label": 0, "second_label": 1, "tie_labels": [2]}

    WRITES = ("messages", "chosen", "rejected", "chosen_score", "rejected_score", "margin")

    def _fields(self) -> tuple[str, ...]:
        p = self.params
        prompt = [p.prompt_field] if isinstance(p.prompt_field, str) else p.prompt_field
        labels = [] if p.score_fields else [p.label_field] if isinstance(p.label_field, str) else p.label_field or []
        return tuple(dict.fromkeys([*prompt, *([p.system_field] if p.system_field else []), *p.response_fields,
                                    *labels, *(p.score_fields or [])]))

    def _prompt(self, row: dict) -> list[dict]:
        p = self.params
        if isinstance(p.prompt_field, str):
            value = row.get(p.prompt_field)
            if value is None:
                raise ChatFormatError(f"missing field ({p.prompt_field})")
            messages = read_turns(value, p.prompt_field) if isinstance(value, list) else [msg("user", value)]
        else:
            parts = [row.get(f) for f in p.prompt_field]
            parts = [v for v in parts if v is not None and not (isinstance(v, float) and math.isnan(v)) and v != ""]
            if not parts:
                raise ChatFormatError(f"missing field ({', '.join(p.prompt_field)})")
            messages = [msg("user", "\n".join(str(v) for v in parts))]
        system = row.get(p.system_field) if p.system_field else None
        if system and messages[0]["role"] != "system":
            messages.insert(0, msg("system", system))
        return check(messages, "user")

    def _verdict(self, row: dict) -> tuple[int, float | None, float | None, float, str | None]:
        """(winner: 0 first, 1 second, -1 tie; first score, second score, margin, drop reason)."""
        p = self.params
        if p.score_fields:
            s = [_score(row.get(f), f) if row.get(f) is not None else None for f in p.score_fields]
            for f, v in zip(p.score_fields, s, strict=True):
                if v is None:
                    raise ChatFormatError(f"missing field ({f})")
            margin = abs(s[0] - s[1])
            if margin == 0:
                return -1, s[0], s[1], 0.0, None
            if margin <= p.min_margin:
                return (0 if s[0] > s[1] else 1), s[0], s[1], margin, "below_margin"
            return (0 if s[0] > s[1] else 1), s[0], s[1], margin, None
        fields = [p.label_field] if isinstance(p.label_field, str) else p.label_field
        known = {_norm(p.first_label): 0, _norm(p.second_label): 1, **{_norm(t): -1 for t in p.tie_labels}}
        votes = []
        for f in fields:
            label = _norm(row.get(f))
            if label is None:
                continue
            if label not in known:
                expected = ", ".join(repr(v) for v in (p.first_label, p.second_label, *p.tie_labels))
                raise ChatFormatError(f"unknown label (field {f}: {row.get(f)!r}; expected one of {expected})")
            votes.append(known[label])
        if not votes:
            raise ChatFormatError(f"missing field ({', '.join(fields)})")
        top = Counter(votes).most_common()
        if len(top) > 1 and top[0][1] == top[1][1]:
            return -1, None, None, 0.0, "no_majority_label"
        winner = top[0][0]
        return winner, None, None, 0.0 if winner < 0 else 1.0, None

    def process(self, batch: pa.Table) -> MapResult:
        p = self.params
        cols: dict[str, list] = {k: [] for k in self.WRITES}
        marks: list[str | None] = []
        drops: list[str | None] = []
        for row in batch.to_pylist():
            out, mark, drop = None, None, None
            try:
                messages = self._prompt(row)
                replies = []
                for f in p.response_fields:
                    if row.get(f) is None:
                        raise ChatFormatError(f"missing field ({f})")
                    value = row[f]  # text as it is (no leading space to strip here), or assistant turns
                    replies.append(check_reply(read_turns(value, f) if isinstance(value, list)
                                               else [msg("assistant", str(value))]))
                winner, s1, s2, margin, drop = self._verdict(row)
                if drop is None and winner < 0 and not p.keep_ties:
                    drop = "tie"
                if drop is None and [m["content"].strip() for m in replies[0]] == [m["content"].strip() for m in replies[1]]:
                    drop = "identical_responses"
                c, r = (1, 0) if winner == 1 else (0, 1)
                scores = (s1, s2)
                out = {"messages": messages, "chosen": replies[c], "rejected": replies[r], "chosen_score": scores[c],
                       "rejected_score": scores[r], "margin": margin}
                if drop is None and winner < 0:
                    self.record("ties_kept", 1)
            except ChatFormatError as e:
                mark = str(e)
            marks.append(mark)
            drops.append(drop if mark is None else None)
            for k in self.WRITES:
                cols[k].append(out.get(k) if out else None)
        self.record("pairs", sum(1 for m, d in zip(marks, drops, strict=True) if m is None and d is None))
        keep = carried_columns(self, batch, p.keep_columns, skip=(*self._fields(), *self.WRITES),
                               always=(self.ctx.id_key,))
        table = batch.select([c for c in keep if c not in self.WRITES])
        types = {"messages": MESSAGES, "chosen": MESSAGES, "rejected": MESSAGES, "chosen_score": pa.float64(),
                 "rejected_score": pa.float64(), "margin": pa.float64()}
        for k in self.WRITES:
            table = table.append_column(k, pa.array(cols[k], types[k]))
        reasons = sorted({d for d in drops if d})
        return MapResult(table, drop={r: np.array([d == r for d in drops]) for r in reasons} or None, quarantine=marks)
