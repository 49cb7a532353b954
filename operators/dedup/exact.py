"""Exact deduplication: of rows whose key hashes alike (normalised text, or normalised URL), keep
one — the first in input order, the longest, or the one with the highest value of a column."""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from pydantic import Field, model_validator

from thresher.pipeline.columns import ROW, SHARD, drop_decisions
from thresher.pipeline.ops import GlobalOp, OpParams, Resources
from thresher.pipeline.profile import row_of, utf8_buffers
from thresher.pipeline.registry import register

_PUNCT = r"[\p{P}\p{S}]"


def normalise(text: pa.ChunkedArray | pa.Array, lowercase: bool, whitespace: bool, punctuation: bool,
              unicode: bool) -> pa.Array:
    """The text that is hashed: each option removes one kind of difference that does not count."""
    if isinstance(text, pa.ChunkedArray):
        parts = [normalise(c, lowercase, whitespace, punctuation, unicode) for c in text.chunks]
        return pa.chunked_array(parts, type=parts[0].type) if parts else text
    t = text
    if unicode:
        t = nfkc(t)
    if lowercase:
        t = pc.utf8_lower(t)
    if punctuation:
        t = pc.replace_substring_regex(t, _PUNCT, "")
    if whitespace:
        # the same as replacing r"\s+" (RE2: [\t\n\f\r ]) by one space, ~4x faster: a lone space is left alone
        t = pc.utf8_trim_whitespace(pc.replace_substring_regex(t, _WS_RUN, " "))
    return t


_WS_RUN = r"[\t\n\f\r ]{2,}|[\t\n\f\r]"


def nfkc(t: pa.Array) -> pa.Array:
    """NFKC of each string, normalising only the few characters that need it. A character whose NFKC
    quick-check property is Yes and whose combining class is 0 starts a normalisation boundary (UAX #15,
    section 9): the text before it and from it on normalise apart. So each "unsafe" character (any
    other, ``_unsafe``), with the character before it (which it may compose with), is a segment; the
    segments (overlapping ones merged) go to Arrow's normaliser, and the results are spliced back in
    place. The characters are found with numpy over the UTF-8 data buffer (only non-ASCII lead bytes
    are decoded and looked up): no Python string per row. On 100k web documents, 71k of them with
    non-ASCII characters, ~9k hold an unsafe character, ~5 per document."""
    d, offs = utf8_buffers(t)
    lead = np.flatnonzero(d >= 0xC0)
    if not len(lead):
        return t
    b0 = d[lead].astype(np.int32)
    nxt = [d.take(lead + k, mode="clip").astype(np.int32) & 0x3F for k in (1, 2, 3)]
    cp = np.where(b0 < 0xE0, ((b0 & 0x1F) << 6) | nxt[0],
                  np.where(b0 < 0xF0, ((b0 & 0x0F) << 12) | (nxt[0] << 6) | nxt[1],
                           ((b0 & 0x07) << 18) | (nxt[0] << 12) | (nxt[1] << 6) | nxt[2]))
    bad = _unsafe(np.minimum(cp, 0x10FFFF))
    if not bad.any():
        return t
    pos = lead[bad]
    ends = pos + np.where(b0[bad] < 0xE0, 2, np.where(b0[bad] < 0xF0, 3, 4))
    row_start = offs[row_of(offs, pos)]
    starts = np.maximum(pos - 1, row_start)  # the character before, if the row has one
    for _ in range(3):  # back over continuation bytes to that character's first byte
        starts = np.where((starts > row_start) & ((d[starts] & 0xC0) == 0x80), starts - 1, starts)
    first = np.ones(len(pos), dtype=bool)  # merge overlapping segments (they lie in one row)
    first[1:] = starts[1:] >= ends[:-1]
    seg_start, seg_end = starts[first], ends[np.r_[first[1:], True]]
    lengths = seg_end - seg_start
    seg_offs = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=seg_offs[1:])
    gather = np.repeat(seg_start - seg_offs[:-1], lengths) + np.arange(seg_offs[-1])
    segments = pa.LargeStringArray.from_buffers(len(lengths), pa.py_buffer(seg_offs), pa.py_buffer(d[gather]))
    new_d, new_offs = utf8_buffers(pc.utf8_normalize(segments, form="NFKC"))
    src, rep, r = memoryview(d), memoryview(new_d), new_offs.tolist()
    joined: list = [None] * (2 * len(lengths) + 1)  # text before segment 0, segment 0 normalised, ...
    joined[0::2] = [src[a:b] for a, b in zip([0, *seg_end.tolist()], [*seg_start.tolist(), len(d)], strict=True)]
    joined[1::2] = [rep[a:b] for a, b in zip(r[:-1], r[1:], strict=True)]
    delta = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(np.diff(new_offs) - lengths, out=delta[1:])
    out_offs = offs + delta[np.searchsorted(seg_end, offs, side="right")]
    out = pa.LargeStringArray.from_buffers(len(t), pa.py_buffer(out_offs), pa.py_buffer(b"".join(joined)))
    if not pa.types.is_large_string(t.type) and int(out_offs[-1]) < 2**31 - 1:
        out = out.cast(t.type)
    return pc.if_else(pc.is_null(t), pa.scalar(None, out.type), out) if t.null_count else out


# Code point -> 0 not looked up yet, 1 NFKC-safe, 2 not (np.zeros: pages are mapped only where written).
_SAFETY = np.zeros(0x110000, dtype=np.uint8)
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


def _unsafe(cp: np.ndarray) -> np.ndarray:
    """Which of the code points ``cp`` NFKC may change a string holding (Python's ``unicodedata``):
    the character is not its own NFKC, has a combining class, or may compose with the character
    before it. Each distinct code point is looked up once per process."""
    new = np.unique(cp[_SAFETY[cp] == 0])
    if len(new):
        maybe = _maybe_starters()
        _SAFETY[new] = [2 if c in maybe or unicodedata.combining(ch := chr(c)) or not unicodedata.is_normalized("NFKC", ch)
                        else 1 for c in new.tolist()]
    return _SAFETY[cp] == 2


def hash128(texts: pa.Array | pa.ChunkedArray | list) -> tuple[np.ndarray, np.ndarray]:
    """xxh3-128 of each string as two uint64 arrays (high, low); nulls hash as ''. Arrow strings
    are hashed in place from their data buffer (no Python string per row)."""
    if isinstance(texts, list):
        views = [(s or "").encode("utf-8") for s in texts]
    else:
        chunks = texts.chunks if isinstance(texts, pa.ChunkedArray) else [texts]
        views = [v for c in chunks for v in _buffer_views(c)]
    if not views:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    packed = np.frombuffer(b"".join([xxhash.xxh3_128_digest(v) for v in views]), dtype=">u8").reshape(-1, 2)
    return packed[:, 0].astype(np.uint64), packed[:, 1].astype(np.uint64)


def _buffer_views(a: pa.Array) -> list[memoryview]:
    """Each string's UTF-8 bytes as a view into the array's data buffer; nulls as empty."""
    d, offs = utf8_buffers(a)
    mv, bounds = memoryview(d), offs.tolist()
    return [mv[s:e] for s, e in zip(bounds[:-1], bounds[1:], strict=True)]


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
        lf = fingerprints.filter(~pl.col("skip")).sort([SHARD, ROW]).with_row_index("__order")
        if self.params.keep == "first":
            dup = lf.filter(~pl.struct("h_hi", "h_lo").is_first_distinct())
        else:  # the highest value; ties to input order
            lf = lf.with_columns(pl.col("value").fill_null(float("-inf")).fill_nan(float("-inf")))
            dup = (lf.sort(["h_hi", "h_lo", "value", "__order"], descending=[False, False, True, False])
                   .filter(~pl.struct("h_hi", "h_lo").is_first_distinct()))
        dup = dup.select(SHARD, ROW, "h_hi", "h_lo").collect()
        groups = dup.group_by("h_hi", "h_lo").len()  # each group: its duplicates, plus the row kept
        self.record("duplicate_groups", groups.height)
        sizes = (groups["len"] + 1).value_counts()
        self.record_distribution("cluster_size", dict(zip(sizes[sizes.columns[0]].to_list(), sizes["count"].to_list(),
                                                          strict=True)))
        return drop_decisions(dup, self.reason)


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
        return (*hash128(normalise(batch[p.field or self.text_key], p.lowercase, p.whitespace, p.punctuation, p.unicode)), None)


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
