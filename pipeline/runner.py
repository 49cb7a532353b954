"""Run fused local ops over one Arrow batch, keeping the ledger, trace and quarantine.

This is the one place that turns op results into row decisions; both executors call it, so
local and Ray runs decide alike. An op that raises on a batch is retried on halves until the
failing rows are isolated; those rows go to quarantine with the error, the rest go on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from thresher.pipeline.columns import FLAGS, LINE, STATS, set_column
from thresher.pipeline.errors import ThresherError
from thresher.pipeline.io.readers import RAW_SNIPPET, quarantine_record
from thresher.pipeline.ledger import Ledger
from thresher.pipeline.ops import Filter, GlobalOp, Mapper, MapResult, Op, first_failing
from thresher.pipeline.profile import Profile

TRACE_TEXT = 500


class BatchRunner:
    """``analysis``: drop nothing — every op sees every row, and the rows an op would drop are
    counted as ``flagged`` in the ledger, sampled in the trace and marked per row (``FLAGS``), as
    ``thresher analyze`` needs."""

    def __init__(self, ops: list[Op], text_key: str, id_key: str, keep_stats: bool, trace_n: int, source: str = "",
                 analysis: bool = False):
        self.ops = ops
        self.analysis = analysis
        self.profile = Profile()  # histograms of every filter stat (and the corpus), merged run-wide
        self.source = source  # the input file of the rows (its display name)
        self.text_key = text_key
        self.id_key = id_key
        self.keep_stats = keep_stats
        self.trace_n = trace_n
        self.trace: dict[str, list[dict]] = {op.ctx.key: [] for op in ops}
        self.quarantine: list[dict] = []

    # ------------------------------------------------------------------------------ helpers
    def _row_raw(self, table: pa.Table, i: int, skip_nulls: bool = False) -> str:
        row = table.slice(i, 1).to_pylist()[0]
        row.pop(LINE, None)
        if skip_nulls:  # fields this row never had (other rows' columns) are null here
            row = {k: v for k, v in row.items() if v is not None}
        return json.dumps(row, ensure_ascii=False, default=str)[:RAW_SNIPPET]

    def _where(self, table: pa.Table) -> tuple[list, list]:
        """(ids, input lines) of the rows of ``table``; a line is 0 where it is not known (rows a
        1:N op made)."""
        n = table.num_rows
        ids = table.column(self.id_key).to_pylist() if self.id_key in table.column_names else [None] * n
        lines = table.column(LINE).fill_null(0).to_pylist() if LINE in table.column_names else [0] * n
        return ids, lines

    def _quarantine_rows(self, op: Op, table: pa.Table, err: BaseException) -> None:
        ids, lines = self._where(table)
        reason = f"{type(err).__name__}: {err}"[:300]
        for i in range(table.num_rows):
            self.quarantine.append(quarantine_record(
                self.source or str(ids[i]), lines[i], reason, op.ctx.key, self._row_raw(table, i), row_id=ids[i]))

    def guarded(self, op: Op, fn: Callable[[pa.Table], object], table: pa.Table, ledger: Ledger):
        """Call ``fn(table)``; on error, bisect to isolate failing rows and quarantine them.
        Returns (result parts, kept sub-tables) aligned with each other."""
        try:
            return [fn(table)], [table]
        except ThresherError:
            raise  # the user must fix something (a rejected API key, a missing model): stop the run
        except Exception as err:  # noqa: BLE001 - any op error sends its rows to quarantine
            if table.num_rows <= 1 or not op.isolate_errors:
                self._quarantine_rows(op, table, err)
                ledger[op.ctx.key].quarantined[f"op error: {type(err).__name__}"] += table.num_rows
                return [], []
            mid = table.num_rows // 2
            r1, t1 = self.guarded(op, fn, table.slice(0, mid), ledger)
            r2, t2 = self.guarded(op, fn, table.slice(mid), ledger)
            return r1 + r2, t1 + t2

    def _trace_drops(self, op: Op, table: pa.Table, dropped_idx: np.ndarray, reasons: list[str], stats: dict) -> None:
        """A seeded random sample of the dropped rows, per reason (bottom-k by a hash of seed, op and
        row id: uniform, and the same whatever the shards, workers or executor — samples merge by
        keeping the k smallest keys). Each record carries the row's content whatever its shape."""
        if self.trace_n <= 0 or len(dropped_idx) == 0:
            return
        keys = sample_keys(table, dropped_idx, self.id_key, op.ctx.seed, op.ctx.key)
        reasons = np.asarray(reasons, dtype=object)
        take = []
        for reason in dict.fromkeys(reasons.tolist()):
            where = np.flatnonzero(reasons == reason)
            if len(where) > self.trace_n:
                where = where[np.argsort(keys[where], kind="stable")[: self.trace_n]]
            take += where.tolist()
        rows = table.take(pa.array(dropped_idx[take])).to_pylist()
        bucket = self.trace.setdefault(op.ctx.key, [])
        for j, row in zip(take, rows, strict=True):
            i = int(dropped_idx[j])
            rec = {"id": row.get(self.id_key), "reason": reasons[j], "key": int(keys[j])}
            if self.text_key and self.text_key in row:
                rec["text"] = (row[self.text_key] or "")[:TRACE_TEXT]
            else:  # chat, preference and other rows: their own fields (long strings cut)
                rec["content"] = _short({k: v for k, v in row.items() if k not in (self.id_key, LINE, STATS, FLAGS)})
            if stats:
                rec["stats"] = {k: _py(v[i]) for k, v in stats.items()}
            bucket.append(rec)
        self.trace[op.ctx.key] = keep_sample(bucket, self.trace_n)

    # ------------------------------------------------------------------------------ ops
    def run(self, table: pa.Table, ledger: Ledger) -> pa.Table:
        for op in self.ops:
            if table.num_rows == 0:
                break
            table = self.run_op(op, table, ledger)
        return table

    def run_op(self, op: Op, table: pa.Table, ledger: Ledger) -> pa.Table:
        entry = ledger[op.ctx.key]
        t0 = time.perf_counter()
        op.ensure_setup()
        entry.rows_in += table.num_rows
        if isinstance(op, Mapper):
            results, inputs = self.guarded(op, op.process, table, ledger)
            outs = []
            for r, t in zip(results, inputs, strict=True):
                marked = r if isinstance(r, MapResult) else None
                if marked is not None:
                    r, reasons = marked.table, marked.drop
                else:
                    r, reasons = r if isinstance(r, tuple) else (r, None)
                if not op.one_to_many and r.num_rows != t.num_rows:
                    raise RuntimeError(f"op '{op.ctx.key}' is 1:1 but returned {r.num_rows} rows for {t.num_rows}")
                if r.num_rows > t.num_rows:
                    entry.created += r.num_rows - t.num_rows
                if marked is not None:  # a 1:N mapper marks its output rows (placeholders carrying the source)
                    r, reasons = self._quarantine_marked(op, marked, r if op.one_to_many else t, entry), marked.drop
                outs.append(self._drop(op, r, reasons, {}, entry) if reasons else r)
            out = _concat(outs, table.schema if not outs else None)
        elif isinstance(op, Filter):
            results, inputs = self.guarded(op, op.compute_stats, table, ledger)
            parts = []
            for stats, t in zip(results, inputs, strict=True):
                parts.append(self._apply_filter(op, t, stats, entry))
            out = _concat(parts, table.schema if not parts else None)
        elif isinstance(op, GlobalOp):
            raise TypeError("global ops run through the executor's fingerprint/resolve/apply phases")
        else:
            raise TypeError(f"op '{op.ctx.key}' is not a Mapper, Filter or GlobalOp")
        entry.counters.update(op.take_counters())
        entry.rows_out += out.num_rows
        entry.seconds += time.perf_counter() - t0
        return out

    def _apply_filter(self, op: Filter, table: pa.Table, stats: dict, entry) -> pa.Table:
        stats = {k: as_array(v) for k, v in stats.items()}
        for col in op.columns:
            if col in stats:
                table = set_column(table, col, stats[col])
        self.profile.add_stats(op.ctx.key, stats, op.thresholds())
        if (self.keep_stats or self.analysis) and stats:
            table = add_stats(table, op.ctx.key, stats)
        return self._drop(op, table, op.drop_reasons(stats), stats, entry)

    def _quarantine_marked(self, op: Op, result: MapResult, source: pa.Table, entry) -> pa.Table:
        """Rows a mapper marked as broken: to quarantine with their reason and the input row as it
        came in (``source``), out of the table (the drop masks narrow to the rows that stay)."""
        table, marks = result.table, result.quarantine
        if not marks or not any(marks):
            return table
        bad = np.array([m is not None for m in marks], dtype=bool)
        ids, lines = self._where(source)
        for i in np.flatnonzero(bad):
            reason = marks[i]
            self.quarantine.append(quarantine_record(self.source or str(ids[i]), lines[i], reason, op.ctx.key,
                                                     self._row_raw(source, int(i), skip_nulls=True), row_id=ids[i]))
            entry.quarantined[reason.split(" (")[0]] += 1
        if result.drop:
            result.drop = {k: np.asarray(v, dtype=bool)[~bad] for k, v in result.drop.items()}
        return table.filter(pa.array(~bad))

    def _drop(self, op: Op, table: pa.Table, reasons: dict, stats: dict, entry) -> pa.Table:
        """Drop the rows any reason marks; record the first reason of each, and trace samples."""
        names = list(reasons)
        keep, reason_idx = first_failing(reasons, table.num_rows)  # the first failing rule is recorded
        dropped_idx = np.flatnonzero(~keep)
        counted = entry.flagged if self.analysis else entry.dropped
        if len(dropped_idx):
            counts = np.bincount(reason_idx[dropped_idx], minlength=len(names))
            for j, c in enumerate(counts):
                if c:
                    counted[names[j]] += int(c)
            self._trace_drops(op, table, dropped_idx, [names[j] for j in reason_idx[dropped_idx]], stats)
        if self.analysis:
            return self.flag(op, table, reason_idx, names)
        return table if keep.all() else table.filter(pa.array(keep))

    def flag(self, op: Op, table: pa.Table, reason_idx: np.ndarray, names: list[str]) -> pa.Table:
        """(analysis) Mark each row with the reason ``op`` would drop it for, in ``FLAGS``:
        ``reason_idx[i]`` indexes ``names`` (-1: kept, null). Built as a dictionary array, no
        per-row Python."""
        idx = np.asarray(reason_idx, dtype=np.int32)
        marks = pa.DictionaryArray.from_arrays(pa.array(idx, mask=idx < 0), pa.array(names, pa.string()))
        return add_stats(table, op.ctx.key, {"reason": marks.cast(pa.string())}, column=FLAGS)

    def record_global_drops(self, op: GlobalOp, table: pa.Table, drop_idx: np.ndarray, reasons: list[str],
                            ledger: Ledger) -> pa.Table:
        """Count (and sample) the rows a global op's decisions drop; returns the table without them
        (in analysis: all of it, with those rows flagged)."""
        entry = ledger[op.ctx.key]
        counted = entry.flagged if self.analysis else entry.dropped
        for r in reasons:
            counted[r] += 1
        self._trace_drops(op, table, drop_idx, reasons, {})
        if self.analysis:
            names, at = np.unique(np.asarray(reasons, dtype=object).astype(str), return_inverse=True)
            reason_idx = np.full(table.num_rows, -1, dtype=np.int32)
            reason_idx[drop_idx] = at
            return self.flag(op, table, reason_idx, names.tolist())
        keep = np.ones(table.num_rows, dtype=bool)
        keep[drop_idx] = False
        return table.filter(pa.array(keep))


def sample_keys(table: pa.Table, idx: np.ndarray, id_key: str, seed: int, op_key: str) -> np.ndarray:
    """Sampling keys of rows ``idx``: a hash of the row id salted with the seed and the op (polars'
    vectorised hash; rows without an id column hash their position)."""
    import polars as pl
    import xxhash

    salt = xxhash.xxh3_64_intdigest(f"{seed}\x00{op_key}".encode()) & 0x7FFFFFFFFFFFFFFF
    if id_key in table.column_names:
        ids = pl.from_arrow(table.column(id_key).take(pa.array(idx))).cast(pl.Utf8)
    else:
        ids = pl.Series(idx.astype(np.int64)).cast(pl.Utf8)
    return (ids.hash(seed=salt).to_numpy() >> np.uint64(1)).astype(np.int64)


def keep_sample(records: list[dict], n: int) -> list[dict]:
    """The ``n`` records with the smallest sampling keys per reason, ordered by reason then key: how
    samples from shards, blocks and workers merge into the run's (the same set however split)."""
    out: list[dict] = []
    by_reason: dict[str, list[dict]] = {}
    for r in records:
        by_reason.setdefault(r["reason"], []).append(r)
    for reason in sorted(by_reason):
        out += sorted(by_reason[reason], key=lambda r: (r["key"], str(r["id"])))[:n]
    return out


def _short(value, limit: int = TRACE_TEXT):
    """``value`` with every string cut to ``limit`` characters (nested lists and dicts too)."""
    if isinstance(value, str):
        return value[:limit]
    if isinstance(value, dict):
        return {k: _short(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [_short(v, limit) for v in value[:50]]
    return value


def add_stats(table: pa.Table, key: str, stats: dict[str, pa.Array], column: str = STATS) -> pa.Table:
    """Add this op's stats under ``__stats__.<op key>`` (a struct column; or under ``column``)."""
    new = pa.StructArray.from_arrays(list(stats.values()), names=list(stats))
    if column in table.column_names:
        old = table.column(column).combine_chunks()
        fields = [old.field(i) for i in range(old.type.num_fields)] + [new]
        names = [old.type.field(i).name for i in range(old.type.num_fields)] + [key]
        return set_column(table, column, pa.StructArray.from_arrays(fields, names=names))
    return table.append_column(column, pa.StructArray.from_arrays([new], names=[key]))


def as_array(v) -> pa.Array:
    """A stat as an Arrow array (filters may return numpy arrays, lists or chunked arrays)."""
    if isinstance(v, pa.ChunkedArray):
        return v.combine_chunks()
    if isinstance(v, pa.Array):
        return v
    return pa.array(np.asarray(v))


def _py(v):
    x = v.as_py() if hasattr(v, "as_py") else v
    return round(x, 6) if isinstance(x, float) else x


def _concat(parts: list[pa.Table], empty_schema: pa.Schema | None) -> pa.Table:
    if not parts:
        return empty_schema.empty_table() if empty_schema is not None else pa.table({})
    if len(parts) == 1:
        return parts[0]
    return pa.concat_tables(parts, promote_options="permissive")
