"""Preference pairs from prompts with two or more ranked or scored candidates (DPO data)."""

from __future__ import annotations

import itertools
from typing import Literal

import numpy as np
import pyarrow as pa
import xxhash
from pydantic import Field

from thresher.operators.chat.formats import KEEP_COLUMNS, MESSAGES, carried_columns
from thresher.pipeline.ops import Mapper, MapResult, OpParams
from thresher.pipeline.registry import register


@register
class PreferencePairs(Mapper):
    """Build chosen/rejected pairs from ``candidates`` (rank: lower is better, or score: higher is
    better): best vs worst, every pair above a margin, or best vs a seeded random other; ties and
    identical replies never pair; optional cap on the chosen/rejected length ratio (a guard
    against length bias, after Dubois et al., "Length-Controlled AlpacaEval", 2024); at most N
    pairs per prompt. Prompts that yield no pair are dropped with the reason. ``chosen_score`` /
    ``rejected_score`` hold the candidates' scores (or ranks, when ranked); ``margin`` is how much
    better chosen is (score difference, or rank difference). The row's other columns are copied
    to each of its pairs (``keep_columns``)."""

    name = "preference_pairs"
    reads_text = False
    one_to_many = True
    metrics = {"pairs": "pairs written", "pairs_identical": "candidate pairs skipped: same text",
               "pairs_length_ratio": "candidate pairs skipped: length ratio over the cap",
               "pairs_below_margin": "candidate pairs skipped: margin too small (ties included)"}

    class Params(OpParams):
        strategy: Literal["best_vs_worst", "all_pairs", "best_vs_random"] = Field(
            "best_vs_worst", description="which candidates pair up")
        by: Literal["auto", "rank", "score"] = Field("auto", description="order candidates by rank or score (auto: "
                                                     "score when every candidate has one, else rank)")
        min_margin: float = Field(0.0, ge=0, description="chosen must beat rejected by more than this (ties never pair)")
        max_pairs: int = Field(8, ge=1, description="at most this many pairs per prompt (best margins first)")
        max_length_ratio: float | None = Field(None, gt=1, description="skip pairs whose longer reply is more than "
                                               "this many times the shorter (characters)")
        candidates_key: str = Field("candidates", description="column of {content, rank, score} lists")
        keep_columns: list[str] | Literal["all"] = Field("all", description=KEEP_COLUMNS + ", copied to each "
                                                         "pair of the row (the candidates column is consumed)")

    example = {"strategy": "all_pairs", "min_margin": 0, "max_pairs": 4}

    WRITES = ("id", "messages", "chosen", "rejected", "chosen_score", "rejected_score", "margin")

    def process(self, batch: pa.Table) -> MapResult:
        p = self.params
        ids = batch.column(self.ctx.id_key).to_pylist() if self.ctx.id_key in batch.column_names else [None] * batch.num_rows
        messages = batch.column("messages").to_pylist()
        cands = batch.column(p.candidates_key).to_pylist()
        rows: dict[str, list] = {k: [] for k in ("id", "messages", "chosen", "rejected", "chosen_score",
                                                 "rejected_score", "margin")}
        drop: list[str | None] = []
        source: list[int] = []  # the input row of each output row
        for i, (rid, msgs, cs) in enumerate(zip(ids, messages, cands, strict=True)):
            pairs, why = self._pairs(rid, cs or [])
            if not pairs:  # one placeholder row, dropped with the reason (keeps the ledger balanced)
                pairs, reason = [(None, None, None)], why
            else:
                reason = None
            for j, (c, r, margin) in enumerate(pairs):
                rows["id"].append(f"{rid}#pair{j}" if rid is not None else None)
                rows["messages"].append(msgs)
                rows["chosen"].append([{"role": "assistant", "content": c[0]}] if c else None)
                rows["rejected"].append([{"role": "assistant", "content": r[0]}] if r else None)
                rows["chosen_score"].append(c[2] if c else None)
                rows["rejected_score"].append(r[2] if r else None)
                rows["margin"].append(margin)
                drop.append(reason)
                source.append(i)
        self.record("pairs", sum(1 for d in drop if d is None))
        table = pa.table({"id": pa.array(rows["id"], pa.string()), "messages": pa.array(rows["messages"], MESSAGES),
                          "chosen": pa.array(rows["chosen"], MESSAGES), "rejected": pa.array(rows["rejected"], MESSAGES),
                          "chosen_score": pa.array(rows["chosen_score"], pa.float64()),
                          "rejected_score": pa.array(rows["rejected_score"], pa.float64()),
                          "margin": pa.array(rows["margin"], pa.float64())})
        carry = [c for c in carried_columns(self, batch, p.keep_columns, skip=(p.candidates_key, *self.WRITES))
                 if c not in self.WRITES]
        if carry:
            extra = batch.select(carry).take(pa.array(source, pa.int64()))
            for name in carry:
                table = table.append_column(name, extra.column(name))
        reasons = sorted({d for d in drop if d})
        return MapResult(table, drop={r: np.array([d == r for d in drop]) for r in reasons})

    def _pairs(self, rid, cands: list[dict]) -> tuple[list, str]:
        """[(chosen (text, score), rejected (text, score), margin)], best margins first; or the reason there are none."""
        p = self.params
        scored = [c for c in cands if c and isinstance(c.get("content"), str) and c["content"].strip()]
        if len(scored) < 2:
            return [], "too_few_candidates"
        use_score = p.by == "score" or (p.by == "auto" and all(c.get("score") is not None for c in scored))
        if use_score:  # (text, goodness, the value written out)
            items = [(c["content"], float(c["score"]), float(c["score"])) for c in scored if c.get("score") is not None]
        else:
            items = [(c["content"], -float(c["rank"]), float(c["rank"])) for c in scored if c.get("rank") is not None]
        items.sort(key=lambda x: -x[1])  # stable: input order breaks ties
        if len(items) < 2:
            return [], "too_few_scored_candidates" if use_score else "too_few_ranked_candidates"
        if p.strategy == "best_vs_worst":
            options = [(items[0], items[-1])]
        elif p.strategy == "all_pairs":
            options = list(itertools.combinations(items, 2))
        else:  # best vs a random other, seeded by the row id
            h = xxhash.xxh64_intdigest(f"{self.ctx.seed}:{rid}".encode())
            options = [(items[0], items[1 + h % (len(items) - 1)])]
        out = []
        for c, r in options:
            margin = c[1] - r[1]
            if c[0].strip() == r[0].strip():
                self.record("pairs_identical", 1)
            elif margin <= p.min_margin:
                self.record("pairs_below_margin", 1)
            elif p.max_length_ratio and max(len(c[0]), len(r[0])) > p.max_length_ratio * max(1, min(len(c[0]), len(r[0]))):
                self.record("pairs_length_ratio", 1)
            else:
                out.append((c, r, margin))
        out.sort(key=lambda x: -x[2])
        return out[: p.max_pairs], "no_valid_pair"  # none passes the margin, identity and length checks
