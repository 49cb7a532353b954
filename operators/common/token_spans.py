"""Where the tokens of ``operators.common.tokenize`` lie in the text, in lower case: their byte spans,
their hashes, and the text re-joined as "tok tok tok" (what word-level language models read).

The tokenizer gives each token's length in code points and keeps every character that is not
whitespace, so the tokens are found again by walking the text and skipping whitespace between
them. Lower-casing (Arrow's ``utf8_lower``) maps each code point to one code point, so the tokens of
the original text (whose case the tokenizer's rules look at, as spaCy's do) line up with the
lower-cased text: this is ``token.lower()`` for every token at once, compiled, with no Python string
per token.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

from thresher.operators.common.tokenize import (
    _ASCII,
    FNV_OFFSET,
    FNV_PRIME,
    SPACE,
    _cls_multi,
    _decode_multi,
    string_buffers,
    tokenize,
)


@njit(cache=True)
def _spans(data, offsets, lens, counts, ascii_table):
    """Byte [start, end) of each token: ``counts[d]`` tokens of ``lens[t]`` code points in document d,
    separated by whitespace."""
    starts = np.empty(len(lens), dtype=np.int64)
    ends = np.empty(len(lens), dtype=np.int64)
    t = 0
    for d in range(len(counts)):
        i, end = offsets[d], offsets[d + 1]
        for _k in range(counts[d]):
            while i < end:  # skip whitespace
                x = data[i]
                if x < 128:
                    if ascii_table[x] != SPACE:
                        break
                    i += 1
                else:
                    cp, w = _decode_multi(data, i)
                    if _cls_multi(cp) != SPACE:
                        break
                    i += w
            starts[t] = i
            for _c in range(lens[t]):
                x = data[i]
                i += 1 if x < 0x80 else (2 if x < 0xE0 else (3 if x < 0xF0 else 4))
            ends[t] = min(i, end)
            t += 1
    return starts, ends


@njit(cache=True)
def _span_hashes(data, starts, ends):
    out = np.empty(len(starts), dtype=np.uint64)
    for t in range(len(starts)):
        h = FNV_OFFSET
        for q in range(starts[t], ends[t]):
            h = (h ^ np.uint64(data[q])) * FNV_PRIME
        out[t] = h
    return out


@njit(cache=True)
def _joined(data, starts, ends, counts):
    """Each document's tokens joined by single spaces: (bytes, offsets)."""
    size = 0
    for t in range(len(starts)):
        size += ends[t] - starts[t] + 1
    out = np.empty(max(size, 1), dtype=np.uint8)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    o = 0
    t = 0
    for d in range(len(counts)):
        for k in range(counts[d]):
            if k > 0:
                out[o] = 32
                o += 1
            for q in range(starts[t], ends[t]):
                out[o] = data[q]
                o += 1
            t += 1
        offsets[d + 1] = o
    return out[:o], offsets


class LowerTokens:
    """The tokens of every document of a string column, located in its lower-cased text."""

    def __init__(self, text: pa.Array | pa.ChunkedArray, lowercase: bool = True):
        _h, lens, _flags, self.counts = tokenize(text)
        self.data, offsets = string_buffers(pc.utf8_lower(text) if lowercase else text)
        self.starts, self.ends = _spans(self.data, offsets, lens, self.counts, _ASCII)

    def hashes(self) -> np.ndarray:
        """FNV-1a of each token's (lower-cased) bytes: ``tokenize.fnv1a(token.lower())``."""
        return _span_hashes(self.data, self.starts, self.ends)

    def joined(self) -> pa.Array:
        """Per document, its tokens joined by single spaces (``" ".join(tokens)``)."""
        data, offsets = _joined(self.data, self.starts, self.ends, self.counts)
        return pa.LargeStringArray.from_buffers(len(self.counts), pa.py_buffer(offsets), pa.py_buffer(data))
