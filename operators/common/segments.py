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


def per_doc_sum(values: np.ndarray, parent: np.ndarray, n_docs: int) -> np.ndarray:
    return np.bincount(parent, weights=np.asarray(values, dtype=np.float64), minlength=n_docs)


def replace_where(strings: pa.Array, hint: str, pattern: str, replacement: str) -> pa.Array:
    """``replace_substring_regex`` on only the strings that contain ``hint`` (a literal every
    match must contain): the regex engine never sees the rest."""
    if isinstance(strings, pa.ChunkedArray):
        strings = strings.combine_chunks()
    has = pc.match_substring(strings, hint).to_numpy(zero_copy_only=False)
    if not has.any():
        return strings
    idx = np.flatnonzero(has)
    fixed = pc.replace_substring_regex(strings.take(pa.array(idx)), pattern, replacement)
    # scatter the fixed strings back: one take over [strings, fixed]
    combined = pa.concat_arrays([strings.cast(pa.large_string()), fixed.cast(pa.large_string())])
    pick = np.arange(len(strings), dtype=np.int64)
    pick[idx] = len(strings) + np.arange(len(idx), dtype=np.int64)
    return combined.take(pa.array(pick)).cast(strings.type)
