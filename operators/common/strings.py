"""Building Arrow string columns from bytes that compiled kernels wrote.

A kernel that rewrites text (drops words, cuts chunks) reads a column's UTF-8 bytes and offsets
(``tokenize.string_buffers``), writes new bytes and offsets, and ``strings_from_buffers`` wraps
them as a column again — no Python string per row. ``gather_spans`` copies byte ranges of a
column into a new one (chunks of documents, which may overlap).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

from thresher.operators.common.tokenize import _decode, _prev_start


@njit(cache=True)
def py_isspace(cp):
    """Python's ``str.isspace`` for one code point (what ``str.strip()`` removes)."""
    if cp < 128:
        return cp == 32 or 9 <= cp <= 13 or 28 <= cp <= 31
    return cp == 0x85 or cp == 0xA0 or cp == 0x1680 or 0x2000 <= cp <= 0x200A or cp == 0x2028 or cp == 0x2029 \
        or cp == 0x202F or cp == 0x205F or cp == 0x3000


@njit(cache=True)
def blank(data, a, b):
    """The UTF-8 bytes [a, b) are only whitespace (``not s.strip()``)."""
    i = a
    while i < b:
        cp, w = _decode(data, i)
        if not py_isspace(cp):
            return False
        i += w
    return True


@njit(cache=True)
def strip_span(data, a, b):
    """The bytes [a, b) less leading and trailing whitespace (``str.strip()``, Arrow's
    ``utf8_trim_whitespace``), as (start, end)."""
    while a < b:
        cp, w = _decode(data, a)
        if not py_isspace(cp):
            break
        a += w
    while b > a:
        p = _prev_start(data, b, a)
        cp, _w = _decode(data, p)
        if not py_isspace(cp):
            break
        b = p
    return a, b


def strings_from_buffers(data: np.ndarray, offsets: np.ndarray, like: pa.Array | pa.ChunkedArray | None = None
                         ) -> pa.Array:
    """A string column over ``data`` (UTF-8 bytes) and ``offsets`` (n + 1). With ``like`` (the
    column the text came from, same length): its type when the bytes fit, and its nulls."""
    n = len(offsets) - 1
    out = pa.LargeStringArray.from_buffers(n, pa.py_buffer(np.ascontiguousarray(offsets, dtype=np.int64)),
                                           pa.py_buffer(np.ascontiguousarray(data, dtype=np.uint8)))
    if like is None:
        return out.cast(pa.string()) if int(offsets[-1]) < 2**31 - 1 else out
    if not pa.types.is_large_string(like.type) and int(offsets[-1]) < 2**31 - 1:
        out = out.cast(like.type)
    if like.null_count:
        like = like.combine_chunks() if isinstance(like, pa.ChunkedArray) else like
        out = pc.if_else(pc.is_null(like), pa.scalar(None, out.type), out)
    return out


@njit(cache=True)
def _gather(data, starts, ends, out, out_offsets):
    o = 0
    for k in range(len(starts)):
        out_offsets[k] = o
        for b in range(starts[k], ends[k]):
            out[o] = data[b]
            o += 1
    out_offsets[len(starts)] = o


def gather_spans(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> pa.Array:
    """A string column whose k-th string is the bytes ``data[starts[k]:ends[k]]`` (whole UTF-8
    characters: spans must start and end on character boundaries)."""
    starts = np.asarray(starts, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    out = np.empty(int((ends - starts).sum()), dtype=np.uint8)
    out_offsets = np.empty(len(starts) + 1, dtype=np.int64)
    _gather(data, starts, ends, out, out_offsets)
    return strings_from_buffers(out, out_offsets)


def free_char(text: pa.Array | pa.ChunkedArray) -> str:
    """A private-use character that no string of ``text`` contains (a placeholder to mark places
    with, as RE2 rewrites cannot call code)."""
    for cp in range(0xE000, 0xF900):
        ch = chr(cp)
        if not pc.any(pc.match_substring(text, ch)).as_py():
            return ch
    raise ValueError("every private-use character occurs in the batch")


@njit(cache=True, inline="always")
def lower_ascii_at(data, i):
    """(the character at byte i as ``utf8_lower`` writes it, when that is ASCII, else -1; its width
    in bytes). Outside ASCII only U+0130 (-> 'i') and U+212A, the Kelvin sign (-> 'k'), lower into
    ASCII (tests/operators/test_rules_reference.py checks every code point)."""
    x = data[i]
    if x < 128:
        return (x + 32 if 65 <= x <= 90 else x), 1
    cp, w = _decode(data, i)
    if cp == 0x130:
        return 105, w
    if cp == 0x212A:
        return 107, w
    return -1, w


@njit(cache=True)
def lower_matches(data, a, b, patterns, lengths, first):
    """Bit k set when ``utf8_lower(data[a:b])`` contains pattern k (row k of ``patterns``, lower-case
    ASCII, ``lengths[k]`` long); ``first[c]``: some pattern starts with ASCII code c."""
    found = 0
    i = a
    while i < b:
        c, w = lower_ascii_at(data, i)
        if c >= 0 and first[c]:
            for k in range(len(lengths)):
                if patterns[k, 0] != c or (found >> k) & 1:
                    continue
                j = i + w
                m = 1
                while m < lengths[k] and j < b:
                    c2, w2 = lower_ascii_at(data, j)
                    if c2 != patterns[k, m]:
                        break
                    j += w2
                    m += 1
                if m == lengths[k]:
                    found |= 1 << k
        i += w
    return found


def lower_patterns(words: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(patterns, lengths, first) of ``lower_matches`` for up to 62 lower-case ASCII ``words``."""
    if not words or len(words) > 62 or any(not w or not w.isascii() or w != w.lower() for w in words):
        raise ValueError("1 to 62 non-empty lower-case ASCII patterns")
    patterns = np.zeros((len(words), max(len(w) for w in words)), dtype=np.int64)
    first = np.zeros(128, dtype=np.bool_)
    for k, w in enumerate(words):
        patterns[k, :len(w)] = list(w.encode())
        first[ord(w[0])] = True
    return patterns, np.array([len(w) for w in words], dtype=np.int64), first
