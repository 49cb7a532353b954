"""Operator base classes: Mapper, Filter and the three-phase GlobalOp.

Every operator is a pure function of Arrow batches (``pyarrow.Table``). Parameters are a
pydantic model (``Params``), from which the recipe schema and ``thresher ops`` docs are made.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import polars as pl
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, model_validator

from thresher.pipeline.columns import DECISIONS_SCHEMA, REASON, ROW, SHARD


class OpParams(BaseModel):
    """Base of every op's parameter model: an unknown key is an error, and so is a value of the wrong
    type — nothing is coerced, so a YAML ``true`` for an int, ``"5"`` for an int or ``1`` for a bool
    fails validation (naming the op, the parameter, the type expected and the value given) instead
    of quietly becoming ``1``, ``5`` or ``True``. Defaults are validated too.

    This is pydantic's strict mode, which still takes everything YAML gives for the types op
    parameters use: an int for a float, a list for a ``list``, a string for a ``Literal``, a mapping
    for a nested model, ``null`` for an optional field. It does *not* take a list for a ``tuple``, a
    string for an ``Enum`` or a ``Path``: declare such parameters as ``list``, ``Literal`` and
    ``str``. A nested model has its own config and is strict only if that says so (``LLMConfig``
    does). A value that is a whole ``${VAR}`` (``min_words: ${MIN_WORDS:-50}``) is read as YAML when
    the parameter is not text, as ``--set`` values are, so numbers and booleans can come from the
    environment; inside longer strings, and for text parameters, it stays text."""

    model_config = ConfigDict(extra="forbid", validate_default=True, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _typed_env_values(cls, data: Any) -> Any:
        return typed_env_values(cls, data)


class FromEnv(str):
    """A recipe value that was a whole ``${VAR}``: text from the environment (see ``typed_env_values``)."""


def typed_env_values(model: type[BaseModel], data: Any) -> Any:
    """``data`` with each ``FromEnv`` value for a parameter that does not take text read as a YAML
    scalar (``"50"`` -> 50, ``"true"`` -> True): the environment only holds strings, and strict
    models would refuse them. Parameters that take text keep the string."""
    if not isinstance(data, dict) or not any(isinstance(v, FromEnv) for v in data.values()):
        return data
    import yaml

    out = dict(data)
    for key, value in data.items():
        field = model.model_fields.get(key)
        if isinstance(value, FromEnv) and field is not None and not _accepts_text(field.annotation):
            try:
                parsed = yaml.safe_load(str(value))
            except yaml.YAMLError:
                continue
            if parsed is None or isinstance(parsed, (bool, int, float)):
                out[key] = parsed
    return out


def _accepts_text(annotation: Any) -> bool:
    import types
    import typing

    if annotation is str:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return any(isinstance(a, str) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return any(_accepts_text(a) for a in typing.get_args(annotation))
    return False


@dataclass(frozen=True)
class Resources:
    """What one instance of an op needs; executors turn this into process/actor resources."""

    cpus: float = 1.0
    memory_mb: int = 0
    needs_model: bool = False  # loads a model: run in long-lived workers, load once per worker


@dataclass
class OpContext:
    """Run-wide facts an op may use: column names, the seed, its place in the recipe."""

    text_key: str = "text"
    id_key: str = "id"
    seed: int = 0
    index: int = 0  # position in the recipe's process list
    key: str = ""  # unique name of this op in the run (name, or name_2 when repeated)
    run_id: str = ""  # one id per run, kept by --resume (e.g. to tell what this run already paid for)
    attempt_id: str = ""  # one id per invocation: a resumed run's second attempt has a new one


class Op:
    """Base of all operators. Subclasses set ``name`` and ``Params`` and are registered."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[OpParams]] = OpParams
    stats: ClassVar[dict[str, str]] = {}  # stat name -> what it measures
    metrics: ClassVar[dict[str, str]] = {}  # ledger counters it records -> meaning
    example: ClassVar[dict[str, Any] | None] = None
    resources: ClassVar[Resources] = Resources()
    reads_text: ClassVar[bool] = True  # needs input.text_key (chat and preference ops do not)
    aliases: ClassVar[tuple[str, ...]] = ()  # former names recipes may still use (deprecated)
    # On an exception, the runner bisects the batch to quarantine only the rows that fail. Ops whose
    # calls cost something (LLM requests) set this False: they report per-row failures themselves,
    # and an exception quarantines the batch once instead of re-sending its rows.
    isolate_errors: ClassVar[bool] = True
    # Each call costs money (an LLM request): ``thresher analyze`` stops before such an op unless --llm.
    paid: ClassVar[bool] = False

    def __init__(self, params: OpParams | None = None, ctx: OpContext | None = None):
        self.params = params if params is not None else self.Params()
        self.ctx = ctx if ctx is not None else OpContext(key=self.name)
        self._counters: dict[str, int] = {}
        self._distributions: dict[str, dict] = {}
        self._ready = False

    # -- lifecycle -------------------------------------------------------------------------
    def prepare(self) -> None:
        """Run once in the driver before any worker starts: fetch assets (models, lists) into the
        cache so workers only read them. Errors here stop the run before data is read."""

    def expand(self) -> list[Op]:
        """Ops that run right after this one as part of it (e.g. a classifier's top-fraction selection,
        which needs a global phase). Their ledger keys are ``<this key>.<suffix>``."""
        return []

    def setup(self) -> None:
        """Load models or other heavy state. Called once per worker before the first batch."""

    def ensure_setup(self) -> None:
        if not self._ready:
            self.setup()
            self._ready = True

    # -- ledger counters -------------------------------------------------------------------
    def record(self, metric: str, n: int) -> None:
        """Add ``n`` to a named counter that ends up under this op in the ledger."""
        if n:
            self._counters[metric] = self._counters.get(metric, 0) + int(n)

    def take_counters(self) -> dict[str, int]:
        out, self._counters = self._counters, {}
        return out

    def record_distribution(self, name: str, counts: dict) -> None:
        """Add a discrete distribution this op measured (value -> count, e.g. duplicate-cluster
        size -> clusters); it ends up in the run's ``profile.json`` and its report."""
        from collections import Counter

        merged = Counter(self._distributions.get(name, {}))
        merged.update({str(k): int(v) for k, v in counts.items()})
        self._distributions[name] = dict(merged)

    def take_distributions(self) -> dict[str, dict]:
        out, self._distributions = self._distributions, {}
        return out

    @classmethod
    def summary(cls) -> str:
        """The docstring's first sentence (``first_sentence``), for ``thresher ops``, the table in
        docs/operators.md and the recipe schema."""
        return first_sentence(cls.__doc__ or "")

    @classmethod
    def kind(cls) -> str:
        raise NotImplementedError

    @property
    def text_key(self) -> str:
        return self.ctx.text_key


# words whose final "." does not end a sentence ("Rae et al. 2021, App. A", "e.g. the")
_ABBREVIATIONS = ("e.g.", "i.e.", "et al.", "cf.", "vs.", "approx.", "app.", "fig.", "sec.", "eq.", "no.")


def first_sentence(text: str) -> str:
    """The first sentence of a docstring or a recipe's description, for one-line listings.

    The first *line* is often cut mid-sentence (docstrings wrap at 110 columns), so the first
    paragraph's lines are joined (a line ending in "/" joins without a space) and cut after the
    first ".", "?" or "!" that is followed by a capital letter (or a bracket or quote, then a
    capital) — not after an abbreviation such as "et al." — or else at the paragraph's end."""
    import re

    lines: list[str] = []
    for line in text.strip().splitlines():
        if not line.strip():
            break
        lines.append(line.strip())
    para = ""
    for line in lines:
        para += line if not para or para.endswith("/") else " " + line
    for m in re.finditer(r"[.!?](?=\s+[(\"'`]*[A-Z])", para):
        if not para[: m.end()].lower().endswith(_ABBREVIATIONS):
            return para[: m.end()]
    return para


@dataclass
class MapResult:
    """What a mapper may return instead of a table: rows to drop (``{reason: mask}``) and rows to
    quarantine (per row, the reason or None). Both align with ``table``; quarantined rows leave the
    output and go to ``quarantine/`` with their reason (a 1:1 mapper's as they came in; a 1:N
    mapper marks a placeholder row that carries its source); the ledger counts them by the
    reason's text before any " (" (the details)."""

    table: pa.Table
    drop: dict[str, Any] | None = None
    quarantine: list[str | None] | None = None


class Mapper(Op):
    """batch -> batch. One output row per input row unless ``one_to_many`` is set.

    A 1:1 mapper may also return ``(batch, {reason: mask})`` to drop rows it could not produce
    (e.g. an HTML page with no main text); the masks align with the returned batch and each
    dropped row is recorded with its reason, as a filter's are. A ``MapResult`` can also send
    broken rows to quarantine with a reason."""

    one_to_many: ClassVar[bool] = False

    @classmethod
    def kind(cls) -> str:
        return "mapper"

    def process(self, batch: pa.Table) -> pa.Table:
        raise NotImplementedError


@dataclass(frozen=True)
class Bound:
    """A filter's threshold on one stat: rows under ``lo`` or over ``hi`` fail it (None: no bound).
    ``lo_param``/``hi_param`` name the parameter that sets each bound, as a path into the op's
    parameters (``min_words``, or ``top_n_grams.2`` for a key of a dict parameter), so that
    ``thresher analyze --suggest`` can write a new value back into the recipe. ``inclusive``: a
    value equal to a bound passes (see ``columns.bounds_masks``)."""

    lo: float | None = None
    hi: float | None = None
    lo_param: str | None = None
    hi_param: str | None = None
    inclusive: bool = True

    def masks(self, values) -> tuple[np.ndarray, np.ndarray]:
        """(below, above) for ``values``: which rows this bound puts outside."""
        from thresher.pipeline.columns import bounds_masks

        return bounds_masks(values, self.lo, self.hi, inclusive=self.inclusive)


def param_at(params: BaseModel, path: str) -> Any:
    """The value at a parameter path (``min_words``; ``top_n_grams.2`` for a key of a dict)."""
    head, _, rest = path.partition(".")
    value = getattr(params, head)
    if rest:
        if not isinstance(value, dict):
            raise KeyError(path)
        for key in (rest, int(rest) if rest.lstrip("-").isdigit() else None):
            if key in value:
                return value[key]
        return None
    return value


class Filter(Op):
    """Two phases: ``compute_stats`` (kept for analysis), then ``keep`` from the stats alone.

    Subclasses implement ``compute_stats`` and ``drop_reasons``; a row is dropped when any
    reason's mask is true, and the first true reason (in the order returned) is recorded.

    ``bounds`` declares which parameters bound which stat (``{"num_words": ("min_words",
    "max_words")}``; a third element False makes the bounds exclusive): the report draws them on
    each stat's histogram with the share they drop, and ``thresher analyze --suggest`` proposes
    new values for them. A filter whose rule is not a plain bound overrides ``thresholds``.
    """

    # stats that are also written to the row as columns (e.g. ``lang``, ``quality_score``)
    columns: ClassVar[tuple[str, ...]] = ()
    # stat -> (parameter of the lower bound, parameter of the upper bound[, inclusive])
    bounds: ClassVar[dict[str, tuple]] = {}

    def thresholds(self) -> dict[str, Bound]:
        """The thresholds in force, per stat (from ``bounds`` and the parameters); a bound whose
        parameter is null (rule switched off) is None."""
        out = {}
        for stat, spec in self.bounds.items():
            lo_p, hi_p = spec[0], spec[1]
            inclusive = spec[2] if len(spec) > 2 else True
            lo = param_at(self.params, lo_p) if lo_p else None
            hi = param_at(self.params, hi_p) if hi_p else None
            if lo is None and hi is None:
                continue
            out[stat] = Bound(_num(lo), _num(hi), lo_p, hi_p, inclusive)
        return out

    @classmethod
    def kind(cls) -> str:
        return "filter"

    def compute_stats(self, batch: pa.Table) -> dict[str, pa.Array]:
        raise NotImplementedError

    def drop_reasons(self, stats: dict[str, pa.Array]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def keep(self, stats: dict[str, pa.Array]) -> np.ndarray:
        n = len(next(iter(stats.values()))) if stats else 0
        return first_failing(self.drop_reasons(stats), n)[0]


def _num(v):
    return None if v is None else float(v)


def first_failing(reasons: dict[str, Any], n: int) -> tuple[np.ndarray, np.ndarray]:
    """The drop decision for ``n`` rows from ``{reason: mask}`` (a filter's ``drop_reasons``, or
    what a mapper or a global op's apply returns): a row is dropped when any mask is true for it,
    and its recorded reason is the *first* true one in the dict's order (rule order).

    Returns ``(keep, reason_index)``: ``keep[i]`` is False for a dropped row, and
    ``reason_index[i]`` is the position in ``list(reasons)`` of row i's first failing rule, or -1
    for a kept row. The runner records drops with it, so every executor (and ``Filter.keep``)
    decides alike."""
    reason_index = np.full(n, -1, dtype=np.int32)
    for j, mask in enumerate(reasons.values()):
        reason_index[(reason_index < 0) & np.asarray(mask, dtype=bool)] = j
    return reason_index < 0, reason_index


@dataclass
class Decisions:
    """What resolve decided for the rows of one shard: rows to drop (by row ordinal) with reasons,
    and optionally columns to add to every row (e.g. ``dup_cluster`` in mark mode)."""

    drop_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    drop_reasons: list[str] = field(default_factory=list)
    add_columns: dict[str, pa.Array] = field(default_factory=dict)


class GlobalOp(Op):
    """Three phases: ``fingerprint`` each batch (local, parallel), ``resolve`` over all
    fingerprints (global), ``apply`` the decisions to each batch (local).

    Fingerprints are tables with one row per input row; the executor adds ``__shard`` and
    ``__row`` (the row's ordinal within its shard) so ``resolve`` can refer to rows.
    ``resolve`` returns a polars DataFrame with columns ``__shard``, ``__row``, ``__reason``
    (one row per row to drop) plus any extra columns ``apply`` wants. The names are
    ``SHARD``, ``ROW`` and ``REASON`` in ``pipeline.columns``, whose ``drop_decisions`` and
    ``no_decisions`` build such frames.
    """

    @classmethod
    def kind(cls) -> str:
        return "global"

    def fingerprint(self, batch: pa.Table) -> pa.Table:
        raise NotImplementedError

    def resolve(self, fingerprints):  # polars.LazyFrame -> polars.DataFrame
        raise NotImplementedError

    # Optional: state that ``resolve`` leaves for the apply phase (a polars DataFrame, e.g. the
    # set of boilerplate line hashes). The executor saves it beside the decisions and hands it
    # back with ``set_state`` in every worker before ``apply`` runs on the kept rows.
    state = None

    def set_state(self, state) -> None:
        self.state = state

    # Optional: a fingerprint column by which resolve is separable (rows with different values never
    # affect each other's decisions). The Ray executor then resolves hash partitions of it in parallel.
    partition_key: str | None = None

    def resolve_distributed(self, fingerprints, shuffle):
        """Resolve on a cluster with the executor's shuffle primitives
        (``pipeline.executors.ray_shuffle.RayShuffle``), never bringing every fingerprint to one
        process. Returns what ``resolve`` returns, or None to let the executor call ``resolve`` in
        the driver. Default: ``resolve`` on each hash partition of ``partition_key``."""
        if self.partition_key is None:
            return None
        parts = shuffle.group(fingerprints, self.partition_key, functools.partial(_resolve_partition, self))
        out = shuffle.collect(parts, {**DECISIONS_SCHEMA, COUNTERS: pl.Utf8})
        for measured in out.filter(pl.col(SHARD) < 0)[COUNTERS].to_list():
            measured = json.loads(measured)
            for k, v in measured["counters"].items():
                self.record(k, v)
            for name, counts in measured["distributions"].items():
                self.record_distribution(name, counts)
        return out.filter(pl.col(SHARD) >= 0).drop(COUNTERS)

    def apply(self, batch: pa.Table, shard: int, rows: np.ndarray):
        """Transform the rows resolve kept (1:1); ``rows`` are their ordinals in the shard (the
        ``__row`` of their fingerprints). May return ``(batch, {reason: mask})`` to drop rows it
        emptied, like a mapper. Default: unchanged."""
        return batch


COUNTERS = "__counters"


def _resolve_partition(op: GlobalOp, df):
    """``resolve`` on one partition (in a Ray worker); its counters and distributions ride along in
    one extra row."""
    decided = op.resolve(df.lazy()).select(SHARD, ROW, REASON)
    measured = json.dumps({"counters": op.take_counters(), "distributions": op.take_distributions()})
    counters = pl.DataFrame({SHARD: [-1], ROW: [-1], REASON: [""], COUNTERS: [measured]},
                            schema={**DECISIONS_SCHEMA, COUNTERS: pl.Utf8})
    return pl.concat([decided.cast({SHARD: pl.Int32, ROW: pl.Int64}).with_columns(pl.lit(None, pl.Utf8).alias(COUNTERS)),
                      counters])
