"""One pass over one shard: read -> apply previous global decisions -> fused local ops ->
fingerprint for the next global op, or write output. Pure with respect to its inputs, so any
executor can run it anywhere, retry it, or skip it when its done marker exists.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.io.inputs import Shard
from pipeline.io.readers import read_shard
from pipeline.io.writers import ShardWriter, shard_prefix, write_json_atomic, write_jsonl_records_atomic
from pipeline.layout import Layout
from pipeline.ledger import READ, Ledger
from pipeline.ops import GlobalOp, Op
from pipeline.plan import Stage, make_plan
from pipeline.recipe import Recipe
from pipeline.runner import BatchRunner

ROW = "__row"
SHARD = "__shard"
REASON = "__reason"

_OPS_CACHE: dict[str, tuple[list[Op], list[Stage]]] = {}


def ops_for(recipe: Recipe) -> tuple[list[Op], list[Stage]]:
    """Build the recipe's ops once per worker process (models load once per worker)."""
    key = recipe.fingerprint()
    if key not in _OPS_CACHE:
        ops = recipe.build_ops()
        _OPS_CACHE[key] = (ops, make_plan(ops))
    return _OPS_CACHE[key]


def empty_ledger(ops: list[Op]) -> Ledger:
    return Ledger([(op.ctx.key, op.name, op.ctx.index) for op in ops])


class _IpcWriter:
    """Arrow IPC stream for intermediates; a batch with another schema is cast, or starts a segment."""

    def __init__(self, path: Path):
        self.path = path
        self.segments: list[Path] = []
        self._w = None
        self._sink = None
        self._schema = None

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        if self._w is not None and not table.schema.equals(self._schema):
            conformed = _conform(table, self._schema)
            if conformed is None:
                self.close()  # a new segment with this batch's schema
            else:
                table = conformed
        if self._w is None:
            seg = self.path.with_name(f"{self.path.name}.{len(self.segments):03d}")
            self.segments.append(seg)
            self._sink = pa.OSFile(str(seg), "wb")
            self._schema = table.schema
            self._w = pa.ipc.new_stream(self._sink, table.schema)
        self._w.write_table(table)

    def close(self) -> None:
        if self._w is not None:
            self._w.close()
            self._sink.close()
            self._w = None


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table | None:
    """``table`` with exactly ``schema`` (same columns, castable types), or None."""
    if set(table.schema.names) != set(schema.names):
        return None
    try:
        return table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None


def read_intermediate(layout: Layout, k: int, shard: int) -> Iterator[pa.Table]:
    base = layout.intermediate(k, shard)
    for seg in sorted(base.parent.glob(base.name + ".*")):
        with pa.OSFile(str(seg), "rb") as f:
            reader = pa.ipc.open_stream(f)
            for rb in reader:
                yield pa.Table.from_batches([rb])


def clean_partial(layout: Layout, k: int, shard: int, final: bool) -> None:
    """Remove what an interrupted attempt at (pass k, shard) may have left behind."""
    base = layout.intermediate(k, shard)
    for seg in base.parent.glob(base.name + ".*"):
        seg.unlink()
    layout.fingerprints(k, shard).unlink(missing_ok=True)
    layout.quarantine_file(k, shard).unlink(missing_ok=True)
    if final and layout.data.exists():
        for f in layout.data.glob(shard_prefix(shard) + "*"):
            f.unlink()


def run_pass_shard(recipe: Recipe, out_dir: str, k: int, shard: Shard) -> dict:
    """Run pass ``k`` over one shard and leave a done marker. Returns the marker's content."""
    layout = Layout(out_dir)
    ops, stages = ops_for(recipe)
    stage = stages[k]
    final = stage.barrier is None
    clean_partial(layout, k, shard.index, final)
    layout.pass_dir(k).mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    ledger = empty_ledger(ops)
    runner = BatchRunner(stage.local_ops, recipe.input.text_key, recipe.input.id_key,
                         recipe.output.keep_stats, recipe.output.trace_samples)
    block_bytes = int(recipe.executor.batch_size_mb * (1 << 20))

    writer = ShardWriter(layout.data, shard.index, recipe.output.format, recipe.output.rows_per_shard) if final else None
    inter = None if final else _IpcWriter(layout.intermediate(k, shard.index))
    fps: list[pa.Table] = []
    ordinal = 0
    rows_out = 0
    quarantine: list[dict] = []
    try:
        for table in _source(recipe, layout, k, shard, stages, ledger, runner, quarantine, block_bytes):
            table = runner.run(table, ledger)
            if table.num_rows == 0:
                continue
            if final:
                writer.write(table)
                rows_out += table.num_rows
                continue
            barrier = stage.barrier
            entry = ledger[barrier.ctx.key]
            t0 = time.perf_counter()
            barrier.ensure_setup()
            entry.rows_in += table.num_rows
            results, kept = runner.guarded(barrier, barrier.fingerprint, table, ledger)
            for fp, t in zip(results, kept, strict=True):
                n = t.num_rows
                fp = fp.append_column(SHARD, pa.array(np.full(n, shard.index, dtype=np.int32)))
                fp = fp.append_column(ROW, pa.array(np.arange(ordinal, ordinal + n, dtype=np.int64)))
                fps.append(fp)
                inter.write(t)
                ordinal += n
            entry.seconds += time.perf_counter() - t0
            entry.counters.update(barrier.take_counters())
        quarantine += runner.quarantine
        if final:
            files = [str(p.name) for p in writer.commit()]
        else:
            inter.close()
            files = []
            if fps:
                pq.write_table(pa.concat_tables(fps, promote_options="permissive"),
                               layout.fingerprints(k, shard.index))
            else:
                pq.write_table(pa.table({SHARD: pa.array([], pa.int32()), ROW: pa.array([], pa.int64())}),
                               layout.fingerprints(k, shard.index))
    except BaseException:
        if writer is not None:
            writer.abort()
        if inter is not None:
            inter.close()
        raise
    if quarantine:
        write_jsonl_records_atomic(layout.quarantine_file(k, shard.index), quarantine)
    done = {
        "pass": k, "shard": shard.index, "rows_out": rows_out if final else ordinal, "files": files,
        "ledger": ledger.to_dict()["ops"], "trace": runner.trace, "quarantined": len(quarantine),
        "seconds": round(time.perf_counter() - t_start, 4), "pid": os.getpid(),
    }
    write_json_atomic(layout.done(k, shard.index), done)
    return done


def _source(recipe: Recipe, layout: Layout, k: int, shard: Shard, stages: list[Stage], ledger: Ledger,
            runner: BatchRunner, quarantine: list[dict], block_bytes: int) -> Iterator[pa.Table]:
    """Batches entering pass k: read from input (k = 0), or the previous pass's rows with the
    previous global op's decisions applied."""
    if k == 0:
        read = ledger[READ]
        t0 = time.perf_counter()
        for rb in read_shard(shard, recipe.input.text_key, recipe.input.id_key, block_bytes):
            read.rows_in += rb.table.num_rows + len(rb.quarantined)
            read.rows_out += rb.table.num_rows
            for q in rb.quarantined:
                read.quarantined[_reason_class(q["reason"])] += 1
            read.counters.update(rb.counters)
            quarantine.extend(rb.quarantined)
            read.seconds += time.perf_counter() - t0
            yield rb.table
            t0 = time.perf_counter()
        return
    barrier = stages[k - 1].barrier
    entry = ledger[barrier.ctx.key]
    decided = pl.read_parquet(layout.decisions(k - 1)).filter(pl.col(SHARD) == shard.index).sort(ROW)
    drop_rows = decided[ROW].to_numpy()
    drop_reasons = decided[REASON].to_list()
    if layout.state(k - 1).exists():
        barrier.set_state(pl.read_parquet(layout.state(k - 1)))
    transforms = type(barrier).apply is not GlobalOp.apply
    offset = 0
    for table in read_intermediate(layout, k - 1, shard.index):
        t0 = time.perf_counter()
        n = table.num_rows
        lo, hi = np.searchsorted(drop_rows, [offset, offset + n])
        local = drop_rows[lo:hi] - offset
        keep = np.ones(n, dtype=bool)
        if len(local):
            keep[local] = False
            runner.record_global_drops(barrier, table, local, drop_reasons[lo:hi], ledger)
            table = table.filter(pa.array(keep))
        if transforms and table.num_rows:
            ordinals = np.flatnonzero(keep) + offset
            tagged = table.append_column(ROWS_TAG, pa.array(ordinals, pa.int64()))
            results, _kept = runner.guarded(barrier, partial(_apply_tagged, barrier, shard.index), tagged, ledger)
            parts = []
            for r in results:  # apply may return (rows, {reason: mask}) to drop rows it emptied
                r, reasons = r if isinstance(r, tuple) else (r, None)
                parts.append(runner._drop(barrier, r, reasons, {}, entry) if reasons else r)
            table = pa.concat_tables(parts, promote_options="permissive") if parts else table.slice(0, 0)
            entry.counters.update(barrier.take_counters())
        entry.rows_out += table.num_rows
        entry.seconds += time.perf_counter() - t0
        offset += n
        yield table


ROWS_TAG = "__thresher_row__"


def _apply_tagged(barrier: GlobalOp, shard: int, t: pa.Table):
    """A global op's apply on rows carrying their shard ordinals in a temporary column."""
    return barrier.apply(t.drop_columns([ROWS_TAG]), shard, t[ROWS_TAG].to_numpy())


def _reason_class(reason: str) -> str:
    """Group quarantine reasons for the ledger (the file keeps the full text)."""
    for prefix in ("invalid UTF-8", "malformed JSON", "not a JSON object", "missing text field",
                   "missing or null text field"):
        if reason.startswith(prefix):
            return prefix
    if "type conflicts" in reason:
        return "type conflict: " + reason.split(":")[0]
    return reason.split(":")[0]


def resolve_pass(recipe: Recipe, out_dir: str, k: int, n_shards: int) -> dict:
    """Global phase of pass k's barrier: all fingerprints -> decisions.parquet."""
    layout = Layout(out_dir)
    ops, stages = ops_for(recipe)
    barrier: GlobalOp = stages[k].barrier
    t0 = time.perf_counter()
    paths = [str(layout.fingerprints(k, i)) for i in range(n_shards)]
    lf = pl.scan_parquet(paths)
    barrier.ensure_setup()
    decided = barrier.resolve(lf)
    decided = decided.select([pl.col(SHARD).cast(pl.Int32), pl.col(ROW).cast(pl.Int64), pl.col(REASON).cast(pl.Utf8)]
                             + [c for c in decided.columns if c not in (SHARD, ROW, REASON)]).sort([SHARD, ROW])
    tmp = layout.decisions(k).with_name("decisions.parquet.tmp")
    decided.write_parquet(tmp)
    os.replace(tmp, layout.decisions(k))
    if barrier.state is not None:
        tmp = layout.state(k).with_name("state.parquet.tmp")
        barrier.state.write_parquet(tmp)
        os.replace(tmp, layout.state(k))
    info = {"pass": k, "op": barrier.ctx.key, "seconds": round(time.perf_counter() - t0, 4),
            "decided": decided.height, "counters": barrier.take_counters()}
    write_json_atomic(layout.resolved(k), info)
    return info


def load_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))
