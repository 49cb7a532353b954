"""A pass on Ray: shards -> one task (or model-actor call) per shard that reads the shard
block by block, runs each block through the fused local ops and writes the next global op's
fingerprints or the output -> the shard's done marker, merged in the task, which the driver writes.

Every block keeps its own schema (blocks are never concatenated: a field one JSONL block lacks
would become null there) and a stable name for idempotent, atomic outputs (a retried task rewrites
the same files). Blocks go from the reader to the ops inside one process: none crosses the object
store, and the driver sees one small record per shard — its per-block bookkeeping (a ledger and a
data profile per block, ~30 ms each for the fineweb recipe) would otherwise be the largest serial
part of a pass on many cores (docs/design.md, "Scaling model (issue 19)").
"""

from __future__ import annotations

import json
import os
import time

import pyarrow as pa

from thresher.pipeline import fs
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

MB = 1 << 20


def piece_name(block: int) -> str:
    return f"b{block:05d}"


def read_blocks(recipe: Recipe, layout: Layout, k: int, shard: Shard, mark: BlockMark | None = None):
    """A shard's input blocks (pass 0: parsed input; later passes: the previous pass's rows with the
    global decisions applied), each with what reading it added to the ledger, trace and quarantine
    (``stats``, taken out of them so the next block reports only its own). With a ``mark``
    (progress), each block's stats say where it ends in its shard and the rows it brought in. After
    the last block, one empty block carries what was counted after it."""
    ops, stages = ops_for(recipe)
    ledger = empty_ledger(ops)
    runner = make_runner(recipe, stages[k], shard.rel)
    quarantine: list[dict] = []
    block = 0
    for table in source(recipe, layout, k, shard, stages, ledger, runner, quarantine, mark):
        yield block, table, _take_stats(ledger, runner, quarantine, mark)
        block += 1
    if quarantine or runner.quarantine or any(e.rows_in or e.quarantined for e in ledger.entries.values()):
        yield block, pa.table({}), _take_stats(ledger, runner, quarantine, mark)


def _take_stats(ledger: Ledger, runner, quarantine: list[dict], mark: BlockMark | None) -> dict:
    stats = {"ledger": ledger.take(), "trace": {key: v[:] for key, v in runner.trace.items() if v},
             "quarantine": quarantine + runner.quarantine, "source": runner.source, "profile": runner.profile.take()}
    if mark is not None:
        stats["progress"] = mark.take()  # [where the block ends in the shard, rows it brought in]
    for v in runner.trace.values():
        v.clear()
    quarantine.clear()
    runner.quarantine.clear()
    return stats


def process_blocks(batch: pa.Table, recipe: Recipe | tuple, out: str, k: int, shards: dict[int, Shard] | None = None,
                   channel: Channel | None = None) -> pa.Table:
    """A pass's Ray task (see ``_process_blocks``); ``recipe`` may be ``(recipe, shards)``, one
    object-store argument for all the pass's tasks. ``out`` an object-store URL (a direct output,
    ``objectstore``): the shards run in a scratch directory of this task, whose files are then
    uploaded under their final keys, and their done markers after them."""
    if isinstance(recipe, tuple):
        recipe, shards = recipe
    if not fs.is_url(out):
        return _process_blocks(batch, recipe, out, k, shards, channel)
    from thresher.pipeline.io.objectstore import TaskWork

    with TaskWork(recipe, out, k, batch["shard"].to_pylist()) as work:
        result = _process_blocks(batch, recipe, str(work.dir), k, shards, channel)
        work.commit(result["done"].to_pylist())
    return result


def _process_blocks(batch: pa.Table, recipe: Recipe, out: str, k: int, shards: dict[int, Shard],
                    channel: Channel | None = None) -> pa.Table:
    """Each shard of ``batch`` read block by block, each block through the fused local
    ops, then the next global op's fingerprints or the output files (per block). Returns one row per
    shard: its done marker, merged here from the blocks' summaries (the driver only writes it), and
    the blocks' progress records. ``channel``: progress events — each block done (shard, block,
    where it ends in the shard, rows in, rows out) and this process's LLM requests."""
    layout = Layout(out)
    markers, progress = [], []
    with tracking(channel, k) as track:
        for index in batch["shard"].to_pylist():
            mark = BlockMark() if channel is not None else None
            pieces = [_process_block(recipe, layout, k, index, block, table, stats, track)
                      for block, table, stats in read_blocks(recipe, layout, k, shards[index], mark)]
            markers.append(json.dumps(merge_summaries(recipe, k, index, pieces)))
            progress.append(json.dumps([p["progress"] for p in pieces if "progress" in p]))
    return pa.table({"done": markers, "progress": progress})


def _process_block(recipe: Recipe, layout: Layout, k: int, shard: int, block: int, table: pa.Table, stats: dict,
                   track: Tracker | None) -> dict:
    """One block through the pass's ops and into its files (cleaned first, written atomically: a
    retried task rewrites the same files); its summary."""
    t0 = time.perf_counter()
    ops, stages = ops_for(recipe)
    stage = stages[k]
    piece = piece_name(block)
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
    summary = {"shard": shard, "block": block, "rows": sink.rows, "files": files,
               "ledger": ledger.to_dict()["ops"], "trace": trace, "quarantined": len(quarantine),
               "profile": runner.profile.take(), "seconds": time.perf_counter() - t0}
    if "progress" in stats:  # [shard, block, where it ends in the shard, rows in, rows out]
        summary["progress"] = [shard, block, *stats["progress"], sink.rows]
        if track is not None:
            track.blocks.append(summary["progress"])
    return summary


class BlockProcessor:
    """The actor form of ``process_blocks``: builds the ops (and loads their models) once per actor.
    Use ``block_processor(recipe, out, k, shards)``, which binds the run to a subclass, so Ray needs
    no constructor arguments (arguments it keeps in the object store make restarted actors fragile)."""

    recipe: Recipe
    out: str
    k: int
    shards: dict[int, Shard]
    channel: Channel | None = None

    def __init__(self):
        ops, _ = ops_for(self.recipe)
        for op in ops:
            if op.resources.needs_model:
                op.ensure_setup()

    def __call__(self, batch: pa.Table) -> pa.Table:
        return process_blocks(batch, self.recipe, self.out, self.k, self.shards, self.channel)

    def run(self, batch: pa.Table) -> pa.Table:
        return self(batch)


def block_processor(recipe: Recipe, out: str, k: int, shards: dict[int, Shard], channel: Channel | None = None) -> type:
    return type("BlockProcessor", (BlockProcessor,),
                {"recipe": recipe, "out": out, "k": k, "shards": shards, "channel": channel})


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
             channel: Channel | None = None, events=None, model_actors: bool | None = None) -> None:
    """Pass k over ``shards``: one Ray task (or model-actor call) per shard; then the done markers,
    which the tasks merged. Ops that load a model run in a pool of actors (``model_actors``, by
    default ``executor.model_actors``; one per worker slot, at most one per shard, each loading the
    models once) or, like every other op, in tasks — whose worker processes Ray reuses, so a model
    still loads once per process. Progress: the tasks send theirs through ``channel``; the shards' results give
    ``events`` every block's record again (the same record twice changes nothing).

    Plain Ray tasks and actors, not a Ray Data pipeline: a shard's blocks never leave its task
    anyway, and Ray Data's per-pipeline start (planning, operator and actor-pool start-up, its stats
    and autoscaling actors) cost 1-3 s per pass and ~300 MB (docs/benchmarks.md, "Ray overhead and
    scaling model"). A task a worker's death interrupts is retried by Ray (``max_retries``, and
    ``max_task_retries`` for restarted actors); the outputs are idempotent (see ``_process_block``)."""
    import ray

    layout = Layout(out)
    _, stages = ops_for(recipe)
    final = stages[k].barrier is None
    layout.pass_dir(k).mkdir(parents=True, exist_ok=True)
    for s in shards:
        clean_partial(layout, k, s.index, final)
    direct = fs.direct_output(recipe)  # an object-store output the tasks write to themselves
    if direct:
        from thresher.pipeline.io.objectstore import before_pass

        before_pass(direct, layout, k, shards, final)
    task_out = direct or out  # tasks of a direct run never see the driver's directory
    cpus, memory, needs_model = stage_resources(recipe, k)
    by_index = {s.index: s for s in shards}
    markers: dict[int, dict] = {}

    def done(t: pa.Table) -> None:
        for marker, progress in zip(t["done"].to_pylist(), t["progress"].to_pylist(), strict=True):
            marker = json.loads(marker)
            markers[marker["shard"]] = marker
            if events is not None and progress != "[]":
                events(("b", k, json.loads(progress)))

    # A shard's blocks stream from its reader straight into the ops in the same process (no block
    # crosses the object store) and the shard's summary is merged there, so the driver's work per
    # pass is one small record per shard, not a ledger and profile per block.
    if model_actors is None:
        model_actors = recipe.executor.model_actors
    if needs_model and model_actors:
        _run_on_actors(block_processor(recipe, task_out, k, by_index, channel), shards, parallelism, cpus, memory, done)
    else:
        task = ray.remote(process_blocks).options(num_cpus=cpus, memory=memory, max_retries=3)
        refs = ray.put((recipe, by_index))
        rest = [task.remote(_batch(s), refs, task_out, k, None, channel) for s in shards]
        try:
            while rest:
                ready, rest = ray.wait(rest, num_returns=1)
                done(ray.get(ready[0]))
        finally:
            for ref in rest:  # a failed shard stops the pass: nobody waits for the others' results
                ray.cancel(ref)
    for shard in shards:  # after the whole pass: a driver killed mid-pass leaves it to --resume
        write_json_atomic(layout.done(k, shard.index), markers[shard.index])
        on_shard_done(shard.index)


def _batch(shard: Shard) -> pa.Table:
    return pa.table({"shard": [shard.index]})


def _run_on_actors(cls: type, shards: list[Shard], parallelism: int, cpus: float, memory: int, done) -> None:
    """Each shard to the next free actor of a pool of ``min(parallelism, shards)``, one shard per
    actor at a time (so a slow shard holds up no other); the actors are stopped after the pass."""
    import ray

    actor = ray.remote(cls).options(num_cpus=cpus, memory=memory, max_restarts=3, max_task_retries=3)
    pool = [actor.remote() for _ in range(max(1, min(parallelism, len(shards))))]
    queue = list(reversed(shards))
    busy: dict = {}
    try:
        for a in pool:
            if queue:
                busy[a.run.remote(_batch(queue.pop()))] = a
        while busy:
            ready, _ = ray.wait(list(busy), num_returns=1)
            a = busy.pop(ready[0])
            done(ray.get(ready[0]))
            if queue:
                busy[a.run.remote(_batch(queue.pop()))] = a
    finally:
        for a in pool:
            ray.kill(a)


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
