"""Seeded 64-bit hashes of a whole column at once: XXH64 compiled with numba over Arrow's buffers.

XXH64 is Yann Collet's xxHash, 64-bit variant (the reference is the ``xxhash`` spec,
https://github.com/Cyan4973/xxHash/blob/dev/doc/xxhash_spec.md, section "XXH64"); ``xxh64`` here
gives exactly ``xxhash.xxh64_intdigest(value.encode(), seed)`` for every value (the tests compare
them), without one Python call per row. Unlike polars' ``Series.hash``, whose results are only
stable within one polars version, the values never change, so a seeded sample stays the same
across versions, machines and executors.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

from thresher.operators.common.tokenize import string_buffers

_P1 = np.uint64(0x9E3779B185EBCA87)
_P2 = np.uint64(0xC2B2AE3D27D4EB4F)
_P3 = np.uint64(0x165667B19E3779F9)
_P4 = np.uint64(0x85EBCA77C2B2AE63)
_P5 = np.uint64(0x27D4EB2F165667C5)
_MASK64 = (1 << 64) - 1


@njit(cache=True, inline="always")
def _rotl(x, r):
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


@njit(cache=True, inline="always")
def _read_le(data, i, n):
    """The ``n`` bytes at ``data[i]`` as a little-endian unsigned integer."""
    v = np.uint64(0)
    for k in range(n):
        v |= np.uint64(data[i + k]) << np.uint64(8 * k)
    return v


@njit(cache=True, inline="always")
def _round(acc, lane):
    acc = acc + lane * _P2
    acc = _rotl(acc, 31)
    return acc * _P1


@njit(cache=True, inline="always")
def _merge(acc, v):
    acc = acc ^ _round(np.uint64(0), v)
    return acc * _P1 + _P4


@njit(cache=True)
def _xxh64(data, offsets, seed, out):
    for d in range(len(offsets) - 1):
        i, end = offsets[d], offsets[d + 1]
        n = end - i
        if n >= 32:
            v1 = seed + _P1 + _P2
            v2 = seed + _P2
            v3 = seed
            v4 = seed - _P1
            while end - i >= 32:
                v1 = _round(v1, _read_le(data, i, 8))
                v2 = _round(v2, _read_le(data, i + 8, 8))
                v3 = _round(v3, _read_le(data, i + 16, 8))
                v4 = _round(v4, _read_le(data, i + 24, 8))
                i += 32
            h = _rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)
            h = _merge(h, v1)
            h = _merge(h, v2)
            h = _merge(h, v3)
            h = _merge(h, v4)
        else:
            h = seed + _P5
        h = h + np.uint64(n)
        while end - i >= 8:
            h = h ^ _round(np.uint64(0), _read_le(data, i, 8))
            h = _rotl(h, 27) * _P1 + _P4
            i += 8
        if end - i >= 4:
            h = h ^ (_read_le(data, i, 4) * _P1)
            h = _rotl(h, 23) * _P2 + _P3
            i += 4
        while i < end:
            h = h ^ (np.uint64(data[i]) * _P5)
            h = _rotl(h, 11) * _P1
            i += 1
        h = h ^ (h >> np.uint64(33))
        h = h * _P2
        h = h ^ (h >> np.uint64(29))
        h = h * _P3
        h = h ^ (h >> np.uint64(32))
        out[d] = h


def as_text(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``values`` as one Arrow string array: strings as they are, numbers and other scalars in
    Arrow's text form (``42``, ``1.5``, ``true``), so an id read as an integer from JSON and as a
    string from a CSV hashes alike; nulls stay null."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    t = values.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return values
    if pa.types.is_string_view(t) or pa.types.is_null(t) or pa.types.is_dictionary(t):
        return pc.cast(values, pa.large_string())
    return pc.cast(values, pa.string())


def xxh64(values: pa.Array | pa.ChunkedArray, seed: int = 0) -> np.ndarray:
    """XXH64 of each value's UTF-8 text (``as_text``) with ``seed`` (any int, taken mod 2^64), as
    uint64; a null hashes as the empty string."""
    data, offsets = string_buffers(as_text(values))
    out = np.empty(len(offsets) - 1, dtype=np.uint64)
    _xxh64(data, offsets, np.uint64(int(seed) & _MASK64), out)
    return out


def unit_interval(h: np.ndarray) -> np.ndarray:
    """Hashes mapped to [0, 1): their top 53 bits over 2^53 (exact in a float64, monotone in the hash)."""
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
