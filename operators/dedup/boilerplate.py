"""Boilerplate-line removal by corpus frequency: a line that occurs in more than N documents
(navigation, cookie banners, footers) is removed everywhere. A global op: every document's
distinct line hashes are counted across the whole corpus before any line is removed, the way
CCNet-style line deduplication works (Wenzek et al. 2020, "CCNet", §3.1)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from thresher.operators.common.segments import join_kept, split_flat
from thresher.operators.common.tokenize import string_hashes
from thresher.pipeline.columns import no_decisions, set_column
from thresher.pipeline.ops import GlobalOp, OpParams, Resources
from thresher.pipeline.registry import register


def _normalised_lines(text, lowercase: bool):
    flat, parent, n_docs = split_flat(text)
    norm = pc.utf8_trim_whitespace(pc.replace_substring_regex(flat, r"\s+", " "))
    if lowercase:
        norm = pc.utf8_lower(norm)
    return flat, norm, parent, n_docs


@register
class BoilerplateLineRemove(GlobalOp):
    """Remove lines that occur in more than N documents of the corpus (navigation, banners, footers);
    documents left with no text are dropped."""

    name = "boilerplate_line_remove"
    resources = Resources(cpus=1.0, memory_mb=1024)
    metrics = {"boilerplate_lines": "distinct lines found in more than max_docs documents",
               "lines_removed": "line occurrences removed"}

    class Params(OpParams):
        max_docs: int = Field(10, ge=1, description="a line in more documents than this is boilerplate")
        min_line_chars: int = Field(1, ge=0, description="shorter lines are never counted or removed")
        lowercase: bool = Field(True, description="compare lines case-insensitively (whitespace is always collapsed)")

    example = {"max_docs": 10}

    def fingerprint(self, batch: pa.Table) -> pa.Table:
        p = self.params
        _flat, norm, parent, n_docs = _normalised_lines(batch[self.text_key], p.lowercase)
        long = pc.utf8_length(norm).to_numpy(zero_copy_only=False) >= max(p.min_line_chars, 1)
        h = string_hashes(norm)
        # distinct line hashes per document, as a list column built from offsets (documents are in order)
        df = pl.DataFrame({"doc": parent[long], "h": h[long]}).unique(maintain_order=True)
        offsets = np.zeros(n_docs + 1, dtype=np.int32)
        np.cumsum(np.bincount(df["doc"].to_numpy(), minlength=n_docs), out=offsets[1:])
        return pa.table({"line_hashes": pa.ListArray.from_arrays(pa.array(offsets), pa.array(df["h"].to_numpy()))})

    def resolve(self, fingerprints: pl.LazyFrame) -> pl.DataFrame:
        counts = (fingerprints.select(pl.col("line_hashes").explode().alias("h")).drop_nulls()
                  .group_by("h").agg(pl.len().alias("docs")))
        self.state = counts.filter(pl.col("docs") > self.params.max_docs).select("h").collect()
        self.record("boilerplate_lines", self.state.height)
        return no_decisions()

    def apply(self, batch: pa.Table, shard: int, rows: np.ndarray):
        p = self.params
        bad = self.state["h"].to_numpy() if self.state is not None else np.zeros(0, np.uint64)
        flat, norm, parent, n_docs = _normalised_lines(batch[self.text_key], p.lowercase)
        long = pc.utf8_length(norm).to_numpy(zero_copy_only=False) >= max(p.min_line_chars, 1)
        remove = long & np.isin(string_hashes(norm), bad)
        self.record("lines_removed", int(remove.sum()))
        text = pc.utf8_trim_whitespace(join_kept(flat, parent, ~remove, n_docs))
        out = set_column(batch, self.text_key, text)
        empty = pc.equal(pc.utf8_length(text), 0).to_numpy(zero_copy_only=False)
        return out, {"only_boilerplate": empty}
