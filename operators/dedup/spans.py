"""Corpus-wide line / sentence-span deduplication (C4: "we discarded all but one of any
three-sentence span occurring more than once in the data set", Raffel et al. 2020, §2.2).

Every unit (a line, or a span of N consecutive sentences) is hashed after normalisation; across
the corpus one occurrence is kept — in the first document in input order, or in the longest
document, or in the one with the highest value of a column — and every other is removed from its
document. Documents left with nothing are dropped.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from thresher.operators.common.segments import join_kept, split_flat
from thresher.operators.common.tokenize import string_hashes
from thresher.operators.dedup.exact import KeepParams, keep_value
from thresher.pipeline.columns import ROW, SHARD, no_decisions, set_column, state_rows
from thresher.pipeline.ops import GlobalOp, Resources
from thresher.pipeline.registry import register

SENTENCE_END = r"([.!?])\s+"  # a sentence ends at . ! ? followed by whitespace
MARK = "\x1e"  # record separator: marks sentence boundaries before splitting


def units(text, unit: str, span: int) -> tuple[pa.Array, np.ndarray, int, str]:
    """All units of all documents, flat, with their document index; and the joiner. Column ops only:
    sentence boundaries are marked with a regex replace, split, then grouped N per span by polars."""
    if unit == "line":
        flat, parent, n = split_flat(text)
        return flat, parent, n, "\n"
    marked = pc.replace_substring_regex(pc.utf8_trim_whitespace(text), SENTENCE_END, "\\1" + MARK)
    sents, parent, n = split_flat(marked, MARK)
    df = pl.DataFrame({"doc": parent, "s": pl.from_arrow(sents)}).filter(pl.col("s") != "")
    spans = (df.with_columns((pl.int_range(pl.len()).over("doc") // span).alias("k"))
               .group_by(["doc", "k"], maintain_order=True).agg(pl.col("s").str.join(" ")))
    return spans["s"].to_arrow(), spans["doc"].to_numpy().astype(np.int64), n, " "


@register
class SpanDedup(GlobalOp):
    """Remove lines (or N-sentence spans) that already occurred earlier in the corpus, keeping the first
    occurrence (C4's span deduplication); documents left empty are dropped."""

    name = "span_dedup"
    resources = Resources(cpus=1.0, memory_mb=1024)
    metrics = {"spans_removed": "line / span occurrences removed"}

    class Params(KeepParams):
        unit: Literal["line", "sentences"] = Field("line", description="deduplicate whole lines, or spans of sentences")
        span: int = Field(3, ge=1, description="sentences per span (C4: 3)")
        min_chars: int = Field(20, ge=0, description="shorter units are never removed")
        lowercase: bool = Field(True, description="compare case-insensitively (whitespace is always collapsed)")

    example = {"unit": "sentences", "span": 3}

    def _hashes(self, text):
        p = self.params
        flat, parent, n_docs, joiner = units(text, p.unit, p.span)
        norm = pc.utf8_trim_whitespace(pc.replace_substring_regex(flat, r"\s+", " "))
        if p.lowercase:
            norm = pc.utf8_lower(norm)
        h = string_hashes(norm)
        h[pc.utf8_length(norm).to_numpy(zero_copy_only=False) < max(p.min_chars, 1)] = 0  # 0: never a duplicate
        return flat, parent, n_docs, joiner, h

    def fingerprint(self, batch: pa.Table) -> pa.Table:
        _flat, parent, n_docs, _j, h = self._hashes(batch[self.text_key])
        offsets = np.zeros(n_docs + 1, dtype=np.int32)
        np.cumsum(np.bincount(parent, minlength=n_docs), out=offsets[1:])
        cols = {"units": pa.ListArray.from_arrays(pa.array(offsets), pa.array(h, pa.uint64()))}
        value = keep_value(batch, self.params, self.text_key)
        if value is not None:
            cols["value"] = value
        return pa.table(cols)

    def resolve(self, fingerprints: pl.LazyFrame) -> pl.DataFrame:
        value = pl.col("value").fill_null(float("-inf")).fill_nan(float("-inf")) if self.params.keep != "first" \
            else pl.lit(0.0)
        exploded = (fingerprints.select(SHARD, ROW, pl.col("units"), value.alias("value"))
                    .with_columns(pl.int_ranges(0, pl.col("units").list.len()).alias("pos"))
                    .explode(["units", "pos"]).drop_nulls("units").filter(pl.col("units") != 0)
                    # the kept occurrence: highest value (longest / column), then input order
                    .sort(["value", SHARD, ROW, "pos"], descending=[True, False, False, False]))
        self.state = (exploded.filter(~pl.col("units").is_first_distinct())
                      .select(SHARD, ROW, pl.col("pos").cast(pl.Int64)).collect())
        return no_decisions()

    def apply(self, batch: pa.Table, shard: int, rows: np.ndarray):
        flat, parent, n_docs, joiner, _h = self._hashes(batch[self.text_key])
        remove = np.zeros(len(flat), dtype=bool)
        st, local = state_rows(self.state, shard, rows)
        if st is not None and st.height:
            starts = np.zeros(n_docs + 1, dtype=np.int64)
            np.cumsum(np.bincount(parent, minlength=n_docs), out=starts[1:])
            idx = starts[local] + st["pos"].to_numpy()
            remove[idx[idx < len(flat)]] = True
        self.record("spans_removed", int(remove.sum()))
        text = pc.utf8_trim_whitespace(join_kept(flat, parent, ~remove, n_docs, joiner))
        out = set_column(batch, self.text_key, text)
        return out, {"only_duplicate_spans": pc.equal(pc.utf8_length(text), 0).to_numpy(zero_copy_only=False)}
