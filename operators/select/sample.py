"""Seeded random sampling: a fraction of the rows, exactly ``n`` rows, or ``n`` per stratum — the
same rows for any number of workers, any executor and any split of the input (``random_sample``;
its docstring gives the rules and guarantees).

Data-Juicer's ``random_selector`` draws with a random generator (``select_ratio`` / ``select_num``)
and datatrove's ``SamplerFilter`` keeps each document with probability ``rate`` from ``random``:
both change with the order and split of the data. The hash threshold here is the form trace samples
use (``docs/design.md``, "Trace samples"), and keeping the smallest hashes is the consistent
"bottom-k" sample (Cohen & Kaplan 2007).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl
import pyarrow as pa
from pydantic import Field, model_validator

from thresher.operators.common.fields import field_column
from thresher.operators.common.hashing import as_text, unit_interval, xxh64
from thresher.pipeline.columns import ROW, SHARD, drop_decisions
from thresher.pipeline.errors import FatalOpError
from thresher.pipeline.ops import Bound, Filter, GlobalOp, OpParams, Resources
from thresher.pipeline.registry import register

REASON = "not_sampled"


class SampleParams(OpParams):
    fraction: float | None = Field(None, ge=0, le=1, description="keep each row with this probability (a "
                                                                 "Bernoulli sample; per stratum: exactly this share)")
    n: int | None = Field(None, ge=0, description="keep exactly this many rows (split between strata in proportion "
                                                  "to their size when stratified)")
    per_stratum: int | None = Field(None, ge=0, description="keep this many rows of each stratum (needs stratify_by)")
    stratify_by: str | None = Field(None, description="a column or nested field whose values are the strata")
    key: str | None = Field(None, description="the column hashed to place rows in the random order (default: the "
                                              "row id); rows with equal keys are kept or dropped together")
    seed: int | None = Field(None, description="the random seed (default: the recipe's seed)")

    @model_validator(mode="after")
    def _one_size(self):
        given = [k for k in ("fraction", "n", "per_stratum") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of fraction, n and per_stratum")
        if self.per_stratum is not None and self.stratify_by is None:
            raise ValueError("per_stratum needs stratify_by (the column whose values are the strata)")
        return self


def _seed(op) -> int:
    return op.params.seed if op.params.seed is not None else op.ctx.seed


def _key_column(op, batch: pa.Table) -> tuple[pa.Array, bool]:
    """The values hashed for each row, and whether they are the row ids."""
    p = op.params
    if p.key is not None:
        return field_column(batch, p.key, op.ctx.key), p.key == op.ctx.id_key
    if op.ctx.id_key in batch.column_names:
        return field_column(batch, op.ctx.id_key, op.ctx.key), True
    if op.text_key and op.text_key in batch.column_names:
        return field_column(batch, op.text_key, op.ctx.key), False
    raise FatalOpError(f"{op.ctx.key}: the rows have no id column '{op.ctx.id_key}' (nor a text column) to hash; "
                       "set key to the column that identifies a row")


def scalar_text(op, values: pa.Array, what: str) -> pa.Array:
    """``values`` as text (``as_text``); a list or struct column is an error naming it."""
    t = values.type.value_type if pa.types.is_dictionary(values.type) else values.type
    if pa.types.is_nested(t):
        raise FatalOpError(f"{op.ctx.key}: {what} holds {t}; it must be text, numbers or booleans")
    return as_text(values)


def sample_hash(op, batch: pa.Table) -> tuple[np.ndarray, bool]:
    """Each row's 64-bit place in the seeded random order, and whether it was hashed from the id."""
    values, is_id = _key_column(op, batch)
    return xxh64(scalar_text(op, values, "the key column"), _seed(op)), is_id


@register
class RandomSample(Filter):
    """Keep a seeded random sample of the rows — a fraction, exactly n, or n per stratum — that is the
    same for any workers, executor or split of the input.

    Every row gets a place in one random order: XXH64 of its key (the row id by default) seeded with
    ``seed``, as ``sample_key`` in [0, 1). Nothing else — not the batch, the shard, the worker —
    enters, so:

    - ``fraction`` keeps a row iff ``sample_key < fraction``: a Bernoulli sample decided row by row
      in the streaming pass (no global phase), of about fraction x N rows (binomial: within
      3 sqrt(N f (1 - f)) almost always). A larger fraction keeps a superset: the 1 % sample lies
      inside the 10 % sample of the same seed.
    - ``n`` keeps exactly the n rows with the smallest keys (ties, which only rows with equal keys
      have, by the row id's text, then input order). That needs the whole corpus, so a global
      phase runs right after the op (ledger key ``<key>.exact``). The n-sample is the start of the
      same order: it lies inside every larger n-sample, and it is what a fraction of n/N keeps,
      give or take the binomial noise.
    - ``stratify_by`` (a column or nested field): ``n`` is split between the strata in proportion to
      their rows by largest remainder (Hamilton's method: each stratum gets floor(n x size / N),
      and the rows left over go to the strata with the largest remainders, ties by the stratum's
      text), so each stratum gets its exact share to within one row; ``per_stratum: k`` keeps k
      rows of each stratum (all of a smaller one); ``fraction`` keeps round(fraction x size) rows of
      each stratum, exactly, where the Bernoulli sample would give each stratum that share only on
      average. A null stratum value is a stratum of its own. Within a stratum the rows with the
      smallest keys stay, so these samples are nested too.

    ``key`` names the column that is hashed: rows with equal keys are kept or dropped together
    (``key: url`` samples whole pages, ``key: conversation_id`` whole conversations); a null key
    hashes as the empty string. Without ``key``, a table with no id column (one given to
    ``apply_op``) hashes its text column. Dropped rows have the reason ``not_sampled``.
    """

    name = "random_sample"
    reads_text = False
    stats = {"sample_key": "the row's place in the seeded random order, in [0, 1): a fraction keeps the rows "
                           "below it"}
    bounds = {"sample_key": (None, "fraction", False)}  # kept iff sample_key < fraction
    example = {"fraction": 0.1, "seed": 42}

    Params = SampleParams

    @property
    def exact(self) -> bool:
        """Whether a global phase decides (n, per_stratum, or a stratified fraction)."""
        return self.params.fraction is None or self.params.stratify_by is not None

    def thresholds(self) -> dict[str, Bound]:
        return {} if self.exact else super().thresholds()

    def expand(self) -> list:
        return [ExactSample(self.params, replace(self.ctx, key=f"{self.ctx.key}.exact"))] if self.exact else []

    def compute_stats(self, batch: pa.Table) -> dict[str, pa.Array]:
        h, _ = sample_hash(self, batch)
        return {"sample_key": pa.array(unit_interval(h), pa.float64())}

    def drop_reasons(self, stats: dict[str, pa.Array]) -> dict[str, np.ndarray]:
        if self.exact:
            return {}
        u = stats["sample_key"].to_numpy(zero_copy_only=False)
        return {REASON: u >= self.params.fraction}


class ExactSample(GlobalOp):
    """The global phase of ``random_sample`` for ``n``, ``per_stratum`` and a stratified ``fraction``:
    keep the rows with the smallest keys, per stratum as many as its quota."""

    name = "random_sample"
    reads_text = False
    resources = Resources(cpus=1.0, memory_mb=512)
    metrics = {"strata": "strata (distinct stratify_by values)"}
    Params = SampleParams

    def fingerprint(self, batch: pa.Table) -> pa.Table:
        p = self.params
        h, is_id = sample_hash(self, batch)
        cols: dict[str, pa.Array] = {"h": pa.array(h, pa.uint64())}
        if not is_id and self.ctx.id_key in batch.column_names:  # equal keys: the id decides
            cols["tie"] = scalar_text(self, field_column(batch, self.ctx.id_key, self.ctx.key), "the id column").cast(
                pa.large_string())
        if p.stratify_by is not None:
            stratum = field_column(batch, p.stratify_by, self.ctx.key)
            cols["stratum"] = scalar_text(self, stratum, f"stratify_by '{p.stratify_by}'").cast(pa.large_string())
        return pa.table(cols)

    def resolve(self, fingerprints: pl.LazyFrame) -> pl.DataFrame:
        p = self.params
        names = fingerprints.collect_schema().names()
        order = ["h", *(["tie"] if "tie" in names else []), SHARD, ROW]
        if "stratum" not in names:
            ranked = fingerprints.sort(order).with_row_index("rank")
            return drop_decisions(ranked.filter(pl.col("rank") >= p.n).collect(), REASON)
        df = fingerprints.sort(["stratum", *order], nulls_last=True).collect()
        sizes = df.group_by("stratum").len().sort("stratum", nulls_last=True)
        self.record("strata", sizes.height)
        quotas = pl.DataFrame({"stratum": sizes["stratum"], "quota": self.quotas(sizes["len"].to_list())},
                              schema={"stratum": pl.String, "quota": pl.Int64})
        ranked = df.with_columns(pl.int_range(pl.len()).over("stratum").alias("rank")).join(
            quotas, on="stratum", how="left", nulls_equal=True)
        return drop_decisions(ranked.filter(pl.col("rank") >= pl.col("quota")), REASON)

    def quotas(self, sizes: list[int]) -> list[int]:
        """Rows to keep of each stratum (sizes in the strata's order)."""
        p = self.params
        if p.per_stratum is not None:
            return [min(p.per_stratum, s) for s in sizes]
        if p.fraction is not None:
            return [min(s, int(_round_half_up(p.fraction * s))) for s in sizes]
        return largest_remainder(p.n, sizes)


def _round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


def largest_remainder(n: int, sizes: list[int]) -> list[int]:
    """``n`` (at most sum(sizes)) split in proportion to ``sizes`` by largest remainder (Hamilton):
    floor(n x size / total) each, and one more for the strata with the largest remainders (ties to
    the earlier stratum) until n are given; exact integer arithmetic, never more than a size."""
    total = sum(sizes)
    if n >= total:
        return list(sizes)
    base = [n * s // total for s in sizes]
    rest = n - sum(base)
    by_remainder = sorted(range(len(sizes)), key=lambda i: (-(n * sizes[i] % total), i))
    for i in by_remainder[:rest]:
        base[i] += 1
    return base
