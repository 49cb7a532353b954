"""Exact deduplication: of rows whose key hashes alike (normalised text, or normalised URL), keep
one — the first in input order, the longest, or the one with the highest value of a column."""

from __future__ import annotations

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
    """NFKC of each string. Only the strings that are not NFKC already go to the normaliser: ASCII
    ones never do, and of the rest Python's quick check (``unicodedata.is_normalized``, a C call,
    no copy) passes most (of 70k non-ASCII web documents, 8k needed normalising: 5x less CPU)."""
    other = pc.fill_null(pc.invert(pc.string_is_ascii(t)), False)
    if not pc.any(other).as_py():
        return t
    idx = pc.indices_nonzero(other)
    need = [i for i, s in enumerate(pc.take(t, idx).to_pylist()) if not unicodedata.is_normalized("NFKC", s)]
    if not need:
        return t
    rows = idx.to_numpy()[need]
    mask = np.zeros(len(t), dtype=bool)
    mask[rows] = True
    return pc.replace_with_mask(t, pa.array(mask), pc.utf8_normalize(pc.take(t, pa.array(rows)), form="NFKC"))


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
    if not (pa.types.is_string(a.type) or pa.types.is_large_string(a.type)):
        a = a.cast(pa.string())  # string views, dictionaries
    a = pc.fill_null(a, "") if a.null_count else a
    wide = pa.types.is_large_string(a.type)
    _, offsets, data = a.buffers()
    bounds = np.frombuffer(offsets, dtype=np.int64 if wide else np.int32, count=len(a) + 1,
                           offset=a.offset * (8 if wide else 4)).tolist()
    mv = memoryview(data) if data is not None else memoryview(b"")
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
