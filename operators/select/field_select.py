"""Field selections over the whole corpus: rows whose field ranks within a range, or whose value is
among the most frequent ones (Data-Juicer's ``range_specified_field_selector`` and
``frequency_specified_field_selector``; the mapping of all its field ops is in ``select/fields.py``).

Both are global ops: a row's rank or its value's frequency depends on every other row. Ties are
broken deterministically (input order for ranks, the value's text for frequencies), so the result
does not depend on workers or executor. A row whose field is null fails with ``missing_field``.
"""

from __future__ import annotations

import math
from fractions import Fraction

import polars as pl
import pyarrow as pa
from pydantic import Field, model_validator

from thresher.operators.common.fields import FieldParams, as_numbers, field_column
from thresher.operators.common.hashing import as_text
from thresher.pipeline.columns import ROW, SHARD, drop_decisions
from thresher.pipeline.errors import FatalOpError
from thresher.pipeline.ops import GlobalOp, Resources
from thresher.pipeline.registry import register

MISSING = "missing_field"


def share_of(p: float, n: int) -> int:
    """floor(p * n) with p read as the decimal it was written as (0.29 * 100 is 29, not 28)."""
    return math.floor(Fraction(repr(p)) * n)


@register
class FieldRankSelect(GlobalOp):
    """Keep the rows whose numeric field ranks within a range of the whole corpus, given by
    percentiles or ranks (Data-Juicer's ``range_specified_field_selector``).

    Rows are sorted by the field, smallest first (``descending``: largest first), ties in input
    order, and ranked 0, 1, ... among the N rows that have a number. The rows kept are those
    ranked from ``lower`` up to but not including ``upper``, like Python's ``sorted_rows[lower:upper]``,
    where ``lower`` is the larger of ``lower_rank`` and floor(``lower_percentile`` x N) and
    ``upper`` the smaller of ``upper_rank`` and floor(``upper_percentile`` x N) — so percentile
    ranges that meet (0-0.3, 0.3-1) split the rows exactly. Values are read as ``field_range_filter``
    reads them; a null field fails with ``missing_field``, a value that is not a number with
    ``not_numeric``, a row outside the range with ``outside_rank_range``.
    """

    name = "field_rank_select"
    reads_text = False
    resources = Resources(cpus=1.0, memory_mb=512)
    example = {"field": "perplexity", "lower_percentile": 0.1, "upper_percentile": 0.9}

    class Params(FieldParams):
        field: str = Field(description="the column or nested field (meta.score) to rank by")
        lower_percentile: float | None = Field(None, ge=0, le=1, description="keep rows from this share of the ranking on")
        upper_percentile: float | None = Field(None, ge=0, le=1, description="keep rows below this share of the ranking")
        lower_rank: int | None = Field(None, ge=0, description="keep rows from this rank on (0 is the first)")
        upper_rank: int | None = Field(None, ge=0, description="keep rows ranked below this")
        descending: bool = Field(False, description="rank the largest value first")

        @model_validator(mode="after")
        def _some_bound(self):
            if all(v is None for v in (self.lower_percentile, self.upper_percentile, self.lower_rank, self.upper_rank)):
                raise ValueError("give a lower or an upper bound (lower_/upper_percentile, lower_/upper_rank)")
            return self

    def fingerprint(self, batch: pa.Table) -> pa.Table:
        p = self.params
        values, missing = as_numbers(field_column(batch, p.field, self.ctx.key, p.absent_columns), self.ctx.key, p.field)
        return pa.table({"value": pa.array(values, pa.float64()), "missing": pa.array(missing)})

    def resolve(self, fingerprints: pl.LazyFrame) -> pl.DataFrame:
        p = self.params
        df = fingerprints.select(SHARD, ROW, "value", "missing").collect()
        valid = df.filter(~pl.col("missing") & pl.col("value").is_not_nan())
        n = valid.height
        lower = max(share_of(p.lower_percentile, n) if p.lower_percentile is not None else 0, p.lower_rank or 0)
        upper = min(share_of(p.upper_percentile, n) if p.upper_percentile is not None else n,
                    p.upper_rank if p.upper_rank is not None else n)
        ranked = valid.sort(["value", SHARD, ROW], descending=[p.descending, False, False]).with_row_index("rank")
        outside = ranked.filter((pl.col("rank") < lower) | (pl.col("rank") >= upper))
        return pl.concat([drop_decisions(df.filter(pl.col("missing")), MISSING),
                          drop_decisions(df.filter(~pl.col("missing") & pl.col("value").is_nan()), "not_numeric"),
                          drop_decisions(outside, "outside_rank_range")])


@register
class FieldFrequencySelect(GlobalOp):
    """Keep the rows whose field value is among the most frequent values of the whole corpus: the top
    ``top_k`` values, or the top ``top_ratio`` share of the distinct values (Data-Juicer's
    ``frequency_specified_field_selector``).

    Distinct values are ordered by their number of rows, most first (``least_frequent``: fewest
    first), ties by the value's text, and the first ``top_k`` — or floor(``top_ratio`` x distinct
    values) — are kept with all their rows; with both, the smaller number of values. Values are
    compared as text (``2020`` and ``"2020"`` are one value). A null value fails with
    ``missing_field``, any other row not kept with ``not_in_top_values``.
    """

    name = "field_frequency_select"
    reads_text = False
    resources = Resources(cpus=1.0, memory_mb=512)
    metrics = {"values_kept": "distinct values whose rows were kept", "values": "distinct values seen"}
    example = {"field": "meta.source", "top_k": 10}

    class Params(FieldParams):
        field: str = Field(description="the column or nested field (meta.source) whose values are counted")
        top_k: int | None = Field(None, ge=1, description="keep the rows of this many values")
        top_ratio: float | None = Field(None, gt=0, le=1, description="keep the rows of this share of the distinct values")
        least_frequent: bool = Field(False, description="order values by fewest rows first (keep the rarest)")

        @model_validator(mode="after")
        def _some_size(self):
            if self.top_k is None and self.top_ratio is None:
                raise ValueError("give top_k or top_ratio (or both: the smaller applies)")
            return self

    def fingerprint(self, batch: pa.Table) -> pa.Table:
        p = self.params
        col = field_column(batch, p.field, self.ctx.key, p.absent_columns)
        t = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
        if pa.types.is_nested(t):
            raise FatalOpError(f"{self.ctx.key}: field '{p.field}' holds {t}; its values must be text, numbers "
                               "or booleans to be counted")
        return pa.table({"value": as_text(col).cast(pa.large_string())})

    def resolve(self, fingerprints: pl.LazyFrame) -> pl.DataFrame:
        p = self.params
        df = fingerprints.select(SHARD, ROW, "value").collect()
        counts = df.filter(pl.col("value").is_not_null()).group_by("value").len()
        distinct = counts.height
        k = min(p.top_k if p.top_k is not None else distinct,
                share_of(p.top_ratio, distinct) if p.top_ratio is not None else distinct)
        kept = counts.sort(["len", "value"], descending=[not p.least_frequent, False]).head(k).select("value")
        self.record("values", distinct)
        self.record("values_kept", kept.height)
        missing = df.filter(pl.col("value").is_null())
        others = df.filter(pl.col("value").is_not_null()).join(kept, on="value", how="anti")
        return pl.concat([drop_decisions(missing, MISSING), drop_decisions(others, "not_in_top_values")])

