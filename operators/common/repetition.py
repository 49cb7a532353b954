"""Data-Juicer's n-gram repetition ratios per document, as compiled passes over the UTF-8 bytes.

- ``char_repetition_ratios``: Data-Juicer's ``character_repetition_filter`` (from BigScience's
  text-data-filtering): count every character n-gram of the text (``text[i:i+n]``, code points,
  whitespace included); with ``D`` distinct n-grams of which ``S`` occur once, take the
  ``K = min(floor(sqrt(D)), D - S)`` highest counts; the ratio is their sum / all n-grams.
- ``word_repetition_ratios``: Data-Juicer's ``word_repetition_filter``: words are the text split at
  ' ', '\\n' and '\\t' (empty pieces skipped), lower-cased, stripped of Data-Juicer's special
  characters at both ends (``special_chars``) and skipped when nothing is left; the ratio is the
  share of word n-grams whose n-gram occurs more than once (sum of counts > 1 / all n-grams).

Both are 0 for a text with no n-gram. N-grams are compared by 64-bit hashes (a polynomial over
mixed code points or word hashes) in the open-addressing table of ``ngrams``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

from thresher.operators.common.ngrams import _slot, _table
from thresher.operators.common.special_chars import SPECIAL_TABLE
from thresher.operators.common.tokenize import FNV_OFFSET, FNV_PRIME, _decode, _prev_start, string_buffers

_K = np.uint64(0x9E3779B97F4A7C15)


@njit(cache=True, inline="always")
def _count(keys, stamps, stamp, mask, key, counts, distinct, nd):
    """Count one occurrence of ``key``; a key seen for the first time has its slot appended to
    ``distinct`` (whose first ``nd`` entries are the distinct keys so far). Returns the new ``nd``."""
    s, present = _slot(keys, stamps, stamp, mask, key)
    if present:
        counts[s] += 1
    else:
        counts[s] = 1
        distinct[nd] = s
        nd += 1
    return nd


@njit(cache=True, inline="always")
def _mix(x):
    """splitmix64's finaliser: spreads a code point over 64 bits."""
    z = np.uint64(x) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def _char_kernel(data, offsets, n, keys, stamps, counts, mask, vals, distinct):
    ndocs = len(offsets) - 1
    out = np.zeros(ndocs, dtype=np.float64)
    stamp = 0
    top_pow = np.uint64(1)  # K^(n-1)
    for _ in range(n - 1):
        top_pow = top_pow * _K
    for d in range(ndocs):
        i, end = offsets[d], offsets[d + 1]
        nch = 0
        while i < end:  # the document's code points, mixed
            cp, w = _decode(data, i)
            vals[nch] = _mix(cp)
            nch += 1
            i += w
        m = nch - n + 1
        if m <= 0:
            continue
        stamp += 1
        h = np.uint64(0)
        for j in range(n):
            h = h * _K + vals[j]
        nd = 0
        for p in range(m):
            if p > 0:
                h = (h - vals[p - 1] * top_pow) * _K + vals[p + n - 1]
            nd = _count(keys, stamps, stamp, mask, h, counts, distinct, nd)
        reps = np.empty(nd, dtype=np.int64)  # counts of the n-grams seen more than once
        nr = 0
        for k in range(nd):
            c = counts[distinct[k]]
            if c > 1:
                reps[nr] = c
                nr += 1
        top = min(int(np.sqrt(np.float64(nd))), nr)
        if top > 0:
            r = np.sort(reps[:nr])
            total = 0
            for k in range(nr - top, nr):
                total += r[k]
            out[d] = total / m
    return out


def char_repetition_ratios(text: pa.Array | pa.ChunkedArray, n: int = 10) -> np.ndarray:
    """Data-Juicer's character n-gram repetition ratio of each document (see the module)."""
    data, offsets = string_buffers(text)
    longest = int(np.diff(offsets).max(initial=0))  # bytes: at least the code points
    keys, stamps, counts, mask = _table(longest)
    vals = np.empty(max(longest, 1), np.uint64)
    distinct = np.empty(max(longest, 1), np.int64)
    return _char_kernel(data, offsets, n, keys, stamps, counts, mask, vals, distinct)


@njit(cache=True)
def _word_kernel(data, offsets, n, special, keys, stamps, counts, mask, words, distinct):
    ndocs = len(offsets) - 1
    out = np.zeros(ndocs, dtype=np.float64)
    stamp = 0
    for d in range(ndocs):
        i, end = offsets[d], offsets[d + 1]
        nw = 0
        while i < end:
            while i < end and (data[i] == 32 or data[i] == 10 or data[i] == 9):
                i += 1
            a = i
            while i < end and not (data[i] == 32 or data[i] == 10 or data[i] == 9):
                i += 1
            b = i
            while a < b:  # strip special characters from the front...
                cp, w = _decode(data, a)
                if special[cp] == 0:
                    break
                a += w
            while b > a:  # ...and from the back
                p = _prev_start(data, b, a)
                cp, w = _decode(data, p)
                if special[cp] == 0:
                    break
                b = p
            if b > a:
                h = FNV_OFFSET
                for k in range(a, b):
                    h = (h ^ np.uint64(data[k])) * FNV_PRIME
                words[nw] = h
                nw += 1
        m = nw - n + 1
        if m <= 0:
            continue
        stamp += 1
        nd = 0
        for p in range(m):
            g = np.uint64(0)
            for j in range(n):
                g = g * _K + words[p + j]
            nd = _count(keys, stamps, stamp, mask, g, counts, distinct, nd)
        once = 0
        for k in range(nd):
            if counts[distinct[k]] == 1:
                once += 1
        out[d] = (m - once) / m
    return out


def word_repetition_ratios(text: pa.Array | pa.ChunkedArray, n: int = 10) -> np.ndarray:
    """Data-Juicer's word n-gram repetition ratio of each document (see the module)."""
    data, offsets = string_buffers(pc.utf8_lower(text))
    longest = int(np.diff(offsets).max(initial=0))
    keys, stamps, counts, mask = _table(longest)
    words = np.empty(max(longest, 1), np.uint64)
    distinct = np.empty(max(longest, 1), np.int64)
    return _word_kernel(data, offsets, n, SPECIAL_TABLE, keys, stamps, counts, mask, words, distinct)
