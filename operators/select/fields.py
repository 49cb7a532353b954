"""Field filters: keep rows by the values of their fields — a SQL condition on any columns, a value
in a list (tags of a list field too), a numeric range, a file suffix.

A field is a column or a nested field with dots (``meta.lang``: field ``lang`` of the struct column
``meta``; a column whose own name has a dot wins). A row whose field is null (or absent, with
``absent_columns: null``) fails with ``missing_field``, never with the rule's own reason, so the
ledger tells "no value" from "a value we do not want". A column that no row of a batch has stops
the run with a one-line error naming it and the columns there are (``absent_columns: error``, the
default), so a typo does not quietly drop everything.

Data-Juicer's field ops and where they went (this module and ``select/field_select.py``):

| Data-Juicer | thresher |
|---|---|
| ``general_field_filter`` (a Python-syntax condition) | ``field_filter`` (a SQL condition) |
| ``specified_field_filter`` (value in ``target_value``; for a list, every element) | ``field_value_filter`` with ``match: only`` |
| ``tags_specified_field_selector`` (value in ``target_tags``) | ``field_value_filter`` (``match: any``) |
| rows whose list field has any / all of some tags | ``field_value_filter``, ``match: any`` / ``all`` |
| ``specified_numeric_field_filter`` (``min_value <= x <= max_value``) | ``field_range_filter`` |
| ``suffix_filter`` (the source file's suffix in a list) | ``suffix_filter`` on a column holding a file name, path or URL |
| ``range_specified_field_selector`` (rows between percentiles or ranks) | ``field_rank_select`` (global) |
| ``frequency_specified_field_selector`` (the top-k / top-ratio most frequent values) | ``field_frequency_select`` (global) |
| ``topk_specified_field_selector`` | ``top_select`` (``select/topk.py``) |
| ``random_selector`` | ``random_sample`` (``select/sample.py``) |
"""

from __future__ import annotations

import re
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator, model_validator

from thresher.operators.common.fields import FieldParams, as_numbers, field_column, problem, with_null_fields
from thresher.operators.common.sql import FUNCTIONS, Condition, ConditionError, compile_condition
from thresher.pipeline.columns import bounds_masks
from thresher.pipeline.errors import FatalOpError
from thresher.pipeline.ops import Filter
from thresher.pipeline.registry import register

MISSING = "missing_field"
_REASON = re.compile(r"[a-z][a-z0-9_]*")


# ----------------------------------------------------------------------------- field_filter
@register
class FieldFilter(Filter):
    """Keep rows for which a condition on their fields, written in SQL, holds
    (``judge_score >= 7 AND lang IN ('en', 'de')``).

    The condition is compiled by polars' own SQL parser (``polars.sql_expr``) into one vectorised
    expression — never evaluated as Python — and checked when the recipe is validated, so a syntax
    error, a sub-query or a function that is not row-wise is a recipe error before any data is read.
    It may use comparisons, ``AND``/``OR``/``NOT``, ``IN``, ``BETWEEN``, ``LIKE``/``ILIKE``,
    ``IS [NOT] NULL``, ``CASE``, ``CAST``, arithmetic, struct fields (``meta.lang``), list items
    (``tags[1]``) and the row-wise functions listed below; sub-queries, aggregates, window
    functions and clocks are refused (their value would depend on the other rows of a batch or on
    the time; a sub-query could read files). Data-Juicer's ``general_field_filter`` is the same
    idea in Python syntax.

    Reasons: ``condition`` drops with ``condition_failed``; ``conditions`` (a mapping from a
    snake_case reason to a condition, checked in order) drops with the name of the first condition
    the row fails. A condition's top-level ``AND`` parts are checked in order, and a row fails at
    the first that is not true: false gives the condition's reason, NULL (a field it reads is
    missing) gives ``missing_field``. The ``failed`` stat holds the SQL text of that part, so the
    trace shows which part each dropped row failed.

    Functions: {functions}.
    """

    name = "field_filter"
    reads_text = False
    stats = {"failed": "the SQL text of the first condition part the row fails (null when it passes)",
             "missing": "that part is NULL: a field it reads has no value"}
    example = {"conditions": {"low_judge_score": "judge_score >= 7", "language_not_allowed": "lang IN ('en', 'de')"}}

    class Params(FieldParams):
        condition: str | None = Field(None, description="a SQL condition on the row's fields; rows for which it "
                                                        "is not true are dropped (condition_failed)")
        conditions: dict[str, str] | None = Field(
            None, description="reason -> SQL condition, checked in order: a row is dropped with the reason of "
                              "the first condition it fails")

        @field_validator("condition")
        @classmethod
        def _compile_one(cls, sql):
            if sql is not None:
                _compile(sql)
            return sql

        @field_validator("conditions")
        @classmethod
        def _compile_each(cls, conditions):
            for reason, sql in (conditions or {}).items():
                if not _REASON.fullmatch(reason) or reason == MISSING:
                    raise ValueError(f"reason {reason!r} must be snake_case (a-z, 0-9, _) and not '{MISSING}'")
                _compile(sql, f"{reason}: ")
            return conditions

        @model_validator(mode="after")
        def _one(self):
            if (self.condition is None) == (self.conditions is None):
                raise ValueError("give exactly one of condition and conditions")
            return self

    def _rules(self) -> list[tuple[str, Condition]]:
        """(reason, compiled condition) in order (compiled once per process: polars expressions)."""
        rules = self.__dict__.get("_compiled")
        if rules is None:
            rules = [(reason, compile_condition(sql)) for reason, sql in _named(self.params)]
            self.__dict__["_compiled"] = rules
        return rules

    def __getstate__(self):  # expressions are rebuilt from the SQL where the op is unpickled
        state = dict(self.__dict__)
        state.pop("_compiled", None)
        return state

    def compute_stats(self, batch: pa.Table) -> dict[str, pa.Array]:
        parts = [(c, part) for _, c in self._rules() for part in c.conjuncts]
        table = self._columns(batch)
        df = pl.from_arrow(table) if table.num_columns else pl.DataFrame({"__n": np.zeros(batch.num_rows)})
        names = [f"c{i}" for i in range(len(parts))]
        try:
            out = df.with_columns([p.expr.alias(n) for (_, p), n in zip(parts, names, strict=True)]).select(names)
        except pl.exceptions.PolarsError as e:
            for _, p in parts:  # an error on no rows is the data's types, not some rows' values
                try:
                    df.head(0).select(p.expr)
                except pl.exceptions.PolarsError:
                    raise FatalOpError(f"{self.ctx.key}: cannot evaluate '{p.sql}' on this data: "
                                       f"{str(e).strip().splitlines()[0]}") from None
            raise  # some rows' values (a failed CAST): the runner sends those rows to quarantine
        n = batch.num_rows
        failed = np.full(n, -1, dtype=np.int64)
        missing = np.zeros(n, dtype=bool)
        for i, ((_, p), col) in enumerate(zip(parts, names, strict=True)):
            s = out[col]
            if s.dtype not in (pl.Boolean, pl.Null):
                raise FatalOpError(f"{self.ctx.key}: '{p.sql}' gives {s.dtype} values, not true or false")
            null = s.is_null().to_numpy()
            false = ~s.fill_null(True).cast(pl.Boolean).to_numpy()
            now = (failed < 0) & (null | false)
            failed[now] = i
            missing |= now & null
        texts = pa.array([p.sql for _, p in parts], pa.string())
        return {"failed": pc.take(texts, pa.array(failed, mask=failed < 0)), "missing": pa.array(missing)}

    def _columns(self, batch: pa.Table) -> pa.Table:
        """The columns the conditions read (absent ones as nulls, or an error, per absent_columns)."""
        roots: set[str] = set()
        fields: list[tuple[str, list[str]]] = []
        for _, c in self._rules():
            for part in c.conjuncts:
                roots.update(part.expr.meta.root_names())
        for _, c in self._rules():
            for path in sorted(c.paths):
                root = max((r for r in roots if path == r or path.startswith(r + ".")), key=len, default=None)
                if root is not None:
                    fields.append((root, path[len(root) + 1:].split(".") if path != root else []))
        todo = []
        for column, rest in fields:
            found = problem(self.ctx.key, batch.schema, column, rest)
            if found is not None:
                message, type_problem = found
                if self.params.absent_columns == "error" or type_problem:
                    raise FatalOpError(message)
                todo.append((column, rest))
        table = batch.select([r for r in sorted(roots) if r in batch.column_names])
        return with_null_fields(table, todo) if todo else table

    def drop_reasons(self, stats: dict[str, pa.Array]) -> dict[str, np.ndarray]:
        missing = np.asarray(stats["missing"].to_numpy(zero_copy_only=False), dtype=bool)
        reason_of: dict[str, str] = {}
        for reason, c in self._rules():
            for part in c.conjuncts:
                reason_of.setdefault(part.sql, reason)
        out: dict[str, np.ndarray] = {}
        for reason, _ in self._rules():
            texts = [t for t, r in reason_of.items() if r == reason]
            hit = pc.fill_null(pc.is_in(stats["failed"], value_set=pa.array(texts, pa.string())), False)
            out[reason] = np.asarray(hit.to_numpy(zero_copy_only=False), dtype=bool) & ~missing
        out[MISSING] = missing
        return out


FieldFilter.__doc__ = FieldFilter.__doc__.replace("{functions}", ", ".join(sorted(FUNCTIONS)))


def _compile(sql: str, where: str = "") -> Condition:
    try:
        return compile_condition(sql)
    except ConditionError as e:
        raise ValueError(f"{where}{e}") from None


def _named(params) -> list[tuple[str, str]]:
    if params.conditions is not None:
        return list(params.conditions.items())
    return [("condition_failed", params.condition)] if params.condition is not None else []


# ----------------------------------------------------------------------------- field_value_filter
Scalar = str | int | float | bool


@register
class FieldValueFilter(Filter):
    """Keep rows whose field has one of the given values; for a list field (tags), rows whose list
    has any, all, or only the given values.

    ``match: any`` keeps a row whose value (or any element of its list) is one of ``values``
    (Data-Juicer's ``tags_specified_field_selector``); ``all`` keeps a row whose list holds every
    one of ``values``; ``only`` keeps a row whose every element is one of ``values``, so an empty
    list passes (Data-Juicer's ``specified_field_filter``). A plain value counts as a list of one.
    Values are compared as the field's type (``values: [2020]`` matches the text ``"2020"`` in a
    text field); a null value or list fails with ``missing_field``.
    """

    name = "field_value_filter"
    reads_text = False
    stats = {"matched": "the field's value (or list) matches values as match says",
             "missing": "the field is null in this row"}
    example = {"field": "meta.tags", "values": ["math", "code"], "match": "any"}

    class Params(FieldParams):
        field: str = Field(description="the column or nested field (meta.lang) to look at")
        values: list[Scalar] = Field(min_length=1, description="the values to keep (text, numbers or booleans)")
        match: Literal["any", "all", "only"] = Field(
            "any", description="any: a value (an element of a list) is one of values; all: the list holds every "
                               "one of values; only: every element of the list is one of values")

        @model_validator(mode="after")
        def _one_kind(self):
            kinds = {"text" if isinstance(v, str) else "bool" if isinstance(v, bool) else "number" for v in self.values}
            if len(kinds) > 1:
                raise ValueError(f"values mixes {' and '.join(sorted(kinds))}; give values of one kind")
            return self

    def compute_stats(self, batch: pa.Table) -> dict[str, pa.Array]:
        p = self.params
        col = field_column(batch, p.field, self.ctx.key, p.absent_columns)
        n = batch.num_rows
        missing = col.is_null().to_numpy(zero_copy_only=False)
        if pa.types.is_null(col.type):
            return {"matched": pa.array(np.zeros(n, dtype=bool)), "missing": pa.array(missing)}
        if pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type):
            elements = pc.list_flatten(col)
            parents = pc.list_parent_indices(col).to_numpy(zero_copy_only=False)
        else:
            elements, parents = col, np.arange(n)
        if pa.types.is_dictionary(elements.type):
            elements = elements.dictionary_decode()
        wanted = list(dict.fromkeys(p.values))
        value_set = self._value_set(wanted, elements.type)
        index = pc.fill_null(pc.index_in(elements, value_set=value_set), -1).to_numpy(zero_copy_only=False)
        hit = index >= 0
        hits = np.bincount(parents[hit], minlength=n)
        if p.match == "any":
            matched = hits > 0
        elif p.match == "only":
            matched = hits == np.bincount(parents, minlength=n)
        else:  # all: every distinct wanted value occurs in the row
            k = len(wanted)
            pairs = np.unique(parents[hit].astype(np.int64) * k + index[hit].astype(np.int64))
            matched = np.bincount(pairs // k, minlength=n) == k
        return {"matched": pa.array(matched & ~missing), "missing": pa.array(missing)}

    def _value_set(self, wanted: list, typ: pa.DataType) -> pa.Array:
        try:
            return pa.array(wanted).cast(typ)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            raise FatalOpError(f"{self.ctx.key}: field '{self.params.field}' holds {typ}; values {wanted!r} "
                               "cannot be compared with it") from None

    def drop_reasons(self, stats: dict[str, pa.Array]) -> dict[str, np.ndarray]:
        missing = np.asarray(stats["missing"].to_numpy(zero_copy_only=False), dtype=bool)
        matched = np.asarray(stats["matched"].to_numpy(zero_copy_only=False), dtype=bool)
        return {MISSING: missing, "value_not_allowed": ~matched & ~missing}


# ----------------------------------------------------------------------------- field_range_filter
@register
class FieldRangeFilter(Filter):
    """Keep rows whose numeric field lies within bounds (Data-Juicer's
    ``specified_numeric_field_filter``).

    Numbers are taken as they are, booleans as 0 and 1, and text is parsed as a number (``"3.5"``),
    as Data-Juicer does. Bounds are inclusive. A null field fails with ``missing_field``, a value
    that is not a number (or NaN) with ``not_numeric``.
    """

    name = "field_range_filter"
    reads_text = False
    stats = {"value": "the field's value as a number (NaN when missing or not a number)",
             "missing": "the field is null in this row"}
    bounds = {"value": ("min_value", "max_value")}
    example = {"field": "judge_score", "min_value": 7}

    class Params(FieldParams):
        field: str = Field(description="the column or nested field (meta.score) holding the number")
        min_value: float | None = Field(None, description="drop rows whose value is smaller")
        max_value: float | None = Field(None, description="drop rows whose value is larger")

        @model_validator(mode="after")
        def _ordered(self):
            if self.min_value is not None and self.max_value is not None and self.min_value > self.max_value:
                raise ValueError(f"min_value ({self.min_value}) must not exceed max_value ({self.max_value})")
            return self

    def compute_stats(self, batch: pa.Table) -> dict[str, pa.Array]:
        p = self.params
        values, missing = as_numbers(field_column(batch, p.field, self.ctx.key, p.absent_columns), self.ctx.key, p.field)
        return {"value": pa.array(values, pa.float64()), "missing": pa.array(missing)}

    def drop_reasons(self, stats: dict[str, pa.Array]) -> dict[str, np.ndarray]:
        p = self.params
        value = stats["value"].to_numpy(zero_copy_only=False)
        missing = np.asarray(stats["missing"].to_numpy(zero_copy_only=False), dtype=bool)
        low, high = bounds_masks(value, p.min_value, p.max_value)
        return {MISSING: missing, "not_numeric": np.isnan(value) & ~missing, "value_too_low": low,
                "value_too_high": high}


# ----------------------------------------------------------------------------- suffix_filter
_QUERY = r"[?#].*$"  # a URL's query and fragment
_DIRS = r"^.*[/\\]"  # everything up to the last path separator


@register
class SuffixFilter(Filter):
    """Keep rows whose file name (in a column holding a name, a path or a URL) ends with one of the
    given suffixes (Data-Juicer's ``suffix_filter``).

    The name is the value's last path segment, without a URL's query or fragment; a suffix matches
    when the name ends with a dot and the suffix, so ``tar.gz`` and ``gz`` both match
    ``backup.tar.gz``. Suffixes may be written with or without the leading dot. A null value fails
    with ``missing_field``.
    """

    name = "suffix_filter"
    reads_text = False
    stats = {"suffix": "the file name's last suffix, without the dot (null when it has none)",
             "matched": "the name ends with one of the suffixes",
             "missing": "the field is null in this row"}
    example = {"field": "path", "suffixes": ["py", "md", "ipynb"]}

    class Params(FieldParams):
        field: str = Field("path", description="the column (or nested field) holding a file name, path or URL")
        suffixes: list[str] = Field(min_length=1, description="suffixes to keep ('txt' or '.txt'; 'tar.gz')")
        case_sensitive: bool = Field(False, description="compare suffixes with their case ('PY' is not 'py')")

        @model_validator(mode="after")
        def _nonempty(self):
            if any(not s.lstrip(".") for s in self.suffixes):
                raise ValueError("suffixes: an empty suffix matches nothing; remove it")
            return self

    def compute_stats(self, batch: pa.Table) -> dict[str, pa.Array]:
        p = self.params
        col = field_column(batch, p.field, self.ctx.key, p.absent_columns)
        n = batch.num_rows
        missing = col.is_null().to_numpy(zero_copy_only=False)
        if pa.types.is_null(col.type):
            return {"suffix": pa.nulls(n, pa.string()), "matched": pa.array(np.zeros(n, dtype=bool)),
                    "missing": pa.array(missing)}
        if pa.types.is_string_view(col.type) or (pa.types.is_dictionary(col.type)
                                                 and pa.types.is_string(col.type.value_type)):
            col = col.cast(pa.string())
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            raise FatalOpError(f"{self.ctx.key}: field '{p.field}' holds {col.type}, not text (a file name or path)")
        name = pc.replace_substring_regex(pc.replace_substring_regex(col, _QUERY, ""), _DIRS, "")
        if not p.case_sensitive:
            name = pc.utf8_lower(name)
        matched = np.zeros(n, dtype=bool)
        for s in dict.fromkeys(s.lstrip(".") for s in p.suffixes):
            s = s if p.case_sensitive else s.lower()
            matched |= np.asarray(pc.fill_null(pc.ends_with(name, "." + s), False).to_numpy(zero_copy_only=False),
                                  dtype=bool)
        suffix = pc.struct_field(pc.extract_regex(name, r"\.(?P<s>[^.]+)$"), [0])
        return {"suffix": suffix, "matched": pa.array(matched & ~missing), "missing": pa.array(missing)}

    def drop_reasons(self, stats: dict[str, pa.Array]) -> dict[str, np.ndarray]:
        missing = np.asarray(stats["missing"].to_numpy(zero_copy_only=False), dtype=bool)
        matched = np.asarray(stats["matched"].to_numpy(zero_copy_only=False), dtype=bool)
        return {MISSING: missing, "suffix_not_allowed": ~matched & ~missing}

