"""Per-document n-gram repetition kernels (numba) over flat token-hash arrays.

Gopher's repetition rules (Rae et al. 2021, §A.1.1, Table A1) need, per document, the characters
covered by the most frequent n-gram (n = 2..4) and by duplicated n-grams (n = 5..10). No column
expression covers that, so it is one compiled pass per document over 64-bit token hashes. n-gram
hashes are polynomial combinations of token hashes; counting uses an open-addressing hash table
that is reused across documents (a per-document stamp marks live slots, so nothing is cleared).
"""

from __future__ import annotations

import numpy as np
from numba import njit

_K = np.uint64(0x9E3779B97F4A7C15)


@njit(cache=True)
def _ngram_hashes(h, start, m, n, out):
    for i in range(m):
        acc = np.uint64(0)
        for j in range(n):
            acc = acc * _K + h[start + i + j]
        out[i] = acc


@njit(cache=True)
def _slot(keys, stamps, stamp, mask, key):
    """Slot of ``key`` in the table (inserting it if absent); returns (slot, was_present)."""
    s = np.int64((key ^ (key >> np.uint64(29))) & mask)
    while True:
        if stamps[s] != stamp:
            stamps[s] = stamp
            keys[s] = key
            return s, False
        if keys[s] == key:
            return s, True
        s = (s + 1) & mask


def _table(max_m):
    size = 1
    while size < 2 * max(max_m, 1):
        size *= 2
    return np.zeros(size, np.uint64), np.zeros(size, np.int64), np.zeros(size, np.int64), np.uint64(size - 1)


@njit(cache=True, inline="always")
def _chars(lens, start, n, joiners):
    """Characters of the n tokens from ``start``, plus ``joiners`` separators."""
    c = joiners
    for j in range(n):
        c += lens[start + j]
    return c


@njit(cache=True)
def _top_kernel(hashes, lens, offsets, n, keys, stamps, counts, mask, g, slots):
    ndocs = len(offsets) - 1
    out = np.zeros(ndocs, dtype=np.int64)
    stamp = 0
    for d in range(ndocs):
        start, end = offsets[d], offsets[d + 1]
        m = end - start - n + 1
        if m <= 0:
            continue
        stamp += 1
        _ngram_hashes(hashes, start, m, n, g)
        best = 0
        for p in range(m):
            s, present = _slot(keys, stamps, stamp, mask, g[p])
            counts[s] = counts[s] + 1 if present else 1
            slots[p] = s
            if counts[s] > best:
                best = counts[s]
        for p in range(m):  # first position whose n-gram has the top count (Counter.most_common)
            if counts[slots[p]] == best:
                out[d] = best * _chars(lens, start + p, n, n - 1)  # joined with spaces
                break
    return out


@njit(cache=True)
def _dup_kernel(hashes, lens, offsets, n, keys, stamps, mask, g):
    ndocs = len(offsets) - 1
    out = np.zeros(ndocs, dtype=np.int64)
    stamp = 0
    for d in range(ndocs):
        start, end = offsets[d], offsets[d + 1]
        m = end - start - n + 1
        if m <= 0:
            continue
        stamp += 1
        _ngram_hashes(hashes, start, m, n, g)
        total = 0
        i = 0
        while i < m:
            s, present = _slot(keys, stamps, stamp, mask, g[i])
            if present:
                total += _chars(lens, start + i, n, 0)  # joined without spaces, as datatrove measures
                i += n
            else:
                i += 1
        out[d] = total
    return out


def top_ngram_chars(hashes: np.ndarray, lens: np.ndarray, offsets: np.ndarray, n: int) -> np.ndarray:
    """Characters covered by the most frequent n-gram of each document (count x length; among
    equally frequent n-grams the one that occurs first, as ``Counter.most_common`` picks)."""
    max_m = int(np.diff(offsets).max(initial=0))
    keys, stamps, counts, mask = _table(max_m)
    g = np.empty(max(max_m, 1), np.uint64)
    slots = np.empty(max(max_m, 1), np.int64)
    return _top_kernel(hashes, lens, offsets, n, keys, stamps, counts, mask, g, slots)


def dup_ngram_chars(hashes: np.ndarray, lens: np.ndarray, offsets: np.ndarray, n: int) -> np.ndarray:
    """Characters in duplicated n-grams per document: walk the n-grams; one seen before adds its
    length (its tokens' characters, no joining spaces) and skips n tokens ahead, a new one is
    remembered (datatrove's ``find_all_duplicate``)."""
    max_m = int(np.diff(offsets).max(initial=0))
    keys, stamps, _counts, mask = _table(max_m)
    g = np.empty(max(max_m, 1), np.uint64)
    return _dup_kernel(hashes, lens, offsets, n, keys, stamps, mask, g)
