"""One pass over one shard: read -> apply previous global decisions -> fused local ops ->
fingerprint for the next global op, or write output. Pure with respect to its inputs, so any
executor can run it anywhere, retry it, or skip it when its done marker exists.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from thresher.pipeline import fs
from thresher.pipeline.columns import LINE, REASON, ROW, ROWS_TAG, SHARD
from thresher.pipeline.executors.intermediates import IpcWriter, read_intermediate
from thresher.pipeline.io.inputs import Shard
from thresher.pipeline.io.readers import read_shard, text_source_columns
from thresher.pipeline.io.writers import (
    ShardWriter,
    shard_prefix,
    write_json_atomic,
    write_jsonl_records_atomic,
)
from thresher.pipeline.layout import Layout
from thresher.pipeline.ledger import READ, Ledger
from thresher.pipeline.ops import GlobalOp, Op
from thresher.pipeline.plan import Stage, make_plan
from thresher.pipeline.progress import Channel, Tracker, tracking
from thresher.pipeline.recipe import Recipe
from thresher.pipeline.runner import BatchRunner

_OPS_CACHE: dict[str, tuple[list[Op], list[Stage]]] = {}
_OPS_CACHE_SIZE = 4  # runs whose ops (and loaded models) a long-lived process keeps


def ops_for(recipe: Recipe) -> tuple[list[Op], list[Stage]]:
    """Build the recipe's ops once per worker process and run attempt (models load once per worker).
    Every invocation has its own attempt id, so a process that serves many runs (a notebook, a
    reused Ray worker) keeps only the most recent few: older ops and their models are let go."""
    key = f"{recipe.fingerprint()}:{getattr(recipe, 'run_id', '')}:{getattr(recipe, 'attempt_id', '')}"
    if key not in _OPS_CACHE:
        ops = recipe.build_ops()
        if all(type(op).__module__.startswith("thresher.") for op in ops):
            skip_pandas_probe()
        _OPS_CACHE[key] = (ops, make_plan(ops))
        while len(_OPS_CACHE) > _OPS_CACHE_SIZE:
            del _OPS_CACHE[next(iter(_OPS_CACHE))]  # the oldest
    return _OPS_CACHE[key]


def skip_pandas_probe() -> None:
    """pyarrow imports pandas, where it is installed, the first time it converts anything
    (``pa.array``, ``pa.table``) only to ask whether the input is a pandas object: +25 MB of
    memory and ~0.3 s per worker, though no built-in op hands pyarrow a pandas object. Settle that
    question as "no pandas" while pandas is not imported: pyarrow still imports it for real when
    asked for pandas (``to_pandas``, ``Table.from_pandas``: its shim, pyarrow/pandas-shim.pxi,
    retries the import). Called only where every op of the recipe is built in (a plugin may pass
    pandas objects), and not in a Ray worker (Ray Data hands pyarrow pandas blocks)."""
    if "pandas" in sys.modules or "ray" in sys.modules:
        return
    sys.meta_path.insert(0, _NoPandas)  # an import of pandas fails for this one call
    try:
        pa.array([0])
    finally:
        sys.meta_path.remove(_NoPandas)


class _NoPandas:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError("pandas is left unimported here")
        return None


def empty_ledger(ops: list[Op]) -> Ledger:
    return Ledger([(op.ctx.key, op.name, op.ctx.index) for op in ops])


def clean_partial(layout: Layout, k: int, shard: int, final: bool, piece: str = "") -> None:
    """Remove what an interrupted attempt at (pass k, shard) — or at one piece of it — may have left."""
    base = layout.intermediate(k, shard, piece)
    fp = layout.fingerprints(k, shard, piece)
    q = layout.quarantine_file(k, shard, piece)
    doomed = [*base.parent.glob(base.name + ".*"), fp, q]
    if not piece:  # the whole shard: its pieces too
        doomed += [*fp.parent.glob(fp.stem + ".*"), *q.parent.glob(q.stem + ".*")]
    if final and layout.data.exists():
        doomed += layout.data.glob(shard_prefix(shard) + (f"{piece}-" if piece else "") + "*")
    for f in doomed:
        f.unlink(missing_ok=True)


class PassSink:
    """Where one pass's rows go: output files (last pass), or the intermediate rows plus the
    next global op's fingerprints. ``piece`` names a part of a shard (the Ray executor writes one
    per input block, e.g. ``b00003``); the local executor writes whole shards (``piece=""``)."""

    def __init__(self, recipe: Recipe, layout: Layout, k: int, shard: int, stage: Stage, piece: str = ""):
        self.layout, self.k, self.shard, self.piece = layout, k, shard, piece
        self.barrier = stage.barrier
        self.final = stage.barrier is None
        self.writer = (ShardWriter(layout.data, shard, recipe.output.format, recipe.output.rows_per_shard,
                                   prefix=shard_prefix(shard) + (f"{piece}-" if piece else ""))
                       if self.final else None)
        self.inter = None if self.final else IpcWriter(layout.intermediate(k, shard, piece))
        self.fps: list[pa.Table] = []
        self.tokens = recipe.analysis_tokens if recipe.analysis else None  # tokenizer for analysis token counts
        self.token_share = recipe.analysis_token_share  # ... on this seeded share of the rows
        self.rows = 0  # rows written (last pass) or kept for the next pass (ordinals of this piece)

    def add(self, table: pa.Table, ledger: Ledger, runner: BatchRunner) -> None:
        if table.num_rows == 0:
            return
        if self.final:
            if runner.analysis:  # an analysis writes each row's id and measurements, not the row
                from thresher.pipeline.analyze import LENGTHS, row_stats

                lang = table.column("lang") if "lang" in table.column_names else None
                table = row_stats(table, runner.text_key, runner.id_key, self.tokens, self.token_share)
                measured = table.select([n for n in LENGTHS if n in table.column_names])
                if lang is not None:
                    measured = measured.append_column("lang", lang)
                runner.profile.add_corpus("output", measured, "", extra={n: measured.column(n).drop_null()
                                                                        for n in LENGTHS if n in measured.column_names})
            else:
                runner.profile.add_corpus("output", table, runner.text_key)
            self.writer.write(table.drop_columns([LINE]) if LINE in table.column_names else table)
            self.rows += table.num_rows
            return
        barrier = self.barrier
        entry = ledger[barrier.ctx.key]
        t0 = time.perf_counter()
        barrier.ensure_setup()
        entry.rows_in += table.num_rows
        results, kept = runner.guarded(barrier, barrier.fingerprint, table, ledger)
        for fp, t in zip(results, kept, strict=True):
            n = t.num_rows
            fp = fp.append_column(SHARD, pa.array(np.full(n, self.shard, dtype=np.int32)))
            fp = fp.append_column(ROW, pa.array(np.arange(self.rows, self.rows + n, dtype=np.int64)))
            self.fps.append(fp)
            self.inter.write(t)
            self.rows += n
        entry.seconds += time.perf_counter() - t0
        entry.counters.update(barrier.take_counters())

    def commit(self) -> list[str]:
        """Close everything; returns the output file names (last pass)."""
        if self.final:
            return [str(p.name) for p in self.writer.commit()]
        self.inter.close()
        fps = (pa.concat_tables(self.fps, promote_options="permissive") if self.fps
               else pa.table({SHARD: pa.array([], pa.int32()), ROW: pa.array([], pa.int64())}))
        pq.write_table(fps, self.layout.fingerprints(self.k, self.shard, self.piece))
        return []

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
        if self.inter is not None:
            self.inter.close()


def run_pass_shard(recipe: Recipe, out_dir: str, k: int, shard: Shard, channel: Channel | None = None) -> dict:
    """Run pass ``k`` over one shard and leave a done marker. Returns the marker's content.
    ``channel``: where progress events go (None: no progress, and no cost)."""
    layout = Layout(out_dir)
    ops, stages = ops_for(recipe)
    stage = stages[k]
    clean_partial(layout, k, shard.index, stage.barrier is None)
    layout.pass_dir(k).mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    ledger = empty_ledger(ops)
    runner = make_runner(recipe, stage, shard.rel)
    sink = PassSink(recipe, layout, k, shard.index, stage)
    quarantine: list[dict] = []
    try:
        with tracking(channel, k, shard.index) as track:
            for table in source(recipe, layout, k, shard, stages, ledger, runner, quarantine, track):
                sink.add(runner.run(table, ledger), ledger, runner)
                if track is not None:
                    track.processed(sink.rows)
        files = sink.commit()
    except BaseException:
        sink.abort()
        raise
    quarantine += runner.quarantine
    if quarantine:
        write_jsonl_records_atomic(layout.quarantine_file(k, shard.index), quarantine)
    done = {
        "pass": k, "shard": shard.index, "rows_out": sink.rows, "files": files,
        "ledger": ledger.to_dict()["ops"], "trace": runner.trace, "quarantined": len(quarantine),
        "profile": runner.profile.take(), "seconds": round(time.perf_counter() - t_start, 4), "pid": os.getpid(),
    }
    write_json_atomic(layout.done(k, shard.index), done)
    trim_heap()
    return done


_LIBC = None


def trim_heap() -> None:
    """Hand the heap a shard freed back to the system (glibc ``malloc_trim``; it keeps freed small
    blocks otherwise): a worker waiting for its next shard, or for the driver's resolve, holds
    ~25 MB less (docs/benchmarks.md, "Exact dedup and memory, round two"). No-op off glibc."""
    global _LIBC
    if _LIBC is None:
        import ctypes

        try:
            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


def make_runner(recipe: Recipe, stage: Stage, source: str = "") -> BatchRunner:
    """The batch runner of one stage; ``source`` names the input file (for quarantine records)."""
    return BatchRunner(stage.local_ops, recipe.input.text_key, recipe.input.id_key,
                       recipe.output.keep_stats, recipe.output.trace_samples, source, analysis=recipe.analysis)


def source(recipe: Recipe, layout: Layout, k: int, shard: Shard, stages: list[Stage], ledger: Ledger,
           runner: BatchRunner, quarantine: list[dict], track: Tracker | None = None) -> Iterator[pa.Table]:
    """Batches entering pass k: read from input (k = 0), or the previous pass's rows with the
    previous global op's decisions applied. ``track`` follows the input consumed (bytes of the
    shard, pass 0; rows of the previous pass's output after) and the rows that came in."""
    if k == 0:
        fs.configure(getattr(recipe, "storage", None))  # URL inputs: the driver's store options and environment
        block_bytes = int(recipe.executor.batch_size_mb * (1 << 20))
        read = ledger[READ]
        t0 = time.perf_counter()
        for rb in read_shard(shard, recipe.input.text_key, recipe.input.id_key, block_bytes,
                             alt_text_keys=text_source_columns(stages[0].local_ops)):
            read.rows_in += rb.table.num_rows + len(rb.quarantined)
            read.rows_out += rb.table.num_rows
            for q in rb.quarantined:
                read.quarantined[_reason_class(q["reason"])] += 1
            read.counters.update(rb.counters)
            quarantine.extend(rb.quarantined)
            read.seconds += time.perf_counter() - t0
            if track is not None:
                track.read(rb.pos, rb.table.num_rows + len(rb.quarantined))
            table = rb.table
            runner.profile.add_corpus("input", table, recipe.input.text_key or "")
            if rb.lines is not None and table.num_rows:  # provenance for rows an op quarantines later
                table = table.append_column(LINE, pa.array(rb.lines, pa.int64()))
            yield table
            t0 = time.perf_counter()
        return
    barrier = stages[k - 1].barrier
    entry = ledger[barrier.ctx.key]
    # only this shard's row groups are read (the file is sorted by shard, in DECISION_ROW_GROUP rows)
    decided = pl.scan_parquet(layout.decisions(k - 1)).filter(pl.col(SHARD) == shard.index).collect().sort(ROW)
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
            table = runner.record_global_drops(barrier, table, local, drop_reasons[lo:hi], ledger)
            if not runner.analysis:  # an analysis keeps (and flags) them
                keep[local] = False
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
        if track is not None:
            track.read(offset, n)
        yield table


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
    """Global phase of pass k's barrier, in this process: all fingerprints -> decisions.parquet."""
    layout = Layout(out_dir)
    ops, stages = ops_for(recipe)
    barrier: GlobalOp = stages[k].barrier
    t0 = time.perf_counter()
    barrier.ensure_setup()
    decided = barrier.resolve(fingerprint_frame(layout, k, n_shards))
    return write_decisions(layout, k, barrier, decided, barrier.take_counters(), time.perf_counter() - t0)


def piece_offsets(layout: Layout, k: int, n_shards: int) -> list[tuple[int, str, int]]:
    """(shard, piece, first row) of every fingerprint file of pass k, in input order. A shard run
    whole has one piece ""; a shard the Ray executor ran block by block has one per block, whose
    rows are numbered after the blocks before it (the order the next pass reads them in)."""
    from thresher.pipeline.summary import read_pieces

    known = read_pieces(layout, k)  # written by the driver's marker summary after the pass
    if known is not None and len(known) != n_shards:
        known = None
    out = []
    for shard in range(n_shards):
        pieces = known[shard] if known is not None else (layout.read_done(k, shard) or {}).get("pieces", [["", 0]])
        offset = 0
        for piece, rows in pieces:
            out.append((shard, piece, offset))
            offset += rows
    return out


def fingerprint_frame(layout: Layout, k: int, n_shards: int) -> pl.LazyFrame:
    """Every fingerprint file of pass k, in input order. ``.pieces`` on the frame: one frame per
    file (the same rows), for an op that reads them one at a time (``fingerprint_pieces``)."""
    frames = []
    for shard, piece, offset in piece_offsets(layout, k, n_shards):
        lf = pl.scan_parquet(layout.fingerprints(k, shard, piece))
        frames.append(lf.with_columns(pl.col(ROW) + offset) if offset else lf)
    out = pl.concat(frames, how="diagonal_relaxed") if len(frames) > 1 else frames[0]
    out.pieces = frames
    return out


def fingerprint_pieces(frame: pl.LazyFrame) -> list[pl.LazyFrame]:
    """The per-file frames of a ``fingerprint_frame`` (``[frame]`` for any other frame)."""
    return getattr(frame, "pieces", None) or [frame]


DECISION_ROW_GROUP = 16_384  # decisions per row group: a shard of the next pass reads only its own groups


def write_decisions(layout: Layout, k: int, barrier: GlobalOp, decided: pl.DataFrame, counters: dict,
                    seconds: float) -> dict:
    """Save a resolve step's decisions (and state) atomically, then its resolved marker."""
    decided = decided.select([pl.col(SHARD).cast(pl.Int32), pl.col(ROW).cast(pl.Int64), pl.col(REASON).cast(pl.Utf8)]
                             + [c for c in decided.columns if c not in (SHARD, ROW, REASON)]).sort([SHARD, ROW])
    tmp = layout.decisions(k).with_name("decisions.parquet.tmp")
    decided.write_parquet(tmp, row_group_size=DECISION_ROW_GROUP, statistics=True)
    os.replace(tmp, layout.decisions(k))
    if barrier.state is not None:
        tmp = layout.state(k).with_name("state.parquet.tmp")
        barrier.state.write_parquet(tmp)
        os.replace(tmp, layout.state(k))
    info = {"pass": k, "op": barrier.ctx.key, "seconds": round(seconds, 4), "decided": decided.height,
            "counters": dict(counters), "distributions": barrier.take_distributions()}
    write_json_atomic(layout.resolved(k), info)
    return info


def load_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))
