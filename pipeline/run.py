"""Drive a run: check inputs and the output directory, run the plan's passes on an executor,
then gather the ledger, check its balance and mark the output complete."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import OutputError
from pipeline.executors.passes import load_json, ops_for
from pipeline.io.inputs import Shard, plan_shards, resolve_inputs
from pipeline.io.writers import write_json_atomic, write_jsonl_records_atomic
from pipeline.layout import Layout
from pipeline.ledger import Ledger
from pipeline.recipe import Recipe


@dataclass
class RunResult:
    out: Path
    ledger: Ledger
    output_rows: int
    files: list[str]
    seconds: float


def prepare_output(layout: Layout, recipe: Recipe, shards: list[Shard], resume: bool, overwrite: bool) -> bool:
    """Make the output directory ready. Returns True when a finished run is being resumed."""
    manifest = {"recipe": recipe.fingerprint(), "source": recipe.source,
                "shards": [[s.rel, s.format, s.start, s.end, s.size] for s in shards]}
    out = layout.out
    if out.exists() and any(out.iterdir()):
        ours = layout.success.exists() or layout.manifest.exists()
        if not ours:
            raise OutputError(f"output directory '{out}' is not empty and is not a thresher output; "
                              "choose another --output")
        if resume:
            if layout.success.exists():
                return True
            old = load_json(layout.manifest)
            if old.get("recipe") != manifest["recipe"]:
                raise OutputError(f"cannot resume '{out}': the recipe changed since the interrupted run "
                                  "(use --overwrite to start again)")
            if old.get("shards") != manifest["shards"]:
                raise OutputError(f"cannot resume '{out}': the input files changed since the interrupted run "
                                  "(use --overwrite to start again)")
            return False
        if layout.manifest.exists() and not layout.success.exists() and not overwrite:
            raise OutputError(f"output directory '{out}' holds an unfinished run; "
                              "pass --resume to finish it or --overwrite to start again")
        shutil.rmtree(out)  # a finished earlier run of ours (or --overwrite): replace it
    layout.work.mkdir(parents=True, exist_ok=True)
    write_json_atomic(layout.manifest, manifest)
    return False


def make_executor(recipe: Recipe):
    if recipe.executor.type == "ray":
        from pipeline.executors.ray import RayExecutor

        return RayExecutor(recipe.executor.workers, recipe.executor.address)
    from pipeline.executors.local import LocalExecutor

    return LocalExecutor(recipe.executor.workers)


def run(recipe: Recipe, *, resume: bool = False, overwrite: bool = False, progress=None) -> RunResult:
    t0 = time.perf_counter()
    files = resolve_inputs(recipe.input.paths, recipe.input.format)  # every input problem, before work
    shards = plan_shards(files, recipe.input.shard_size_mb)
    layout = Layout(recipe.output.path)
    out = str(layout.out)
    ops, stages = ops_for(recipe)
    for op in ops:
        op.prepare()  # fetch models and lists now: a missing asset stops the run before any data is read
    if prepare_output(layout, recipe, shards, resume, overwrite):
        return _result_from_disk(layout, time.perf_counter() - t0)
    timings: dict = {"executor": recipe.executor.type, "passes": []}  # this invocation's wall seconds
    t_start = time.perf_counter()
    with make_executor(recipe) as executor:
        timings["start_seconds"] = _since(t_start)
        for k, stage in enumerate(stages):
            todo = [s for s in shards if not layout.done(k, s.index).exists()]
            task = progress.start_pass(k, len(shards), len(shards) - len(todo)) if progress else None
            names = " + ".join(op.ctx.key for op in stage.local_ops) or "read/write"
            if stage.barrier is not None:
                names += f" -> {stage.barrier.ctx.key} (fingerprint)"
            t_pass = time.perf_counter()
            executor.run_pass(recipe, out, k, todo, lambda _s, task=task: progress.advance(task) if progress else None,
                              context=f"pass {k} (ops: {names})")
            record = {"pass": k, "shards": len(todo), "seconds": _since(t_pass)}
            if stage.barrier is not None and not layout.resolved(k).exists():
                t_resolve = time.perf_counter()
                executor.resolve(recipe, out, k, len(shards))
                record["resolve"] = stage.barrier.ctx.key
                record["resolve_seconds"] = _since(t_resolve)
            timings["passes"].append(record)
    timings["seconds"] = _since(t0)
    result = finish(layout, recipe, shards, len(stages), timings)
    result.seconds = time.perf_counter() - t0
    return result


def _since(t: float) -> float:
    return round(time.perf_counter() - t, 3)


def finish(layout: Layout, recipe: Recipe, shards: list[Shard], n_passes: int, timings: dict | None = None) -> RunResult:
    ops, stages = ops_for(recipe)
    ledger = Ledger([(op.ctx.key, op.name, op.ctx.index) for op in ops])
    trace: dict[str, list[dict]] = {op.ctx.key: [] for op in ops}
    files: list[str] = []
    output_rows = 0
    for k in range(n_passes):
        for s in shards:
            done = layout.read_done(k, s.index)
            if done is None:
                raise OutputError(f"pass {k} shard {s.index} has no done marker; the run is incomplete")
            ledger.merge(Ledger.from_dict({"ops": done["ledger"]}))
            for key, recs in done["trace"].items():
                room = recipe.output.trace_samples - len(trace[key])
                trace[key].extend(recs[: max(0, room)])
            if k == n_passes - 1:
                output_rows += done["rows_out"]
                files += [f"data/{f}" for f in done["files"]]
        if stages[k].barrier is not None:
            info = load_json(layout.resolved(k))
            entry = ledger[info["op"]]
            entry.seconds += info["seconds"]
            entry.counters.update(info.get("counters", {}))
    report = ledger.to_dict(output_rows)
    report["run"] = {"recipe": recipe.model.name or Path(recipe.source).stem, "source": recipe.source,
                     "fingerprint": recipe.fingerprint(), "executor": recipe.executor.type,
                     "shards": len(shards), "files": files}
    if timings is not None:
        report["run"]["timings"] = timings
    try:
        ledger.check_balance(output_rows)
        report["balanced"] = True
    except Exception:
        report["balanced"] = False
        write_json_atomic(layout.ledger, report)
        raise
    for op in ops:
        if trace[op.ctx.key]:
            write_jsonl_records_atomic(layout.trace / f"{op.ctx.index:02d}-{op.ctx.key}.jsonl", trace[op.ctx.key])
    write_json_atomic(layout.ledger, report)
    shutil.rmtree(layout.work, ignore_errors=True)
    layout.success.write_text("ok\n")
    return RunResult(layout.out, ledger, output_rows, files, 0.0)


def _result_from_disk(layout: Layout, seconds: float) -> RunResult:
    report = load_json(layout.ledger)
    return RunResult(layout.out, Ledger.from_dict(report), report["totals"]["output"], report["run"]["files"], seconds)
