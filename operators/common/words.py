"""Per-document word statistics over the tokens of ``operators.common.tokenize``.

``Tokens(text)`` tokenizes a whole column once; its methods turn per-token facts into
per-document sums by prefix sums over the flat token arrays (no Python loop per document).

Tokenizing is most of what the Gopher rules cost, and ``gopher_repetition_filter`` and
``gopher_quality_filter`` read the same documents one after the other (the second gets the rows
the first kept). So the last column tokenized is remembered, and a column whose documents are,
in order, byte-identical to some of its documents (a filtered copy) takes their tokens instead of
tokenizing again (a document's tokens depend on its bytes alone). Whether it does is invisible:
the tokens are the same either way (tests/operators/test_rules_reference.py checks both ways).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from numba import njit

from thresher.operators.common.segments import same_bytes
from thresher.operators.common.tokenize import (
    FLAG_LETTER,
    FLAG_SYMBOL,
    fnv1a,
    string_buffers,
    tokenize_buffers,
)

_LAST: tuple | None = None  # (bytes, offsets, hashes, lens, flags, counts) of the last column tokenized


@njit(cache=True)
def _match_docs(old_data, old_off, data, off, idx):
    """Map each document to the first not-yet-used document of the old column with the same bytes,
    in order (a filtered column is a subsequence of its source). False if one has none."""
    n_old = len(old_off) - 1
    i = 0
    for j in range(len(off) - 1):
        a, b = off[j], off[j + 1]
        found = False
        while i < n_old:
            oa, ob = old_off[i], old_off[i + 1]
            i += 1
            if ob - oa == b - a and same_bytes(data, a, b, oa, old_data):
                idx[j] = i - 1
                found = True
                break
        if not found:
            return False
    return True


@njit(cache=True)
def _gather_tokens(idx, tok_off, hashes, lens, flags, out_h, out_l, out_f, counts):
    t = 0
    for j in range(len(idx)):
        a, b = tok_off[idx[j]], tok_off[idx[j] + 1]
        for k in range(a, b):
            out_h[t] = hashes[k]
            out_l[t] = lens[k]
            out_f[t] = flags[k]
            t += 1
        counts[j] = b - a


def forget_shared_tokens() -> None:
    """Let go of the remembered tokens (the next column is tokenized whatever it is): for tools
    that must see each op call the tokenizer, such as ``precompile.discover``."""
    global _LAST
    _LAST = None


def tokenize_shared(text: pa.Array | pa.ChunkedArray):
    """``tokenize.tokenize``, reusing the last column's tokens when ``text`` is a filtered copy of
    it (see the module). The remembered tokens are let go once reused."""
    global _LAST
    data, offsets = string_buffers(text)
    last = _LAST
    if last is not None:
        idx = np.empty(len(offsets) - 1, dtype=np.int64)
        if _match_docs(last[0], last[1], data, offsets, idx):
            _LAST = None
            _, _, hashes, lens, flags, counts = last
            tok_off = np.zeros(len(counts) + 1, dtype=np.int64)
            np.cumsum(counts, out=tok_off[1:])
            n = int((tok_off[idx + 1] - tok_off[idx]).sum())
            out = (np.empty(n, hashes.dtype), np.empty(n, lens.dtype), np.empty(n, flags.dtype),
                   np.empty(len(idx), np.int64))
            _gather_tokens(idx, tok_off, hashes, lens, flags, *out)
            return out
    out = tokenize_buffers(data, offsets)
    _LAST = (data, offsets, *out)
    return out


class Tokens:
    """The tokens of every document of a batch, flat, with per-document offsets."""

    def __init__(self, text: pa.Array | pa.ChunkedArray):
        self.hashes, self.lens, self.flags, counts = tokenize_shared(text)
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

    def word_stats(self, words) -> np.ndarray:
        """Per document, in one pass: (words, i.e. tokens not made of punctuation only; their
        characters; tokens with a letter; different ones of ``words`` present) as 4 columns —
        ``counts - per_doc(is_symbol())``, ``per_doc(lens of words)``, ``per_doc(has_letter())``,
        ``distinct_per_doc(words)``."""
        table = np.array(sorted({fnv1a(w) for w in words}), dtype=np.uint64)
        out = np.zeros((self.n_docs, 4), dtype=np.int64)
        _word_stats(self.hashes, self.lens, self.flags, self.offsets, table, out)
        return out


@njit(cache=True)
def _word_stats(hashes, lens, flags, offsets, table, out):
    seen = np.zeros(len(table), dtype=np.int64)
    for d in range(len(offsets) - 1):
        words = 0
        chars = 0
        letters = 0
        distinct = 0
        for t in range(offsets[d], offsets[d + 1]):
            f = flags[t]
            if (f & FLAG_SYMBOL) == 0:
                words += 1
                chars += lens[t]
            if (f & FLAG_LETTER) != 0:
                letters += 1
            if len(table) > 0:
                p = np.searchsorted(table, hashes[t])
                if p < len(table) and table[p] == hashes[t] and seen[p] != d + 1:
                    seen[p] = d + 1
                    distinct += 1
        out[d, 0] = words
        out[d, 1] = chars
        out[d, 2] = letters
        out[d, 3] = distinct


def ratio(num, den) -> np.ndarray:
    """num / den elementwise, 0 where den is 0."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den > 0)
    return out
