"""Per-document n-gram repetition kernels (numba) over flat token-hash arrays.

Gopher's repetition rules (Rae et al. 2021, §A.1.1, Table A1) need, per document, the characters
covered by the most frequent n-gram (n = 2..4) and by duplicated n-grams (n = 5..10). No column
expression covers that, so it is one compiled pass per document over 64-bit token hashes, for
every n of the rules at once (``ngram_char_stats``). n-gram hashes are polynomial combinations of
token hashes, and those of the (n+1)-grams follow from those of the n-grams in place
(``g[i] * K + h[i + n]``). Counting uses an open-addressing hash table that is reused across
documents (a per-document stamp marks live slots, so nothing is cleared) and probed through a
mask sized to the document: a typical page's n-grams stay within a few KB of it, however long the
batch's longest document is. Once all n-grams of a document are known to differ (the top one
occurs once, or the duplicate walk met no repeat), so do all longer ones: their duplicate
characters are 0 and their top n-gram is the first, with no table probed (this reads equal
hashes as equal n-grams, as the counting itself does).
"""

from __future__ import annotations

import numpy as np
from numba import njit

_K = np.uint64(0x9E3779B97F4A7C15)


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


def top_ngram_chars(hashes: np.ndarray, lens: np.ndarray, offsets: np.ndarray, n: int) -> np.ndarray:
    """Characters covered by the most frequent n-gram of each document (count x length; among
    equally frequent n-grams the one that occurs first, as ``Counter.most_common`` picks)."""
    return ngram_char_stats(hashes, lens, offsets, [n], [])[0][:, 0]


def dup_ngram_chars(hashes: np.ndarray, lens: np.ndarray, offsets: np.ndarray, n: int) -> np.ndarray:
    """Characters in duplicated n-grams per document: walk the n-grams; one seen before adds its
    length (its tokens' characters, no joining spaces) and skips n tokens ahead, a new one is
    remembered (datatrove's ``find_all_duplicate``)."""
    return ngram_char_stats(hashes, lens, offsets, [], [n])[1][:, 0]


@njit(cache=True)
def _table_mask(m, cap):
    """Mask of the smallest power-of-two table of at least 2m slots (at most ``cap`` slots)."""
    size = min(16, cap)
    while size < 2 * m and size < cap:
        size *= 2
    return np.uint64(size - 1)


@njit(cache=True)
def _ngram_stats_kernel(hashes, lens, offsets, top_ns, dup_ns, keys, stamps, counts, g, slots, top_out, dup_out):
    ndocs = len(offsets) - 1
    cap = len(keys)
    max_n = 0
    for n in top_ns:
        max_n = max(max_n, n)
    for n in dup_ns:
        max_n = max(max_n, n)
    stamp = 0
    for d in range(ndocs):
        start, end = offsets[d], offsets[d + 1]
        t = end - start
        for i in range(t):
            g[i] = hashes[start + i]
        distinct_from = max_n + 1  # from this n on, all n-grams of the document differ
        for n in range(1, max_n + 1):
            m = t - n + 1
            if m <= 0:
                break
            if n > 1:  # the n-gram hashes from the (n-1)-gram ones, in place
                for i in range(m):
                    g[i] = g[i] * _K + hashes[start + i + n - 1]
            mask = _table_mask(m, cap)
            for k in range(len(top_ns)):
                if top_ns[k] != n:
                    continue
                if n > distinct_from:  # every n-gram occurs once: the first one is the top one
                    top_out[d, k] = _chars(lens, start, n, n - 1)
                    continue
                stamp += 1
                best = 0
                for p in range(m):
                    s, present = _slot(keys, stamps, stamp, mask, g[p])
                    counts[s] = counts[s] + 1 if present else 1
                    slots[p] = s
                    if counts[s] > best:
                        best = counts[s]
                for p in range(m):  # first position whose n-gram has the top count (Counter.most_common)
                    if counts[slots[p]] == best:
                        top_out[d, k] = best * _chars(lens, start + p, n, n - 1)  # joined with spaces
                        break
                if best == 1:
                    distinct_from = min(distinct_from, n)
            for k in range(len(dup_ns)):
                if dup_ns[k] != n or n > distinct_from:  # (no repeated n-gram: 0)
                    continue
                stamp += 1
                total = 0
                i = 0
                while i < m:
                    s, present = _slot(keys, stamps, stamp, mask, g[i])
                    if present:
                        total += _chars(lens, start + i, n, 0)  # joined without spaces, as datatrove measures
                        i += n
                    else:
                        i += 1
                dup_out[d, k] = total
                if total == 0:  # no n-gram seen twice: all were counted, all differ
                    distinct_from = min(distinct_from, n)


def ngram_char_stats(hashes: np.ndarray, lens: np.ndarray, offsets: np.ndarray, top_ns, dup_ns
                     ) -> tuple[np.ndarray, np.ndarray]:
    """``top_ngram_chars`` for each n of ``top_ns`` and ``dup_ngram_chars`` for each n of
    ``dup_ns``, in one pass: two (documents x len(ns)) arrays of characters."""
    top_ns = np.asarray(list(top_ns), dtype=np.int64)
    dup_ns = np.asarray(list(dup_ns), dtype=np.int64)
    if (top_ns < 1).any() or (dup_ns < 1).any():
        raise ValueError("n-grams have at least 1 token")
    ndocs = len(offsets) - 1
    top_out = np.zeros((ndocs, len(top_ns)), dtype=np.int64)
    dup_out = np.zeros((ndocs, len(dup_ns)), dtype=np.int64)
    max_m = int(np.diff(offsets).max(initial=0))
    keys, stamps, counts, _mask = _table(max_m)
    g = np.empty(max(max_m, 1), np.uint64)
    slots = np.empty(max(max_m, 1), np.int64)
    _ngram_stats_kernel(hashes, lens, np.asarray(offsets, dtype=np.int64), top_ns, dup_ns, keys, stamps, counts,
                        g, slots, top_out, dup_out)
    return top_out, dup_out
