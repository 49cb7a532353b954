"""A pass on Ray Data: shards -> read blocks (tasks) -> fused local ops and the next global op's
fingerprints, or the output write (tasks, or an actor pool when an op loads a model) -> a summary
per block that the driver turns into the same done markers the local executor leaves.

Each Ray Data row carries one input block as an Arrow IPC stream (``__arrow``) with its shard,
block number and what reading it cost (``__stats``: ledger, trace, quarantine). Carrying the block
whole keeps its exact schema — Ray concatenates the rows of consecutive blocks into one Ray block,
and concatenating tables would unify their schemas (a field one JSONL block lacks would become
null there) — and gives every block a stable name for idempotent, atomic outputs: a retried task
rewrites the same files.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict

import pyarrow as pa

from thresher.pipeline.columns import SHARD
from thresher.pipeline.executors.passes import (
    PassSink,
    clean_partial,
    empty_ledger,
    make_runner,
    ops_for,
    source,
)
from thresher.pipeline.io.inputs import Shard
from thresher.pipeline.io.writers import write_json_atomic, write_jsonl_records_atomic
from thresher.pipeline.layout import Layout
from thresher.pipeline.ledger import Ledger
from thresher.pipeline.profile import Profile
from thresher.pipeline.progress import BlockMark, Channel, Tracker, tracking
from thresher.pipeline.recipe import Recipe
from thresher.pipeline.runner import keep_sample

BLOCK, PAYLOAD, STATS = "__block", "__arrow", "__stats"  # with SHARD: a Ray Data row is one input block
MB = 1 << 20


def _to_ipc(table: pa.Table) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue()


def _from_ipc(buf: pa.Buffer) -> pa.Table:
    return pa.ipc.open_stream(buf).read_all()


def piece_name(block: int) -> str:
    return f"b{block:05d}"


def read_blocks(batch: pa.Table, recipe: Recipe, out: str, k: int, shards: dict[int, Shard],
                channel: Channel | None = None):
    """Ray Data UDF: a shard -> its input blocks (pass 0: parsed input; later passes: the previous
    pass's rows with the global decisions applied), one row per block. With a ``channel`` (progress),
    each block carries where it ends in its shard and the rows it brought in."""
    layout = Layout(out)
    ops, stages = ops_for(recipe)
    for index in batch["shard"].to_pylist():
        ledger = empty_ledger(ops)
        runner = make_runner(recipe, stages[k], shards[index].rel)
        quarantine: list[dict] = []
        block = 0
        mark = BlockMark() if channel is not None else None
        for table in source(recipe, layout, k, shards[index], stages, ledger, runner, quarantine, mark):
            yield _block_row(index, block, table, ledger, runner, quarantine, mark)
            block += 1
        if quarantine or runner.quarantine or any(e.rows_in or e.quarantined for e in ledger.entries.values()):
            yield _block_row(index, block, pa.table({}), ledger, runner, quarantine, mark)  # counted after the last block


def _block_row(shard: int, block: int, table: pa.Table, ledger: Ledger, runner, quarantine: list[dict],
               mark: BlockMark | None = None) -> pa.Table:
    """One block as a Ray Data row, with what reading it added to the ledger, trace and quarantine
    (taken out of them, so the next block reports only its own)."""
    stats = {"ledger": ledger.take(), "trace": {key: v[:] for key, v in runner.trace.items() if v},
             "quarantine": quarantine + runner.quarantine, "source": runner.source, "profile": runner.profile.take()}
    if mark is not None:
        stats["progress"] = mark.take()  # [where the block ends in the shard, rows it brought in]
    for v in runner.trace.values():
        v.clear()
    quarantine.clear()
    runner.quarantine.clear()
    return pa.table({SHARD: pa.array([shard], pa.int32()), BLOCK: pa.array([block], pa.int32()),
                     PAYLOAD: _one_binary(_to_ipc(table)), STATS: [json.dumps(stats)]})


def _one_binary(buf: pa.Buffer) -> pa.Array:
    """A one-element large_binary array over ``buf`` without copying it."""
    offsets = pa.array([0, buf.size], pa.int64()).buffers()[1]
    return pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, buf])


def process_blocks(batch: pa.Table, recipe: Recipe, out: str, k: int, channel: Channel | None = None) -> pa.Table:
    """Ray Data UDF: fused local ops over each block, then the next global op's fingerprints, or
    the output files. Returns one summary row per block. ``channel``: progress events — each block
    done (shard, block, where it ends in the shard, rows in, rows out; also in its summary, for the
    blocks whose events the throttle held back) and this process's LLM requests."""
    with tracking(channel, k) as track:
        return _process_blocks(batch, recipe, out, k, track)


def _process_blocks(batch: pa.Table, recipe: Recipe, out: str, k: int, track: Tracker | None) -> pa.Table:
    layout = Layout(out)
    ops, stages = ops_for(recipe)
    stage = stages[k]
    summaries = []
    for i in range(batch.num_rows):
        t0 = time.perf_counter()
        shard, block = batch[SHARD][i].as_py(), batch[BLOCK][i].as_py()
        piece = piece_name(block)
        stats = json.loads(batch[STATS][i].as_py())
        table = _from_ipc(batch[PAYLOAD][i].as_buffer())
        clean_partial(layout, k, shard, stage.barrier is None, piece)
        ledger = empty_ledger(ops)
        ledger.merge(Ledger.from_dict({"ops": stats["ledger"]}))
        runner = make_runner(recipe, stage, stats.get("source", ""))
        runner.profile.merge(stats.get("profile", {}))
        sink = PassSink(recipe, layout, k, shard, stage, piece)
        try:
            if table.num_rows:
                sink.add(runner.run(table, ledger), ledger, runner)
            files = sink.commit()
        except BaseException:
            sink.abort()
            raise
        quarantine = stats["quarantine"] + runner.quarantine
        if quarantine:
            write_jsonl_records_atomic(layout.quarantine_file(k, shard, piece), quarantine)
        trace = stats["trace"]
        for key, recs in runner.trace.items():
            trace[key] = trace.get(key, []) + recs
        summaries.append({"shard": shard, "block": block, "rows": sink.rows, "files": files,
                          "ledger": ledger.to_dict()["ops"], "trace": trace, "quarantined": len(quarantine),
                          "profile": runner.profile.take(), "seconds": time.perf_counter() - t0})
        if "progress" in stats:  # [shard, block, where it ends in the shard, rows in, rows out]
            summaries[-1]["progress"] = [shard, block, *stats["progress"], sink.rows]
            if track is not None:
                track.blocks.append(summaries[-1]["progress"])
    return pa.table({"summary": [json.dumps(s) for s in summaries]})


class BlockProcessor:
    """The actor form of ``process_blocks``: builds the ops (and loads their models) once per actor.
    Use ``block_processor(recipe, out, k)``, which binds the run to a subclass, so Ray needs no
    constructor arguments (arguments it keeps in the object store make restarted actors fragile)."""

    recipe: Recipe
    out: str
    k: int
    channel: Channel | None = None

    def __init__(self):
        ops, _ = ops_for(self.recipe)
        for op in ops:
            if op.resources.needs_model:
                op.ensure_setup()

    def __call__(self, batch: pa.Table) -> pa.Table:
        return process_blocks(batch, self.recipe, self.out, self.k, self.channel)


def block_processor(recipe: Recipe, out: str, k: int, channel: Channel | None = None) -> type:
    return type("BlockProcessor", (BlockProcessor,), {"recipe": recipe, "out": out, "k": k, "channel": channel})


def stage_resources(recipe: Recipe, k: int) -> tuple[float, int, bool]:
    """(cpus, memory bytes, needs a model) of pass k's fused ops, from what each op declares."""
    _, stages = ops_for(recipe)
    stage = stages[k]
    ops = list(stage.local_ops) + ([stage.barrier] if stage.barrier is not None else [])
    cpus = max([op.resources.cpus for op in ops] + [1.0])
    block = int(recipe.executor.batch_size_mb * MB)
    memory = (256 + max([op.resources.memory_mb for op in ops] + [0])) * MB + 4 * block  # interpreter + op + blocks
    return cpus, memory, any(op.resources.needs_model for op in ops)


def run_pass(recipe: Recipe, out: str, k: int, shards: list[Shard], parallelism: int, on_shard_done,
             channel: Channel | None = None, events=None) -> None:
    """Pass k over ``shards`` as one Ray Data pipeline; then a done marker per shard. Ops that load
    a model run in an actor pool (``executor.model_actors``, the default) or, like every other op,
    in tasks — whose worker processes Ray reuses, so a model still loads once per process.
    Progress: the tasks send theirs through ``channel``; the block summaries, as they arrive, give
    ``events`` every block's record again (the same record twice changes nothing)."""
    import ray

    layout = Layout(out)
    _, stages = ops_for(recipe)
    final = stages[k].barrier is None
    layout.pass_dir(k).mkdir(parents=True, exist_ok=True)
    for s in shards:
        clean_partial(layout, k, s.index, final)
    cpus, memory, needs_model = stage_resources(recipe, k)
    ds = ray.data.from_items([{"shard": s.index} for s in shards], override_num_blocks=len(shards))
    read_args = (recipe, out, k, {s.index: s for s in shards}, channel)
    if needs_model and recipe.executor.model_actors:
        # A fixed pool of one actor per worker slot, each loading its models once. The reader stage
        # asks for the same resources, so Ray Data fuses it into the actors: each actor reads its
        # shards and streams their blocks through the ops (separate reader processes starved the
        # actors on small machines, and the actors waited for them).
        ds = ds.map_batches(read_blocks, fn_args=read_args, batch_size=1, batch_format="pyarrow",
                            num_cpus=cpus, memory=memory)
        ds = ds.map_batches(block_processor(recipe, out, k, channel), batch_size=1, batch_format="pyarrow",
                            concurrency=max(1, parallelism), num_cpus=cpus, memory=memory)
    else:
        # the same resources on both stages, so Ray Data fuses them: one task reads a shard and
        # runs its blocks through the ops as they stream out of the reader
        ds = ds.map_batches(read_blocks, fn_args=read_args, batch_size=1, batch_format="pyarrow",
                            num_cpus=cpus, memory=memory)
        ds = ds.map_batches(process_blocks, fn_args=(recipe, out, k, channel), batch_size=1, batch_format="pyarrow",
                            num_cpus=cpus, memory=memory)
    by_shard: dict[int, list[dict]] = defaultdict(list)
    for t in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        for s in t["summary"].to_pylist():
            s = json.loads(s)
            by_shard[s["shard"]].append(s)
            if events is not None and "progress" in s:
                events(("b", k, [s["progress"]]))
    for shard in shards:
        write_json_atomic(layout.done(k, shard.index), merge_summaries(recipe, k, shard.index, by_shard[shard.index]))
        on_shard_done(shard.index)


def merge_summaries(recipe: Recipe, k: int, shard: int, pieces: list[dict]) -> dict:
    """One shard's block summaries -> the done marker the local executor would write (plus the
    pieces, in order, so the next resolve numbers each piece's rows after the ones before it)."""
    ops, _ = ops_for(recipe)
    pieces = sorted(pieces, key=lambda s: s["block"])
    ledger = empty_ledger(ops)
    trace: dict[str, list] = {op.ctx.key: [] for op in ops}
    profile = Profile()
    for s in pieces:
        ledger.merge(Ledger.from_dict({"ops": s["ledger"]}))
        profile.merge(s.get("profile", {}))
        for key, recs in s["trace"].items():
            trace[key] = keep_sample(trace.get(key, []) + recs, recipe.output.trace_samples)
    return {"pass": k, "shard": shard, "rows_out": sum(s["rows"] for s in pieces),
            "files": [f for s in pieces for f in s["files"]], "ledger": ledger.to_dict()["ops"], "trace": trace,
            "quarantined": sum(s["quarantined"] for s in pieces), "profile": profile.to_dict(),
            "seconds": round(sum(s["seconds"] for s in pieces), 4), "pid": os.getpid(),
            "pieces": [[piece_name(s["block"]), s["rows"]] for s in pieces]}


class _EventBox:
    """The actor behind ``RayEvents``."""

    def __init__(self):
        self.items: list = []

    def put(self, event) -> None:
        self.items.append(event)

    def take(self) -> list:
        items, self.items = self.items, []
        return items


class RayEvents:
    """The progress queue of a Ray run: a small actor (no CPU). ``put`` (a task) returns once the
    event is there, so it is there before the task's result; ``take`` (the driver) empties it."""

    def __init__(self):
        import ray

        self.actor = ray.remote(num_cpus=0)(_EventBox).remote()

    def put(self, event) -> None:
        import ray

        ray.get(self.actor.put.remote(event))

    def take(self) -> list:
        import ray

        return ray.get(self.actor.take.remote())

    def close(self) -> None:
        import contextlib

        import ray

        with contextlib.suppress(Exception):  # a Ray already shut down took it along
            ray.kill(self.actor)
