"""Diversity selection: k-center greedy over MinHash signatures (Sener & Savarese, "Active Learning
for Convolutional Neural Networks: A Core-Set Approach", ICLR 2018, used for instruction data by
e.g. Chen et al., "Alpagasus"/"MoDS"-style selectors): repeatedly keep the row farthest (in
estimated Jaccard distance of word n-grams) from everything kept so far."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
from numba import njit
from pydantic import Field

from thresher.operators.common.minhash import permutations, signatures
from thresher.operators.select.topk import SizeParams
from thresher.pipeline.columns import ROW, SHARD, drop_decisions, no_decisions
from thresher.pipeline.ops import GlobalOp, Resources
from thresher.pipeline.registry import register


@njit(cache=True)
def k_center(sig, k, first):
    """Indices of k rows chosen greedily: each the farthest from those already chosen.
    Distance = share of differing signature values (1 - estimated Jaccard). O(n k num_perm)."""
    n, m = sig.shape
    dist = np.full(n, 2.0)
    chosen = np.empty(k, dtype=np.int64)
    c = first
    for t in range(k):
        chosen[t] = c
        dist[c] = -1.0
        best, best_d = -1, -1.0
        for i in range(n):
            if dist[i] < 0:
                continue
            same = 0
            for j in range(m):
                if sig[i, j] == sig[c, j]:
                    same += 1
            d = 1.0 - same / m
            if d < dist[i]:
                dist[i] = d
            if dist[i] > best_d:  # ties: the earliest row
                best, best_d = i, dist[i]
        if best < 0:
            return chosen[: t + 1]
        c = best
    return chosen


@register
class SelectDiverse(GlobalOp):
    """Keep k (or a fraction of) rows that cover the corpus: k-center greedy over MinHash
    signatures of a text column, starting from the row with the highest ``score_column`` (or the
    first row). Deterministic; O(rows x k x num_perm), meant for SFT-sized sets."""

    name = "diverse_select"
    aliases = ("select_diverse",)
    reads_text = True
    resources = Resources(cpus=1.0, memory_mb=1024)

    class Params(SizeParams):
        field: str | None = Field(None, description="text column (default: the recipe's text column; for chat rows "
                                  "write one with chat_text)")
        k: int | None = Field(None, ge=1, description="rows to keep")
        fraction: float | None = Field(None, gt=0, le=1, description="share of rows to keep")
        ngram: int = Field(3, ge=1, description="word n-grams")
        num_perm: int = Field(64, ge=8, le=512, description="hash functions per signature")
        score_column: str | None = Field(None, description="start from the row with the highest value here")

    example = {"field": "prompt_text", "fraction": 0.2}

    def __init__(self, params=None, ctx=None):
        super().__init__(params, ctx)
        self._a, self._b = permutations(self.params.num_perm, self.ctx.seed)

    def fingerprint(self, batch: pa.Table) -> pa.Table:
        p = self.params
        sig = signatures(batch[p.field or self.text_key], p.ngram, self._a, self._b, "word")
        cols = {"sig": pa.FixedSizeListArray.from_arrays(pa.array(sig.ravel()), p.num_perm)}
        if p.score_column:
            cols["score"] = batch.column(p.score_column).cast(pa.float64())
        return pa.table(cols)

    def resolve(self, fingerprints: pl.LazyFrame) -> pl.DataFrame:
        p = self.params
        df = fingerprints.sort([SHARD, ROW]).collect()
        n = df.height
        if n == 0:
            return no_decisions()
        k = p.k if p.k is not None else max(1, round(n * p.fraction))
        sig = np.ascontiguousarray(df["sig"].to_numpy(), dtype=np.uint32)
        first = 0
        if p.score_column:
            first = int(df["score"].fill_null(float("-inf")).fill_nan(float("-inf")).arg_max() or 0)
        keep = np.zeros(n, dtype=bool)
        keep[k_center(sig, min(k, n), first)] = True
        return drop_decisions(df.filter(pl.Series(~keep)), "not_most_diverse")
