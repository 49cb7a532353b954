"""Duplicate lines and paragraphs within each document, vectorised.

Split every document of the batch at once (pyarrow), hash all segments (polars), then count per
document by group-by: how many segments, how many repeat an earlier one, and how many characters
those repeats hold (a repeated segment has the same length as its first copy).
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc


def split_segments(text: pa.Array | pa.ChunkedArray, pattern: str, strip: bool = False) -> pa.ListArray:
    t = pc.utf8_trim_whitespace(text) if strip else text
    return pc.split_pattern_regex(t, pattern)


def segment_duplicates(segments: pa.ListArray | pa.ChunkedArray, drop_empty: bool = False
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per document: (number of segments, duplicate segments, characters in duplicate segments)."""
    if isinstance(segments, pa.ChunkedArray):
        segments = segments.combine_chunks()
    n_docs = len(segments)
    lengths = pc.list_value_length(segments).fill_null(0).to_numpy(zero_copy_only=False)
    doc = np.repeat(np.arange(n_docs, dtype=np.int64), lengths)
    flat = pl.from_arrow(pc.list_flatten(segments))
    df = pl.DataFrame({"doc": doc, "seg": flat})
    if drop_empty:
        df = df.filter(pl.col("seg").str.strip_chars() != "")
    df = df.with_columns(h=pl.col("seg").hash(seed=7), n=pl.col("seg").str.len_chars())
    g = (df.group_by(["doc", "h"]).agg(pl.len().alias("c"), pl.first("n"))
           .group_by("doc").agg(pl.col("c").sum().alias("total"), (pl.col("c") - 1).sum().alias("dups"),
                                ((pl.col("c") - 1) * pl.col("n")).sum().alias("dup_chars")))
    total = np.zeros(n_docs, dtype=np.int64)
    dups = np.zeros(n_docs, dtype=np.int64)
    dup_chars = np.zeros(n_docs, dtype=np.int64)
    idx = g["doc"].to_numpy()
    total[idx] = g["total"].to_numpy()
    dups[idx] = g["dups"].to_numpy()
    dup_chars[idx] = g["dup_chars"].to_numpy()
    return total, dups, dup_chars


def line_list(text: pa.Array | pa.ChunkedArray) -> pa.ListArray:
    """``str.splitlines()`` for \\n, \\r\\n and \\r endings: no empty last line after a final break."""
    t = pc.replace_substring_regex(text, r"(\r\n|\r|\n)$", "")
    return pc.split_pattern_regex(t, r"\r\n|\r|\n")
