"""MinHash signatures and LSH band keys, computed for a whole batch at once (numba).

Shingles are word n-grams (or character n-grams) of the lower-cased text; a shingle's 64-bit hash
combines its words' FNV-1a hashes and is folded to 32 bits. Each of the ``num_perm`` hash functions
is multiply-add-shift hashing, ``h_k(x) = ((a_k x + b_k) mod 2^64) >> 32`` (Dietzfelbinger 1996),
with ``a_k`` (odd) and ``b_k`` drawn from a seeded generator, so signatures are reproducible. The minimum
over a document's shingles is its signature value. Band keys hash ``rows`` consecutive values.
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
)

_K = np.uint64(0x9E3779B97F4A7C15)
EMPTY = np.uint32(0xFFFFFFFF)


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded multiply-add-shift parameters for 32-bit keys: 64-bit odd multipliers and 64-bit
    offsets (Dietzfelbinger 1996: with 2w-bit a and b, ((a x + b) mod 2^2w) >> w is strongly universal)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, size=num_perm, dtype=np.uint64)
    return a, b


@njit(cache=True)
def _word_hashes(data, offsets, ascii_table):
    """FNV-1a hash of every whitespace-separated word; returns (hashes, words per doc)."""
    n = len(offsets) - 1
    out = np.empty(max(16, len(data) // 2 + 1), dtype=np.uint64)
    counts = np.zeros(n, dtype=np.int64)
    t = 0
    for d in range(n):
        i, end = offsets[d], offsets[d + 1]
        inside = False
        h = FNV_OFFSET
        while i < end:
            x = data[i]
            if x < 128:
                space = ascii_table[x] == SPACE
                w = 1
            else:
                cp, w = _decode_multi(data, i)
                space = _cls_multi(cp) == SPACE
            if space:
                if inside:
                    out[t] = h
                    t += 1
                    counts[d] += 1
                    inside = False
            else:
                if not inside:
                    h = FNV_OFFSET
                    inside = True
                for k in range(i, i + w):
                    h = (h ^ np.uint64(data[k])) * FNV_PRIME
            i += w
        if inside:
            out[t] = h
            t += 1
            counts[d] += 1
    return out[:t], counts


@njit(cache=True)
def _char_hashes(data, offsets, n):
    """Hashes of character n-grams (over bytes of code points; whitespace runs count as one space)."""
    nd = len(offsets) - 1
    out = np.empty(max(16, len(data) + 1), dtype=np.uint64)
    counts = np.zeros(nd, dtype=np.int64)
    starts = np.empty(max(16, len(data) + 1), dtype=np.int64)
    t = 0
    for d in range(nd):
        i, end = offsets[d], offsets[d + 1]
        m = 0  # code point starts
        while i < end:
            starts[m] = i
            m += 1
            x = data[i]
            i += 1 if x < 0x80 else (2 if x < 0xE0 else (3 if x < 0xF0 else 4))
        starts[m] = end
        if m == 0:
            continue
        k = n if m >= n else m
        for s in range(m - k + 1):
            h = FNV_OFFSET
            for q in range(starts[s], starts[s + k]):
                h = (h ^ np.uint64(data[q])) * FNV_PRIME
            out[t] = h
            t += 1
        counts[d] = m - k + 1
    return out[:t], counts


@njit(cache=True, inline="always")
def _shingle_hash(token_hashes, start, k_len):
    sh = np.uint64(0)
    for j in range(k_len):
        sh = sh * _K + token_hashes[start + j]
    return sh


@njit(cache=True)
def _signatures(token_hashes, counts, n, a, b, out):
    """Per document: shingles = n consecutive tokens (all tokens if fewer), folded to 32 bits;
    signature_k = min over shingles of (a_k * x + b_k) >> 32 (Dietzfelbinger's multiply-add-shift)."""
    nd = len(counts)
    num_perm = len(a)
    mins = np.empty(num_perm, dtype=np.uint32)
    pos = 0
    for d in range(nd):
        c = counts[d]
        for k in range(num_perm):
            mins[k] = np.uint32(0xFFFFFFFF)
        if c > 0:
            k_len = n if c >= n else c
            for s in range(c - k_len + 1):
                sh = _shingle_hash(token_hashes, pos + s, k_len)
                x = (sh ^ (sh >> np.uint64(32))) & np.uint64(0xFFFFFFFF)
                for k in range(num_perm):  # branch-free: vectorises
                    mins[k] = min(mins[k], np.uint32((a[k] * x + b[k]) >> np.uint64(32)))
        for k in range(num_perm):
            out[d, k] = mins[k]
        pos += c


@njit(cache=True)
def _shingle_sets(token_hashes, counts, n):
    """Flat shingle hashes per document (for exact Jaccard), with per-document counts."""
    total = 0
    for c in counts:
        total += max(c - n + 1, 1) if c > 0 else 0
    out = np.empty(total, dtype=np.uint64)
    per = np.zeros(len(counts), dtype=np.int64)
    pos = 0
    t = 0
    for d in range(len(counts)):
        c = counts[d]
        if c > 0:
            k_len = n if c >= n else c
            for s in range(c - k_len + 1):
                out[t] = _shingle_hash(token_hashes, pos + s, k_len)
                t += 1
            per[d] = c - k_len + 1
        pos += c
    return out, per


def token_hashes(text, shingle: str, char_n: int):
    t = pc.utf8_lower(text)
    data, offsets = string_buffers(t)
    if shingle == "word":
        return _word_hashes(data, offsets, _ASCII)
    return _char_hashes(data, offsets, char_n)


def signatures(text: pa.Array | pa.ChunkedArray, n: int, a: np.ndarray, b: np.ndarray,
               shingle: str = "word") -> np.ndarray:
    """(docs x num_perm) uint32 MinHash signatures; all-0xFFFFFFFF for empty documents."""
    hashes, counts = token_hashes(text, shingle, n)
    out = np.empty((len(counts), len(a)), dtype=np.uint32)
    _signatures(hashes, counts, n if shingle == "word" else 1, a, b, out)
    return out


def word_ngram_hashes(text, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(flat hashes of every row's word n-grams, n-grams per row); a row shorter than n words is
    one n-gram of all its words."""
    hashes, counts = token_hashes(text, "word", n)
    return _shingle_sets(hashes, counts, n)


def shingle_sets(text, n: int, shingle: str = "word") -> list[np.ndarray]:
    hashes, counts = token_hashes(text, shingle, n)
    flat, per = _shingle_sets(hashes, counts, n if shingle == "word" else 1)
    bounds = np.concatenate([[0], np.cumsum(per)])
    return [np.unique(flat[bounds[i]:bounds[i + 1]]) for i in range(len(per))]


@njit(cache=True)
def _band_keys(sig, bands, rows):
    nd = sig.shape[0]
    out = np.empty((nd, bands), dtype=np.uint64)
    for d in range(nd):
        for bnd in range(bands):
            h = np.uint64(bnd + 1) * _K
            for r in range(rows):
                h = (h ^ np.uint64(sig[d, bnd * rows + r])) * FNV_PRIME
            out[d, bnd] = h
    return out


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    return _band_keys(sig, bands, rows)


def optimal_params(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5
                   ) -> tuple[int, int]:
    """(bands, rows) with bands * rows <= num_perm minimising the weighted areas under the false
    positive and false negative curves of P(candidate) = 1 - (1 - s^r)^b (the criterion datasketch's
    MinHashLSH uses), integrated numerically."""
    best, best_err = (1, 1), float("inf")
    s_lo = np.linspace(0.0, threshold, 512)
    s_hi = np.linspace(threshold, 1.0, 512)
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = np.trapezoid(1 - (1 - s_lo ** r) ** b, s_lo)
            fn = np.trapezoid((1 - s_hi ** r) ** b, s_hi)
            err = fp_weight * fp + fn_weight * fn
            if err < best_err - 1e-12:
                best, best_err = (b, r), err
    return best


@njit(cache=True)
def jaccard_pairs(flat, offsets, a_idx, b_idx):
    """Exact Jaccard of pairs of sorted, de-duplicated hash sets stored flat with offsets."""
    out = np.empty(len(a_idx), dtype=np.float64)
    for p in range(len(a_idx)):
        i, i_end = offsets[a_idx[p]], offsets[a_idx[p] + 1]
        j, j_end = offsets[b_idx[p]], offsets[b_idx[p] + 1]
        na, nb = i_end - i, j_end - j
        inter = 0
        while i < i_end and j < j_end:
            if flat[i] == flat[j]:
                inter += 1
                i += 1
                j += 1
            elif flat[i] < flat[j]:
                i += 1
            else:
                j += 1
        union = na + nb - inter
        out[p] = inter / union if union > 0 else 1.0
    return out


def jaccard_sorted(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) == 0 and len(y) == 0:
        return 1.0
    inter = len(np.intersect1d(x, y, assume_unique=True))
    return inter / (len(x) + len(y) - inter)
