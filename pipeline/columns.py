"""Column names of the executor's protocol, and the column helpers op authors share.

Protocol columns (never in the output):

- ``SHARD``, ``ROW``: a row's shard and its ordinal in the shard, on fingerprints and decisions;
- ``REASON``: why resolve drops a row (on decisions);
- ``LINE``: each row's line in its input file, carried through the passes so a row an op
  quarantines is named by file and line;
- ``ROWS_TAG``: a global op's apply step sees its rows' ordinals in this temporary column;
- ``STATS``: the struct column of filter stats kept with ``output.keep_stats``;
- ``FLAGS``: in an analysis (``thresher analyze``), per op, the reason it would drop the row.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

SHARD = "__shard"
ROW = "__row"
REASON = "__reason"
LINE = "__thresher_line__"
ROWS_TAG = "__thresher_row__"
STATS = "__stats__"
FLAGS = "__flags__"

# The columns of a resolve step's decisions (one row per row to drop), with their types.
DECISIONS_SCHEMA = {SHARD: pl.Int32, ROW: pl.Int64, REASON: pl.Utf8}


def no_decisions() -> pl.DataFrame:
    """Decisions that drop nothing (what ``resolve`` returns when it keeps every row)."""
    return pl.DataFrame(schema=DECISIONS_SCHEMA)


def drop_decisions(rows, reason: str | pl.Expr):
    """Decisions that drop ``rows`` (a polars frame, lazy or not, with ``SHARD`` and ``ROW``) with
    ``reason``: a reason code, or an expression giving each row's."""
    reason = pl.lit(reason, pl.Utf8) if isinstance(reason, str) else reason
    return rows.select(SHARD, ROW, reason.alias(REASON))


def state_rows(state: pl.DataFrame | None, shard: int, rows: np.ndarray) -> tuple[pl.DataFrame | None, np.ndarray]:
    """The entries of a global op's state (a frame keyed by ``SHARD`` and ``ROW``) that fall on
    the rows an ``apply`` call sees, and where: ``(entries, positions in rows)``. ``rows``: the
    sorted shard ordinals ``apply`` gets. With no state: ``(None, [])``."""
    if state is None:
        return None, np.zeros(0, dtype=np.int64)
    st = state.filter(pl.col(SHARD) == shard)
    at = st[ROW].to_numpy()
    pos = np.searchsorted(rows, at)
    ok = (pos < len(rows)) & (rows[np.minimum(pos, len(rows) - 1)] == at) if len(rows) else np.zeros(len(at), bool)
    return st.filter(pl.Series(ok)), pos[ok]


def set_column(table: pa.Table, name: str, values) -> pa.Table:
    """``table`` with column ``name`` replaced by ``values`` (in place of the old one), or appended."""
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)


def bounds_masks(values, lo: float | None = None, hi: float | None = None, *,
                 inclusive: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(below, above): the rows whose value lies under ``lo`` / over ``hi`` (a bound that is None
    never fires). ``inclusive``: a value equal to a bound is inside it (``v < lo``, ``v > hi``);
    otherwise equal counts as outside (``v <= lo``, ``v >= hi``), as rules that say "more than" do.
    NaN is never outside. ``values``: a numpy array, an Arrow array or chunked array, or a list."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        v = values.to_numpy(zero_copy_only=False)
    else:
        v = np.asarray(values)
    none = np.zeros(len(v), dtype=bool)
    if inclusive:
        below = v < lo if lo is not None else none
        above = v > hi if hi is not None else none
    else:
        below = v <= lo if lo is not None else none
        above = v >= hi if hi is not None else none
    return np.asarray(below, dtype=bool), np.asarray(above, dtype=bool)


def over(values, hi: float | None, *, inclusive: bool = True) -> np.ndarray:
    """The rows whose value lies over ``hi`` (``bounds_masks``' ``above`` for a one-sided rule)."""
    return bounds_masks(values, None, hi, inclusive=inclusive)[1]


def under(values, lo: float | None, *, inclusive: bool = True) -> np.ndarray:
    """The rows whose value lies under ``lo`` (``bounds_masks``' ``below`` for a one-sided rule)."""
    return bounds_masks(values, lo, None, inclusive=inclusive)[0]
