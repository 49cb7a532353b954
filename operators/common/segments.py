"""Lines and paragraphs of every document of a batch: split, rejoin, count.

``split_flat`` and ``join_kept`` cut a column into one flat column of lines and back (pyarrow).
The counting passes are compiled, one pass over the column's UTF-8 bytes (no list column, no
string per line): ``segment_dup_counts`` (Gopher's and FineWeb's duplicate lines and paragraphs:
segments, repeats of an earlier segment, characters in the repeats — segments are compared byte
for byte, a hash only picks the slot), ``line_marks`` (Gopher's bullet and ellipsis lines) and
``line_shape`` (FineWeb's line-final punctuation and short lines). Each gives what the pyarrow and
polars expressions it replaced gave, whitespace sets included: Arrow's ``utf8_trim_whitespace``
trims ``str.isspace`` characters, polars' ``strip_chars`` Rust's ``char::is_whitespace``
(tests/operators/test_rules_reference.py).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

from thresher.operators.common.strings import blank, py_isspace, strip_span
from thresher.operators.common.tokenize import FNV_OFFSET, FNV_PRIME, _decode, string_buffers


def split_flat(text: pa.Array | pa.ChunkedArray, sep: str = "\n") -> tuple[pa.Array, np.ndarray, int]:
    """All lines of all documents as one flat string array, with each line's document index."""
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    lists = pc.split_pattern(text, sep)
    parent = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
    return pc.list_flatten(lists), parent, len(text)


def join_kept(flat: pa.Array, parent: np.ndarray, keep: np.ndarray, n_docs: int, sep: str = "\n") -> pa.Array:
    """Rejoin the kept lines of each document (documents with none become '')."""
    kept = flat.filter(pa.array(keep))
    if pa.types.is_large_string(kept.type):
        kept = kept.cast(pa.string())
    counts = np.bincount(parent[keep], minlength=n_docs)
    offsets = np.zeros(n_docs + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    lists = pa.ListArray.from_arrays(pa.array(offsets), kept)
    return pc.binary_join(lists, sep)


@njit(cache=True)
def same_bytes(data, a, b, c, other=None):
    """The bytes ``data[a:b]`` equal ``other[c:c + b - a]`` (``other`` defaults to ``data``)."""
    if other is None:
        other = data
    for k in range(b - a):  # noqa: SIM110 (compiled: no generators)
        if data[a + k] != other[c + k]:
            return False
    return True


@njit(cache=True)
def _segment_kernel(data, offsets, min_run, trim, skip_blank, seg_start, seg_end, slot_seg, slot_stamp, out):
    ndocs = len(offsets) - 1
    stamp = 0
    for d in range(ndocs):
        a, b = offsets[d], offsets[d + 1]
        if trim:
            a, b = strip_span(data, a, b)
        ns = 0  # split [a, b) at runs of >= min_run newlines
        s = a
        i = a
        while i < b:
            if data[i] == 10:
                e = i
                while e < b and data[e] == 10:
                    e += 1
                if e - i >= min_run:
                    seg_start[ns] = s
                    seg_end[ns] = i
                    ns += 1
                    s = e
                i = e
            else:
                i += 1
        seg_start[ns] = s
        seg_end[ns] = b
        ns += 1
        size = 16
        while size < 2 * ns:
            size *= 2
        mask = size - 1
        stamp += 1
        total = 0
        dups = 0
        dup_chars = 0
        for k in range(ns):
            sa, sb = seg_start[k], seg_end[k]
            if skip_blank and blank(data, sa, sb):
                continue
            total += 1
            h = FNV_OFFSET
            for q in range(sa, sb):
                h = (h ^ np.uint64(data[q])) * FNV_PRIME
            slot = np.int64((h ^ (h >> np.uint64(29))) & np.uint64(mask))
            while True:
                if slot_stamp[slot] != stamp:  # new: remember it
                    slot_stamp[slot] = stamp
                    slot_seg[slot] = k
                    break
                j = slot_seg[slot]
                if seg_end[j] - seg_start[j] == sb - sa and same_bytes(data, sa, sb, seg_start[j]):
                    dups += 1
                    for q in range(sa, sb):
                        if (data[q] & 0xC0) != 0x80:
                            dup_chars += 1
                    break
                slot = (slot + 1) & mask
        out[d, 0] = total
        out[d, 1] = dups
        out[d, 2] = dup_chars


def segment_dup_counts(text: pa.Array | pa.ChunkedArray, min_run: int = 1, trim: bool = False,
                       skip_blank: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(segments, segments equal to an earlier one, characters in those) of each document split at
    runs of ``min_run`` or more newlines
    (``split_pattern_regex(text, "\\n{min_run,}")``), after trimming whitespace from both ends
    with ``trim`` (``utf8_trim_whitespace``), leaving out segments of whitespace only with
    ``skip_blank``. Null documents have no segments."""
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks() if text.num_chunks != 1 else text.chunk(0)
    data, offsets = string_buffers(text)
    n_docs = len(offsets) - 1
    longest = int(np.diff(offsets).max(initial=0))
    seg = max(longest + 1, 1)
    size = 16
    while size < 2 * seg:
        size *= 2
    out = np.zeros((n_docs, 3), dtype=np.int64)
    _segment_kernel(data, offsets, min_run, trim, skip_blank, np.empty(seg, np.int64), np.empty(seg, np.int64),
                    np.empty(size, np.int64), np.zeros(size, np.int64), out)
    if text.null_count:
        out[pc.is_null(text).to_numpy(zero_copy_only=False)] = 0
    return out[:, 0], out[:, 1], out[:, 2]


@njit(cache=True)
def _rust_space(cp):
    """Rust's ``char::is_whitespace`` (what polars' ``strip_chars`` removes): ``str.isspace`` less
    the information separators U+001C-U+001F."""
    return py_isspace(cp) and not (0x1C <= cp <= 0x1F)


@njit(cache=True)
def _line_marks_kernel(data, offsets, out):
    for d in range(len(offsets) - 1):
        a, b = offsets[d], offsets[d + 1]
        if b - a >= 2 and data[b - 2] == 13 and data[b - 1] == 10:  # one final line break goes
            b -= 2
        elif b > a and (data[b - 1] == 10 or data[b - 1] == 13):
            b -= 1
        lines = 0
        bullets = 0
        ell_lines = 0
        hashes = 0
        ellipses = 0
        s = a
        i = a
        while i <= b:
            if i < b and data[i] != 10 and data[i] != 13:
                x = data[i]
                if x == 35:
                    hashes += 1
                elif x == 0xE2 and i + 2 < b and data[i + 1] == 0x80 and data[i + 2] == 0xA6:
                    ellipses += 1
                elif x == 46 and (i == a or data[i - 1] != 46):
                    e = i
                    while e < b and data[e] == 46:
                        e += 1
                    ellipses += (e - i) // 3
                i += 1
                continue
            e = i  # the line [s, e)
            lines += 1
            k = s
            while k < e:  # first character after leading whitespace
                cp, w = _decode(data, k)
                if not _rust_space(cp):
                    if cp == 0x2022 or cp == 45:
                        bullets += 1
                    break
                k += w
            k = e
            while k > s:  # last characters before trailing whitespace
                p = k - 1
                while p > s and (data[p] & 0xC0) == 0x80:
                    p -= 1
                cp, w = _decode(data, p)
                if not _rust_space(cp):
                    if cp == 0x2026 or (cp == 46 and k - s >= 3 and data[k - 2] == 46 and data[k - 3] == 46):
                        ell_lines += 1
                    break
                k = p
            if i < b and data[i] == 13 and i + 1 < b and data[i + 1] == 10:
                i += 1
            i += 1
            s = i
        out[d, 0] = lines
        out[d, 1] = bullets
        out[d, 2] = ell_lines
        out[d, 3] = hashes
        out[d, 4] = ellipses


def line_marks(text: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Per document, as 5 columns: lines (``str.splitlines()`` for \\n, \\r\\n and \\r: no empty
    last line after a final break), lines whose first non-blank character is a bullet ('•' or '-'), lines that end
    (before trailing blanks) with '...' or '…', '#' characters, and ellipses ('...' counted
    without overlap, as ``count_substring``, plus '…'). A null document counts as ''."""
    data, offsets = string_buffers(text)
    out = np.zeros((len(offsets) - 1, 5), dtype=np.int64)
    _line_marks_kernel(data, offsets, out)
    return out


@njit(cache=True)
def _line_shape_kernel(data, offsets, short_len, stop, out):
    for d in range(len(offsets) - 1):
        a, end = offsets[d], offsets[d + 1]
        chars = 0
        for k in range(a, end):
            if (data[k] & 0xC0) != 0x80:
                chars += 1
        lines = 0
        ends = 0
        short = 0
        newlines = 0
        while a <= end:  # the line [a, e), split at every "\n"
            e = a
            n = 0
            while e < end and data[e] != 10:
                if (data[e] & 0xC0) != 0x80:
                    n += 1
                e += 1
            if e < end:
                newlines += 1
            if not blank(data, a, e):
                lines += 1
                if stop[data[e - 1]]:
                    ends += 1
                if n <= short_len:
                    short += 1
            a = e + 1
        out[d, 0] = lines
        out[d, 1] = ends
        out[d, 2] = short
        out[d, 3] = newlines
        out[d, 4] = chars


def line_shape(text: pa.Array | pa.ChunkedArray, short_len: int, stop_chars: str) -> np.ndarray:
    """Per document, as 5 columns, over its lines split at every newline: lines that are not blank
    (only whitespace, ``str.isspace``), those of them whose last character (untrimmed) is one of
    the ASCII ``stop_chars``, those of at most ``short_len`` characters (untrimmed); then newlines
    and characters in the document. A null document counts as ''."""
    stop = np.zeros(256, dtype=np.bool_)
    for c in stop_chars:
        if ord(c) > 127:
            raise ValueError("stop characters must be ASCII")
        stop[ord(c)] = True
    data, offsets = string_buffers(text)
    out = np.zeros((len(offsets) - 1, 5), dtype=np.int64)
    _line_shape_kernel(data, offsets, short_len, stop, out)
    return out
