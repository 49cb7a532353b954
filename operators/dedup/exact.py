"""Exact deduplication: of rows whose key hashes alike (normalised text, or normalised URL), keep
one — the first in input order, the longest, or the one with the highest value of a column."""

from __future__ import annotations

import functools
import io
import math
import re
import tempfile
import unicodedata
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from pydantic import Field, model_validator

from thresher.operators.common.utf8 import code_points, row_of, string_buffers, strings_like
from thresher.pipeline.columns import ROW, SHARD, drop_decisions
from thresher.pipeline.executors.passes import fingerprint_pieces, trim_heap
from thresher.pipeline.ops import GlobalOp, OpParams, Resources
from thresher.pipeline.registry import register

_PUNCT = r"[\p{P}\p{S}]"


def normalise(text: pa.ChunkedArray | pa.Array, lowercase: bool, whitespace: bool, punctuation: bool,
              unicode: bool) -> pa.Array:
    """The text that is hashed: each option removes one kind of difference that does not count. The
    reference definition, in Arrow's terms: ``utf8_normalize(NFKC)`` (``unicode``), then ``utf8_lower``
    (``lowercase``), then the punctuation regex removed (``punctuation``), then ``\\s+`` (RE2:
    ``[\\t\\n\\f\\r ]+``) replaced by one space and ``utf8_trim_whitespace`` (``whitespace``).
    Computed by ``normalised_spans`` with the same result (tests/operators/test_exact_normalise.py)."""
    if isinstance(text, pa.ChunkedArray):
        parts = [normalise(c, lowercase, whitespace, punctuation, unicode) for c in text.chunks]
        return pa.chunked_array(parts, type=parts[0].type) if parts else text
    d, start, end = normalised_spans(text, lowercase, whitespace, punctuation, unicode)
    lengths = end - start
    offs = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offs[1:])
    return strings_like(text, d[np.repeat(start - offs[:-1], lengths) + np.arange(offs[-1])], offs)


def normalised_spans(text: pa.Array, lowercase: bool, whitespace: bool, punctuation: bool,
                     unicode: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``normalise``'s result as (UTF-8 bytes, start, end): row ``i`` is ``data[start[i]:end[i]]`` (a
    null as ''), made without an Arrow array per step: the few non-ASCII characters NFKC or
    lower-casing change are rewritten in place (``recode``), ASCII is lower-cased by ``ascii_lower``,
    whitespace is folded with numpy (``_fold``), and trimming moves each row's bounds."""
    t = _respliced(text, unicode, lowercase) if unicode or lowercase else text
    if punctuation:
        t = pc.replace_substring_regex(t, _PUNCT, "")
    d, offs = string_buffers(t)
    if lowercase:
        d, offs = string_buffers(_ascii_lower(d, offs))
    if not whitespace:
        return d, offs[:-1], offs[1:]
    d, offs = _fold(d, offs)
    return (d, *_trimmed(d, offs[:-1], offs[1:]))


def nfkc(t: pa.Array) -> pa.Array:
    """NFKC of each string (``recode`` without lower-casing)."""
    return recode(t, nfkc=True, lower=False)


_NFKC_UNSAFE, _LOWER_CHANGES, _LOOKED_UP = 1, 2, 4


def recode(t: pa.Array, nfkc: bool = True, lower: bool = True) -> pa.Array:
    """NFKC (``nfkc``) and then lower case (``lower``; Arrow's ``utf8_lower``, which maps each code
    point on its own) of each string, rewriting only the few characters that need it. A character whose
    NFKC quick-check property is Yes and whose combining class is 0 starts a normalisation boundary
    (UAX #15, section 9): the text before it and from it on normalise apart. So each "unsafe" character
    (any other, ``_flags``), with the character before it (which it may compose with), is a segment, and
    so is each non-ASCII character that lower-casing changes; the segments (overlapping ones merged) go
    to Arrow's normaliser and lower-caser, and the results are spliced back in place; ASCII is
    lower-cased by ``ascii_lower`` (byte for byte). The characters are found with numpy over the UTF-8
    data buffer (only non-ASCII lead bytes are decoded and looked up): no Python string per row. On 100k
    web documents, 71k of them with non-ASCII characters, ~9k hold an unsafe character, ~5 per document."""
    t = _respliced(t, nfkc, lower)
    return strings_like(t, *string_buffers(_ascii_lower(*string_buffers(t)))) if lower else t


def _ascii_lower(d: np.ndarray, offs: np.ndarray) -> pa.Array:
    """``ascii_lower`` of the strings at ``offs`` in ``d``, given to Arrow with offsets from 0: on a
    sliced array whose offsets start elsewhere (a cast of a slice) pyarrow 26's ``ascii_lower`` keeps
    the offsets but sizes the data from 0, an array that fails ``validate``."""
    return pc.ascii_lower(pa.LargeStringArray.from_buffers(len(offs) - 1, pa.py_buffer(offs), pa.py_buffer(d)))


def _respliced(t: pa.Array, nfkc: bool, lower: bool) -> pa.Array:
    """``recode`` but for ASCII letters (left as they are)."""
    d, offs = string_buffers(t)
    pos, cp, width = code_points(d)
    flags = _flags(cp) & ((_NFKC_UNSAFE if nfkc else 0) | (_LOWER_CHANGES if lower else 0))
    bad = flags != 0
    if not bad.any():
        return t
    pos, width, back = pos[bad], width[bad], (flags[bad] & _NFKC_UNSAFE) != 0
    row_start = offs[row_of(offs, pos)]
    starts = np.where(back, np.maximum(pos - 1, row_start), pos)  # NFKC: the character before, if any
    for _ in range(3):  # back over continuation bytes to that character's first byte
        starts = np.where(back & (starts > row_start) & ((d[starts] & 0xC0) == 0x80), starts - 1, starts)
    return _splice(t, d, offs, starts, pos + width, nfkc, lower)


def _splice(t: pa.Array, d: np.ndarray, offs: np.ndarray, starts: np.ndarray, ends: np.ndarray, nfkc: bool,
            lower: bool) -> pa.Array:
    """``t`` with its byte ranges ``[starts, ends)`` (sorted; overlapping ones are merged) normalised."""
    first = np.ones(len(starts), dtype=bool)  # merge overlapping segments (they lie in one row)
    first[1:] = starts[1:] >= ends[:-1]
    seg_start, seg_end = starts[first], ends[np.r_[first[1:], True]]
    lengths = seg_end - seg_start
    seg_offs = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=seg_offs[1:])
    gather = np.repeat(seg_start - seg_offs[:-1], lengths) + np.arange(seg_offs[-1])
    segments = pa.LargeStringArray.from_buffers(len(lengths), pa.py_buffer(seg_offs), pa.py_buffer(d[gather]))
    if nfkc:
        segments = pc.utf8_normalize(segments, form="NFKC")
    if lower:
        segments = pc.utf8_lower(segments)
    new_d, new_offs = string_buffers(segments)
    src, rep, r = memoryview(d), memoryview(new_d), new_offs.tolist()
    joined: list = [None] * (2 * len(lengths) + 1)  # text before segment 0, segment 0 normalised, ...
    joined[0::2] = [src[a:b] for a, b in zip([0, *seg_end.tolist()], [*seg_start.tolist(), len(d)], strict=True)]
    joined[1::2] = [rep[a:b] for a, b in zip(r[:-1], r[1:], strict=True)]
    delta = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(np.diff(new_offs) - lengths, out=delta[1:])
    return strings_like(t, b"".join(joined), offs + delta[np.searchsorted(seg_end, offs, side="right")])


_SLICE = 1 << 18  # bytes ``_fold`` looks at at once: its masks stay in the CPU's cache


def _fold(d: np.ndarray, offs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The UTF-8 bytes ``d`` (rows at ``offs``) with each run of RE2's ``\\s`` (``[\\t\\n\\f\\r ]``)
    within a row replaced by one space, as ``replace_substring_regex(t, r"\\s+", " ")`` does:
    (bytes, offsets). A byte is dropped where it and the byte before it in its row are both whitespace,
    and a kept ``\\t\\n\\f\\r`` becomes a space. The masks are made with numpy a slice of ``_SLICE``
    bytes at a time (they stay in cache and cost no page faults), and only the positions they mark are
    kept; the bytes between dropped ones are joined once. ~3x less CPU than the regex on web text
    (docs/benchmarks.md, "Fifth step")."""
    n = len(d)
    row_starts = offs[(offs > 0) & (offs < n)]
    drops, ctrls = [], []
    for a in range(0, n, _SLICE):
        b = min(a + _SLICE, n)
        seg = d[a - 1 if a else 0:b]  # with the byte before the slice: a run may cross into it
        ctrl = (seg - np.uint8(9)) <= 4  # \t \n \v \f \r (uint8 wraps below 9) ...
        ctrl &= seg != 11  # ... but \v, which RE2's \s leaves out
        ws = seg == 32
        ws |= ctrl
        drop = ws[1:] & ws[:-1]  # bytes a + 1 - (a == 0) ... b - 1
        drop[row_starts[np.searchsorted(row_starts, a):np.searchsorted(row_starts, b)] - a - (not a)] = False
        drops.append(np.flatnonzero(drop) + (a if a else 1))  # a run ends with its row
        ctrls.append(np.flatnonzero(ctrl[1:] if a else ctrl) + a)
    drop = np.concatenate(drops) if drops else np.zeros(0, np.int64)
    ctrl = np.concatenate(ctrls) if ctrls else np.zeros(0, np.int64)
    if not len(drop) and not len(ctrl):
        return d, offs
    if len(drop):  # join the bytes between runs of dropped ones
        brk = np.flatnonzero(np.diff(drop) != 1) + 1
        run_start, run_end = drop[np.r_[0, brk]], drop[np.r_[brk - 1, len(drop) - 1]] + 1
        mv = memoryview(d)
        out = np.frombuffer(bytearray().join(map(mv.__getitem__, map(slice, [0, *run_end.tolist()],
                                                                      [*run_start.tolist(), n]))), dtype=np.uint8)
        # a dropped \n lands on the first byte of its run, which becomes a space too
        ctrl = ctrl - np.searchsorted(drop, ctrl, side="right")
        offs = offs - np.searchsorted(drop, offs)
    else:
        out = d.copy()
    out[ctrl] = 32
    return out, offs


def _trimmed(d: np.ndarray, start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row bounds without leading and trailing whitespace, as ``utf8_trim_whitespace`` finds it: only
    rows that begin or end with anything but a printable ASCII character (``!`` to ``~``) are asked."""
    if not len(d):
        return start, end
    nonempty = end > start
    first = np.where(nonempty, d.take(start, mode="clip"), np.uint8(65))
    last = np.where(nonempty, d.take(end - 1, mode="clip"), np.uint8(65))
    ask = np.flatnonzero((first < 33) | (first > 126) | (last < 33) | (last > 126))
    if not len(ask):
        return start, end
    s, e = start[ask], end[ask]
    lengths = e - s
    offs = np.zeros(len(ask) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offs[1:])
    rows = pa.LargeStringArray.from_buffers(len(ask), pa.py_buffer(offs),
                                            pa.py_buffer(d[np.repeat(s - offs[:-1], lengths) + np.arange(offs[-1])]))
    left = lengths - pc.binary_length(pc.utf8_ltrim_whitespace(rows)).to_numpy()
    right = lengths - pc.binary_length(pc.utf8_rtrim_whitespace(rows)).to_numpy()
    start, end = start.copy(), end.copy()
    start[ask] = s + left
    end[ask] = np.maximum(s + left, e - right)
    return start, end


# Code point -> _LOOKED_UP | _NFKC_UNSAFE | _LOWER_CHANGES bits, 0 until looked up (np.zeros: pages are
# mapped only where written).
_FLAGS = np.zeros(0x110000, dtype=np.uint8)
# Characters of combining class 0 that NFKC leaves alone but that may compose with the character before
# them (quick check "Maybe"): the second of a canonical decomposition pair, from Python's unicodedata
# 14.0.0 (``_maybe_starters`` derives them again for another version), plus the Hangul vowel and
# trailing jamo (decomposed by algorithm, Unicode 3.12).
_MAYBE_STARTERS_14 = frozenset([
    0x9BE, 0x9D7, 0xB3E, 0xB56, 0xB57, 0xBBE, 0xBD7, 0xCC2, 0xCD5, 0xCD6, 0xD3E, 0xD57, 0xDCF, 0xDDF, 0xFB5,
    0xFB7, 0x102E, 0x1B35, 0x11127, 0x1133E, 0x11357, 0x114B0, 0x114BA, 0x114BD, 0x115AF, 0x11930])
_HANGUL_JAMO = frozenset([*range(0x1161, 0x1176), *range(0x11A8, 0x11C3)])


@functools.cache
def _maybe_starters() -> frozenset[int]:
    if unicodedata.unidata_version == "14.0.0":
        return _MAYBE_STARTERS_14 | _HANGUL_JAMO
    return frozenset(int(part, 16) for c in range(0x110000) if (m := unicodedata.decomposition(chr(c)))
                     and m[0] != "<" for part in m.split()[1:]
                     if unicodedata.combining(chr(int(part, 16))) == 0) | _HANGUL_JAMO


def _flags(cp: np.ndarray) -> np.ndarray:
    """Per code point of ``cp``: ``_NFKC_UNSAFE`` where NFKC may change a string holding it (Python's
    ``unicodedata``: the character is not its own NFKC, has a combining class, or may compose with the
    character before it), ``_LOWER_CHANGES`` where Arrow's ``utf8_lower`` maps it to another. Each
    distinct code point is looked up once per process."""
    new = np.unique(cp[_FLAGS[cp] == 0])
    if len(new):
        maybe = _maybe_starters()
        chars = [chr(c) for c in new.tolist()]
        unsafe = [c in maybe or unicodedata.combining(ch) or not unicodedata.is_normalized("NFKC", ch)
                  for c, ch in zip(new.tolist(), chars, strict=True)]
        surrogate = (new >= 0xD800) & (new < 0xE000)  # only from bytes that are not UTF-8: left alone
        plain = [ch for ch, s in zip(chars, surrogate.tolist(), strict=True) if not s]
        lowered = iter(pc.utf8_lower(pa.array(plain, pa.string())).to_pylist())
        changes = [not s and next(lowered) != ch for ch, s in zip(chars, surrogate.tolist(), strict=True)]
        _FLAGS[new] = (_LOOKED_UP | np.where(unsafe, _NFKC_UNSAFE, 0) | np.where(changes, _LOWER_CHANGES, 0)
                       ).astype(np.uint8)
    return _FLAGS[cp] & (_NFKC_UNSAFE | _LOWER_CHANGES)


def _unsafe(cp: np.ndarray) -> np.ndarray:
    """Which of the code points ``cp`` NFKC may change a string holding (``_flags``)."""
    return (_flags(cp) & _NFKC_UNSAFE) != 0


def hash128(texts: pa.Array | pa.ChunkedArray | list) -> tuple[np.ndarray, np.ndarray]:
    """xxh3-128 of each string as two uint64 arrays (high, low); nulls hash as ''. Arrow strings
    are hashed in place from their data buffer (no Python string per row)."""
    if isinstance(texts, list):
        return _digests([(s or "").encode("utf-8") for s in texts])
    chunks = texts.chunks if isinstance(texts, pa.ChunkedArray) else [texts]
    views = []
    for c in chunks:
        d, offs = string_buffers(c)
        views += _views(d, offs[:-1], offs[1:])
    return _digests(views)


def hash_spans(d: np.ndarray, start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``hash128`` of the byte ranges ``d[start[i]:end[i]]`` (``normalised_spans``)."""
    return _digests(_views(d, start, end))


def _views(d: np.ndarray, start: np.ndarray, end: np.ndarray) -> list[memoryview]:
    mv = memoryview(d)
    return list(map(mv.__getitem__, map(slice, start.tolist(), end.tolist())))


def _digests(views: list) -> tuple[np.ndarray, np.ndarray]:
    if not views:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    packed = np.frombuffer(b"".join(map(xxhash.xxh3_128_digest, views)), dtype=">u8").reshape(-1, 2)
    return packed[:, 0].astype(np.uint64), packed[:, 1].astype(np.uint64)


class KeepParams(OpParams):
    keep: Literal["first", "longest", "column"] = Field("first", description="which row of a group stays")
    keep_column: str | None = Field(None, description="with keep: column, the row with the highest value stays")

    @model_validator(mode="after")
    def _column(self):
        if self.keep == "column" and not self.keep_column:
            raise ValueError("keep: column needs keep_column")
        return self


def keep_value(batch: pa.Table, params: KeepParams, text_key: str) -> pa.Array | None:
    """The value a keep policy ranks rows by (None for keep: first)."""
    if params.keep == "longest":
        return pc.utf8_length(batch[text_key]).cast(pa.float64())
    if params.keep == "column":
        return batch[params.keep_column].cast(pa.float64())
    return None


class HashDedup(GlobalOp):
    """Shared machinery: fingerprint = 128-bit key hash (+ keep value); resolve = one row per key."""

    reason = "exact_duplicate"
    resources = Resources(cpus=1.0, memory_mb=512)
    partition_key = "h_lo"  # keys decide independently: the Ray executor resolves hash partitions in parallel
    metrics = {"duplicate_groups": "keys seen more than once"}

    def keys(self, batch: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(hash high, hash low, rows to leave out of deduplication or None)."""
        raise NotImplementedError

    def fingerprint(self, batch: pa.Table) -> pa.Table:
        hi, lo, skip = self.keys(batch)
        cols = {"h_hi": hi, "h_lo": lo, "skip": skip if skip is not None else np.zeros(len(hi), dtype=bool)}
        value = keep_value(batch, self.params, getattr(self.params, "field", None) or self.text_key)
        if value is not None:
            cols["value"] = value
        return pa.table(cols)

    def resolve(self, fingerprints: pl.LazyFrame) -> pl.DataFrame:
        """One row per key stays: the first in input order, or (keep: longest / column) the one with
        the highest value (null and NaN lowest), ties to input order; the others are dropped. Keys
        decide independently, so the rows are split by the top bits of ``h_hi`` into ``partitions``
        (above ``ROWS_PER_PARTITION`` rows: spilled to files, read back one at a time) and memory is
        bounded by a partition, not the corpus; the decisions, counters and distributions do not
        depend on the split (tests/operators/test_exact_partitions.py)."""
        with_value = self.params.keep != "first"
        shards, rows, sizes = [np.zeros(0, np.int32)], [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        for part in partitions(fingerprints, with_value):
            dup, size = duplicates(part["h_hi"], part["h_lo"], part["value"] if with_value else None)
            shards.append(part[SHARD][dup])
            rows.append(part[ROW][dup])
            sizes.append(size)
            del part, dup  # before the next partition is read
        size = np.concatenate(sizes)
        self.record("duplicate_groups", len(size))
        values, counts = np.unique(size, return_counts=True)  # ascending, as profile.json has them
        self.record_distribution("cluster_size", dict(zip(values.tolist(), counts.tolist(), strict=True)))
        out = pl.DataFrame({SHARD: np.concatenate(shards), ROW: np.concatenate(rows)})
        return drop_decisions(out.sort(SHARD, ROW), self.reason)


ROWS_PER_PARTITION = 1 << 19  # fingerprint rows resolved at once (docs/benchmarks.md, "Exact dedup's resolve in partitions")
READ_ROWS = 1 << 16  # fingerprint rows read by one query, about (``_reads``)
MAX_BITS = 9  # at most 512 partition files open at once (past ~270M rows, partitions grow)


def _record(with_value: bool) -> np.dtype:
    """One fingerprint row as resolve holds and spills it (28 bytes, 36 with the keep value)."""
    return np.dtype([("h_hi", "<u8"), ("h_lo", "<u8"), *([("value", "<f8")] if with_value else []),
                     (SHARD, "<i4"), (ROW, "<i8")])


def partitions(fingerprints: pl.LazyFrame, with_value: bool):
    """The rows of ``fingerprints`` that are not skipped, as record arrays (``_record``) in input
    order (``SHARD``, ``ROW``), one hash partition at a time: rows whose ``h_hi`` has the same top
    bits, so a key never spans two partitions. The fingerprint files (``passes.fingerprint_pieces``)
    are read once, a few at a time (``_reads``), and held while they hold at most
    ``ROWS_PER_PARTITION`` rows: one partition (a small run pays nothing more). Past that, the
    partition count is the rows expected (the rows per file so far times the files) over
    ``ROWS_PER_PARTITION``, rounded up to a power of two (at most ``2 ** MAX_BITS``), and every row
    is appended to its partition's file (as MinHash's band keys are, ``minhash._spill``); the files
    are read back one at a time. The partition count changes only how much is held at once, never a
    decision."""
    dtype = _record(with_value)
    pieces = fingerprint_pieces(fingerprints)
    held, n_held, sinks, tmp = [], 0, None, None
    try:
        for rec, files_read in _reads(pieces, dtype):
            if sinks is None:
                held.append(rec)
                n_held += len(rec)
                if n_held <= ROWS_PER_PARTITION:
                    continue
                expected = n_held * len(pieces) / files_read
                bits = min(MAX_BITS, max(1, math.ceil(math.log2(expected / ROWS_PER_PARTITION))))
                tmp = tempfile.TemporaryDirectory(prefix="thresher-exact-")
                sinks = [open(Path(tmp.name) / f"part-{p:04d}.bin", "wb") for p in range(1 << bits)]  # noqa: SIM115
                rec = None
                while held:
                    _spill(held.pop(0), sinks)
            else:
                _spill(rec, sinks)
            del rec
        if sinks is None:
            if held:
                out, at = np.empty(n_held, dtype), 0  # pages are mapped as they are filled, and each
                while held:  # part is let go once copied: memory for the rows plus one part
                    part = held.pop(0)
                    out[at:at + len(part)] = part
                    at += len(part)
                del part
                yield _in_order(out)
            return
        for f in sinks:
            f.close()
        trim_heap()  # what the reads freed goes back before the partitions are read
        for f in sinks:
            part = np.fromfile(f.name, dtype)
            Path(f.name).unlink()
            if len(part):
                yield _in_order(part)
            del part
            trim_heap()
    finally:
        for f in sinks or []:
            f.close()
        if tmp is not None:
            tmp.cleanup()


def _reads(pieces: list[pl.LazyFrame], dtype: np.dtype):
    """(records, files read so far) of the fingerprint files, ~``READ_ROWS`` rows (a few files) a
    query: polars reads the files of one query in parallel; the first query reads one file, to learn
    their size. Each file is queried through a copy of its frame: polars 2.1 keeps ~80 KB of a
    parquet file's metadata with the frame that read it, for as long as the frame lives (the caller
    holds the fingerprint frame to the end of the resolve: +50 MB for 600 files)."""
    i, n = 0, 1
    fresh = len(pieces) > 1  # a lone frame may hold data in memory: no copy of it
    while i < len(pieces):
        group = [_fresh(f) if fresh else f for f in pieces[i:i + n]]
        rec = _read(group, dtype)
        i += len(group)
        if rec is not None:
            n = max(1, min(64, READ_ROWS * len(group) // max(1, len(rec))))
            if len(rec):
                yield rec, i


def _fresh(frame: pl.LazyFrame) -> pl.LazyFrame:
    """The same query as a new frame, which keeps nothing it reads (serialised and read back)."""
    return pl.LazyFrame.deserialize(io.BytesIO(frame.serialize()))


def _read(pieces: list[pl.LazyFrame], dtype: np.dtype) -> np.ndarray | None:
    """The rows of some fingerprint files that are not skipped, as records; None where none of the
    files has the columns (a shard that fingerprinted no rows writes only ``SHARD`` and ``ROW``)."""
    frame = pl.concat(pieces, how="diagonal_relaxed") if len(pieces) > 1 else pieces[0]
    try:
        df = frame.filter(~pl.col("skip")).select(dtype.names).collect()
    except pl.exceptions.ColumnNotFoundError:
        return None
    rec = np.empty(df.height, dtype)
    for name in dtype.names:
        col = df[name]
        if name == "value":  # null and NaN rank lowest
            col = col.cast(pl.Float64).fill_null(float("-inf")).fill_nan(float("-inf"))
        rec[name] = col.to_numpy()
    return rec


def _spill(rec: np.ndarray, sinks: list) -> None:
    """Append records to their partition files (partition: the top bits of ``h_hi``), in order."""
    shift = np.uint64(64 - (len(sinks).bit_length() - 1))
    part = (rec["h_hi"] >> shift).astype(np.uint16)
    order = np.argsort(part, kind="stable")  # a radix sort: input order within each partition
    bounds = np.searchsorted(part[order], np.arange(len(sinks) + 1))
    rec = rec[order]
    for p, sink in enumerate(sinks):
        if bounds[p + 1] > bounds[p]:
            rec[bounds[p]:bounds[p + 1]].tofile(sink)


def _in_order(rec: np.ndarray) -> np.ndarray:
    """``rec`` sorted by (``SHARD``, ``ROW``): already so for a fingerprint frame (its files are read
    in input order), not always for another frame (a partition the Ray executor hands over)."""
    s, r = rec[SHARD], rec[ROW]
    if len(rec) < 2 or bool(np.all((s[1:] > s[:-1]) | ((s[1:] == s[:-1]) & (r[1:] > r[:-1])))):
        return rec
    return rec[np.lexsort((r, s))]


def duplicates(hi: np.ndarray, lo: np.ndarray, value: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Of rows in input order with keys (``hi``, ``lo``): the positions of the rows to drop
    (ascending) and the size of each group of rows sharing a key (groups of more than one). All but
    one row of a group go: the first, or with ``value`` the one with the highest value, ties to the
    first. Only rows whose ``hi`` repeats can share a key (``hi`` is a uniform 64-bit hash: a few
    percent of the rows): they are found with one sort of ``hi`` and ranked by a sort of their own."""
    s = np.sort(hi)
    repeated = s[1:][s[1:] == s[:-1]]
    del s
    if not len(repeated):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    repeated = np.unique(repeated)
    cand = []
    for a in range(0, len(hi), READ_ROWS):  # a slice at a time: no temporary the size of the partition
        h = hi[a:a + READ_ROWS]
        cand.append(np.flatnonzero(repeated[np.minimum(np.searchsorted(repeated, h), len(repeated) - 1)] == h) + a)
    cand = np.concatenate(cand)  # ascending: input order
    ch, cl = hi[cand], lo[cand]
    keys = (cand, cl, ch) if value is None else (cand, -value[cand], cl, ch)
    order = np.lexsort(keys)  # by key, then the highest value, then input order
    ch, cl = ch[order], cl[order]
    same = (ch[1:] == ch[:-1]) & (cl[1:] == cl[:-1])
    bounds = np.flatnonzero(np.r_[True, ~same, True])
    sizes = np.diff(bounds)
    return np.sort(cand[order][1:][same]), sizes[sizes > 1].astype(np.int64)


@register
class ExactDedup(HashDedup):
    """Remove exact duplicates of the normalised text (xxh3-128), keeping the first occurrence in input
    order (or the longest, or the highest value of a column)."""

    name = "exact_dedup"

    class Params(KeepParams):
        field: str | None = Field(None, description="column to compare (default: the recipe's text column)")
        lowercase: bool = Field(True, description="ignore case")
        whitespace: bool = Field(True, description="ignore differences in whitespace")
        punctuation: bool = Field(False, description="ignore punctuation and symbols")
        unicode: bool = Field(True, description="compare NFKC-normalised text")

    example = {"lowercase": True, "punctuation": False}

    def keys(self, batch: pa.Table):
        p = self.params
        col = batch[p.field or self.text_key]
        hi, lo = [], []
        for chunk in col.chunks if isinstance(col, pa.ChunkedArray) else [col]:
            h = hash_spans(*normalised_spans(chunk, p.lowercase, p.whitespace, p.punctuation, p.unicode))
            hi.append(h[0])
            lo.append(h[1])
        return (np.concatenate(hi) if hi else np.zeros(0, np.uint64), np.concatenate(lo) if lo else np.zeros(0, np.uint64),
                None)


TRACKING = re.compile(r"^(utm_\w+|fbclid|gclid|dclid|msclkid|mc_cid|mc_eid|yclid|_ga|ref_src)$", re.I)
DEFAULT_PORTS = {"http": "80", "https": "443"}


def normalise_url(url: str | None, drop_query: bool = False) -> str:
    """Scheme and host lower-cased, 'www.' and default ports dropped, fragment and tracking
    parameters removed, remaining query parameters sorted, trailing slash removed."""
    if not url:
        return ""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url.lstrip("/")
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.lower()
    scheme = (parts.scheme or "http").lower()
    host = (parts.hostname or "").lower().removeprefix("www.")
    if parts.port and str(parts.port) != DEFAULT_PORTS.get(scheme):
        host = f"{host}:{parts.port}"
    path = re.sub(r"/{2,}", "/", parts.path or "/").rstrip("/") or "/"
    query = "" if drop_query else urlencode(sorted((k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                                                  if not TRACKING.match(k)))
    return urlunsplit(("https" if scheme in ("http", "https") else scheme, host, path, query, ""))


@register
class UrlDedup(HashDedup):
    """Remove rows whose normalised URL was seen before (scheme, case, www., default ports, fragment,
    tracking parameters and parameter order do not count)."""

    name = "url_dedup"
    reason = "url_duplicate"

    class Params(KeepParams):
        url_key: str = Field("url", description="column holding the URL")
        drop_query: bool = Field(False, description="ignore the query string entirely")

    example = {"url_key": "url"}

    def keys(self, batch: pa.Table):
        p = self.params
        urls = batch.column(p.url_key).to_pylist() if p.url_key in batch.column_names else [None] * batch.num_rows
        hi, lo = hash128([normalise_url(u, p.drop_query) for u in urls])
        return hi, lo, np.array([not u for u in urls], dtype=bool)  # rows without a URL are left alone
