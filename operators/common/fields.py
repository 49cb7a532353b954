"""A row's fields by name, nested ones included (``meta.lang``: field ``lang`` of the struct column
``meta``), for the ops that select rows by their fields, with one-line errors that name the
column and the columns there are."""

from __future__ import annotations

from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from thresher.pipeline.errors import FatalOpError, did_you_mean
from thresher.pipeline.ops import OpParams

Absent = Literal["error", "null"]


class FieldParams(OpParams):
    """Parameters every field op has: what to do with a column the data does not have."""

    absent_columns: Absent = Field(
        "error", description="a column (or struct field) a batch of the data does not have: 'error' stops "
                             "the run naming it (a typo), 'null' reads it as null in every row of that batch, "
                             "so those rows fail as missing_field (for fields only some inputs have)")


def split_path(schema: pa.Schema, path: str) -> tuple[str, list[str]]:
    """(column, struct fields below it) that the dotted ``path`` names in ``schema``: the whole path
    when a column has that name (a flattened ``meta.lang`` column), else the longest dotted prefix
    that is a column, else the first part (a column the data lacks)."""
    parts = path.split(".")
    for k in range(len(parts), 0, -1):
        head = ".".join(parts[:k])
        if head in schema.names:
            return head, parts[k:]
    return parts[0], parts[1:]


def problem(label: str, schema: pa.Schema, column: str, rest: list[str]) -> tuple[str, bool] | None:
    """Why field ``rest`` of ``column`` cannot be read from data of ``schema`` — (one-line message,
    whether it is a type problem rather than something absent) — or None when it can."""
    if column not in schema.names:
        present = [c for c in schema.names if not c.startswith("__")]  # not thresher's own columns
        return (f"{label}: no column '{column}' in the data (columns: {', '.join(present) or 'none'})."
                f"{did_you_mean(column, present)}").rstrip("."), False
    t, at = schema.field(column).type, column
    for name in rest:
        if pa.types.is_null(t):  # a column that is null in the whole batch has no known fields
            return f"{label}: column '{at}' is null in every row of a batch, so it has no field '{name}'", False
        if not pa.types.is_struct(t):
            return f"{label}: column '{at}' holds {t}, not a struct, so it has no field '{name}'", True
        names = [t.field(i).name for i in range(t.num_fields)]
        if name not in names:
            return (f"{label}: column '{at}' has no field '{name}' (fields: {', '.join(names) or 'none'})."
                    f"{did_you_mean(name, names)}").rstrip("."), False
        t, at = t.field(name).type, f"{at}.{name}"
    return None


def field_column(table: pa.Table, path: str, label: str, absent: Absent = "error") -> pa.Array:
    """The values of column or nested field ``path`` (``meta.lang``) in ``table``, as one array.
    When the data lacks it: ``absent='error'`` raises ``FatalOpError`` (the run stops: no row
    could be judged), 'null' gives nulls. A field of a null struct is null."""
    column, rest = split_path(table.schema, path)
    found = problem(label, table.schema, column, rest)
    if found is not None:
        message, type_problem = found
        if absent == "error" or type_problem:
            raise FatalOpError(message)
        return pa.nulls(table.num_rows)
    values = table.column(column)
    values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    for name in rest:
        values = pc.struct_field(values, [name])
    return values


def with_null_fields(table: pa.Table, fields: list[tuple[str, list[str]]]) -> pa.Table:
    """``table`` with every (column, struct fields) of ``fields`` it lacks added as nulls (a struct
    column is rebuilt with the new field; a row whose struct is null stays null)."""
    for column, rest in fields:
        if column not in table.column_names:
            value = pa.nulls(table.num_rows)
            for name in reversed(rest):
                value = pa.StructArray.from_arrays([value], names=[name])
            table = table.append_column(column, value)
        elif rest:
            arr = table.column(column).combine_chunks()
            if pa.types.is_struct(arr.type):
                table = table.set_column(table.schema.get_field_index(column), column, _add_field(arr, rest))
    return table


def _add_field(arr: pa.Array, rest: list[str]) -> pa.Array:
    """Struct array ``arr`` with the path ``rest`` below it completed by null fields."""
    name, below = rest[0], rest[1:]
    t = arr.type
    names = [t.field(i).name for i in range(t.num_fields)]
    children = list(arr.flatten())  # the children as the rows see them (offset applied)
    if name in names:
        k = names.index(name)
        if below and pa.types.is_struct(children[k].type):
            children[k] = _add_field(children[k], below)
    else:
        child = pa.nulls(len(arr))
        for sub in reversed(below):
            child = pa.StructArray.from_arrays([child], names=[sub])
        names.append(name)
        children.append(child)
    mask = arr.is_null() if arr.null_count else None
    return pa.StructArray.from_arrays(children, names=names, mask=mask)


def as_numbers(values: pa.Array, label: str, path: str) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values, missing): numbers as they are, booleans as 0/1, text parsed as a number
    (``"3.5"``; text that is not a number gives NaN); ``missing`` marks null values. Any other
    type (a list, a struct) is an error naming the field."""
    t = values.type
    if pa.types.is_dictionary(t):
        values, t = values.dictionary_decode(), t.value_type
    missing = values.is_null().to_numpy(zero_copy_only=False)
    if pa.types.is_null(t):
        return np.full(len(values), np.nan), missing
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t):
        out = pc.cast(values, pa.float64())
    elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        out = pl.from_arrow(values).str.strip_chars().cast(pl.Float64, strict=False).to_arrow()
    else:
        raise FatalOpError(f"{label}: field '{path}' holds {t}, not numbers")
    return pc.fill_null(out, np.nan).to_numpy(zero_copy_only=False).astype(np.float64), missing
