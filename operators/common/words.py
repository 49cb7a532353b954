"""Per-document word statistics over the tokens of ``operators.common.tokenize``.

``Tokens(text)`` tokenizes a whole column once; its methods turn per-token facts into
per-document sums by prefix sums over the flat token arrays (no Python loop per document).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from thresher.operators.common.tokenize import FLAG_LETTER, FLAG_SYMBOL, fnv1a, tokenize


class Tokens:
    """The tokens of every document of a batch, flat, with per-document offsets."""

    def __init__(self, text: pa.Array | pa.ChunkedArray):
        self.hashes, self.lens, self.flags, counts = tokenize(text)
        self.n_docs = len(counts)
        self.offsets = np.zeros(self.n_docs + 1, dtype=np.int64)
        np.cumsum(counts, out=self.offsets[1:])

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def per_doc(self, values) -> np.ndarray:
        """Sum a per-token value (bool or number) within each document."""
        v = np.asarray(values)
        cs = np.zeros(len(v) + 1, dtype=np.float64 if v.dtype.kind == "f" else np.int64)
        np.cumsum(v, out=cs[1:])
        return cs[self.offsets[1:]] - cs[self.offsets[:-1]]

    def is_in(self, words) -> np.ndarray:
        """Tokens equal to one of ``words`` (exact, case-sensitive)."""
        return np.isin(self.hashes, np.array([fnv1a(w) for w in words], dtype=np.uint64))

    def is_symbol(self) -> np.ndarray:
        """Tokens made of punctuation and symbols only (``...``, ``,``, ``—``): not words."""
        return (self.flags & FLAG_SYMBOL) != 0

    def distinct_per_doc(self, words) -> np.ndarray:
        """How many different ones of ``words`` occur in each document."""
        table = np.array(sorted({fnv1a(w) for w in words}), dtype=np.uint64)
        if len(table) == 0 or len(self.hashes) == 0:
            return np.zeros(self.n_docs, dtype=np.int64)
        pos = np.clip(np.searchsorted(table, self.hashes), 0, len(table) - 1)
        hit = table[pos] == self.hashes
        doc = np.repeat(np.arange(self.n_docs, dtype=np.int64), self.counts)[hit]
        pairs = np.unique(doc * len(table) + pos[hit])
        return np.bincount(pairs // len(table), minlength=self.n_docs)

    def has_letter(self) -> np.ndarray:
        return (self.flags & FLAG_LETTER) != 0


def ratio(num, den) -> np.ndarray:
    """num / den elementwise, 0 where den is 0."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den > 0)
    return out
