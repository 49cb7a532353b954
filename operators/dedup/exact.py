"""Exact deduplication on a hash of normalised text: keep the first occurrence in input order."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from pydantic import Field

from pipeline.ops import GlobalOp, OpParams, Resources
from pipeline.registry import register

_PUNCT = r"[\p{P}\p{S}]"


def normalise(text: pa.ChunkedArray | pa.Array, lowercase: bool, whitespace: bool, punctuation: bool,
              unicode: bool) -> pa.Array:
    """The text that is hashed: each option removes one kind of difference that does not count."""
    t = text
    if unicode:
        t = pc.utf8_normalize(t, form="NFKC")
    if lowercase:
        t = pc.utf8_lower(t)
    if punctuation:
        t = pc.replace_substring_regex(t, _PUNCT, "")
    if whitespace:
        t = pc.utf8_trim_whitespace(pc.replace_substring_regex(t, r"\s+", " "))
    return t


def hash128(texts: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """xxh3-128 of each string as two uint64 arrays (high, low)."""
    values = texts.to_pylist() if not isinstance(texts, list) else texts
    digests = [xxhash.xxh3_128_intdigest(s.encode("utf-8")) for s in values]
    hi = np.fromiter((d >> 64 for d in digests), dtype=np.uint64, count=len(digests))
    lo = np.fromiter((d & 0xFFFFFFFFFFFFFFFF for d in digests), dtype=np.uint64, count=len(digests))
    return hi, lo


@register
class ExactDedup(GlobalOp):
    """Remove exact duplicates of the normalised text, keeping the first occurrence in input order."""

    name = "exact_dedup"
    resources = Resources(cpus=1.0, memory_mb=512)

    class Params(OpParams):
        lowercase: bool = Field(True, description="ignore case")
        whitespace: bool = Field(True, description="ignore differences in whitespace")
        punctuation: bool = Field(False, description="ignore punctuation and symbols")
        unicode: bool = Field(True, description="compare NFKC-normalised text")

    example = {"lowercase": True, "punctuation": False}

    def fingerprint(self, batch: pa.Table) -> pa.Table:
        p = self.params
        norm = normalise(batch[self.text_key], p.lowercase, p.whitespace, p.punctuation, p.unicode)
        hi, lo = hash128(norm)
        return pa.table({"h_hi": hi, "h_lo": lo})

    def resolve(self, fingerprints: pl.LazyFrame) -> pl.DataFrame:
        dup = (fingerprints.sort(["__shard", "__row"])
               .filter(~pl.struct("h_hi", "h_lo").is_first_distinct())
               .select("__shard", "__row", "h_hi", "h_lo")
               .collect())
        self.record("duplicate_groups", dup.select(pl.struct("h_hi", "h_lo").n_unique()).item() if dup.height else 0)
        return dup.select("__shard", "__row", pl.lit("exact duplicate").alias("__reason"))
