"""Top-k / top-fraction selection by a score column, optionally stratified by a category column."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
from pydantic import Field, model_validator

from thresher.pipeline.columns import ROW, SHARD, drop_decisions
from thresher.pipeline.ops import GlobalOp, OpParams, Resources
from thresher.pipeline.registry import register


class SizeParams(OpParams):
    """Params of a selection that keeps ``k`` rows or a ``fraction`` of them (the subclass declares
    both fields, with its own bounds): exactly one must be given."""

    @model_validator(mode="after")
    def _one_size(self):
        if (self.k is None) == (self.fraction is None):
            raise ValueError("give exactly one of k and fraction")
        return self


@register
class SelectTop(GlobalOp):
    """Keep the k (or the fraction) of rows with the highest score, over the whole corpus or per
    category; ties are broken by input order, so the choice is deterministic."""

    name = "top_select"
    aliases = ("select_top",)
    reads_text = False
    resources = Resources(cpus=1.0, memory_mb=512)

    class Params(SizeParams):
        column: str = Field(description="numeric score column (e.g. quality_score)")
        k: int | None = Field(None, ge=0, description="keep this many rows (per category when stratified)")
        fraction: float | None = Field(None, gt=0, le=1, description="keep this share of rows (per category when stratified)")
        descending: bool = Field(True, description="highest scores first")
        stratify_by: str | None = Field(None, description="category column: select within each category")

    example = {"column": "quality_score", "fraction": 0.3}

    def fingerprint(self, batch: pa.Table) -> pa.Table:
        p = self.params
        cols = {"score": batch.column(p.column).cast(pa.float64())}
        if p.stratify_by:
            cols["group"] = batch.column(p.stratify_by).cast(pa.string())
        return pa.table(cols)

    def resolve(self, fingerprints: pl.LazyFrame) -> pl.DataFrame:
        p = self.params
        df = fingerprints.sort([SHARD, ROW]).with_row_index("__order").collect()
        if "group" not in df.columns:
            df = df.with_columns(pl.lit("").alias("group"))
        score = pl.col("score").fill_null(float("-inf") if p.descending else float("inf")).fill_nan(
            float("-inf") if p.descending else float("inf"))
        df = df.with_columns(score.alias("s"))
        ranked = df.sort(["group", "s", "__order"], descending=[False, p.descending, False]).with_columns(
            pl.int_range(pl.len()).over("group").alias("rank"), pl.len().over("group").alias("size"))
        limit = pl.lit(p.k) if p.k is not None else (pl.col("size") * p.fraction).round(0).cast(pl.Int64)
        dropped = ranked.filter(pl.col("rank") >= limit)
        return drop_decisions(dropped, "not_in_top")
