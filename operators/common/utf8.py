"""Zero-copy access to an Arrow string column's UTF-8 bytes, and the numpy helpers built on them.

The numba kernels (``tokenize`` and the modules that import its helpers), the run profile's length
statistics (pipeline/profile.py) and exact dedup's normalisation (operators/dedup/exact.py) all read a
string column as two numpy arrays: its UTF-8 data bytes and its row offsets. This module holds that
view and nothing that imports numba, so a process that only needs the view (an exact-dedup worker,
the driver's profile) does not pay numba's import (~30 MB, ~0.3 s; docs/benchmarks.md, "Exact dedup
and memory, round two"). UTF-8 itself: RFC 3629.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def string_buffers(text: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(UTF-8 bytes, offsets) of a string column: ``data[offsets[i]:offsets[i + 1]]`` is row ``i``'s
    text. Zero-copy over the column's data buffer (a view of just the rows' bytes, so offsets start at
    0, as int64); chunks are combined, string views and dictionaries cast first; a null reads as ''."""
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks() if text.num_chunks != 1 else text.chunk(0)
    if not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type)):
        text = text.cast(pa.large_string())
    if text.null_count:
        text = pc.fill_null(text, "")
    wide = pa.types.is_large_string(text.type)
    _, offsets, data = text.buffers()
    offs = np.frombuffer(offsets, dtype=np.int64 if wide else np.int32, count=len(text) + 1,
                         offset=text.offset * (8 if wide else 4)).astype(np.int64)
    d = np.frombuffer(data, dtype=np.uint8)[offs[0]:offs[-1]] if data is not None else np.zeros(0, np.uint8)
    return d, offs - offs[0]


def strings_like(like: pa.Array, data, offsets: np.ndarray) -> pa.Array:
    """The string array of ``data`` (bytes or a uint8 array) and int64 ``offsets`` (from 0), of
    ``like``'s type where that is string (and the bytes fit its offsets) and with its nulls."""
    buf = pa.py_buffer(data)
    out = pa.LargeStringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets), buf)
    if pa.types.is_string(like.type) and int(offsets[-1]) < 2**31 - 1:
        out = out.cast(like.type)
    return pc.if_else(pc.is_null(like), pa.scalar(None, out.type), out) if like.null_count else out


SLICE = 1 << 18  # bytes looked at at once: a slice's masks stay in the CPU's cache


def find_bytes(d: np.ndarray, test) -> np.ndarray:
    """The positions in ``d`` where ``test`` (a vectorised predicate over a uint8 array) holds, tested
    a slice of ``SLICE`` bytes at a time: the boolean masks stay in cache and are not fresh pages
    (a worker's allocator maps each array over 1 MB anew, pipeline/executors/local.py), which costs
    more CPU than the tests themselves (docs/benchmarks.md, "Fifth step")."""
    if len(d) <= SLICE:
        return np.flatnonzero(test(d))
    return np.concatenate([np.flatnonzero(test(d[a:a + SLICE])) + a for a in range(0, len(d), SLICE)])


def row_of(offsets: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The row each byte position of ``string_buffers``' data lies in."""
    return np.searchsorted(offsets, positions, side="right") - 1


def code_points(d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(position, code point, byte length) of every non-ASCII character of the UTF-8 bytes ``d``:
    only the lead bytes (``11xxxxxx``) are decoded."""
    lead = find_bytes(d, lambda seg: seg >= 0xC0)
    b0 = d[lead].astype(np.int32)
    nxt = [d.take(lead + k, mode="clip").astype(np.int32) & 0x3F for k in (1, 2, 3)]
    cp = np.where(b0 < 0xE0, ((b0 & 0x1F) << 6) | nxt[0],
                  np.where(b0 < 0xF0, ((b0 & 0x0F) << 12) | (nxt[0] << 6) | nxt[1],
                           ((b0 & 0x07) << 18) | (nxt[0] << 12) | (nxt[1] << 6) | nxt[2]))
    return lead, np.minimum(cp, 0x10FFFF), np.where(b0 < 0xE0, 2, np.where(b0 < 0xF0, 3, 4))
