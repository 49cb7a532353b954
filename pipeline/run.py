"""Drive a run: check inputs and the output directory, run the plan's passes on an executor,
then gather the ledger, check its balance and mark the output complete."""

from __future__ import annotations

import shutil
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from thresher.pipeline import fs, outdir
from thresher.pipeline.columns import no_decisions
from thresher.pipeline.errors import OutputError, RunFailed
from thresher.pipeline.executors.passes import load_json, ops_for, trim_heap, write_decisions
from thresher.pipeline.faults import crash_point
from thresher.pipeline.io.inputs import Shard, plan_shards, resolve_inputs
from thresher.pipeline.io.writers import write_bytes_atomic, write_json_atomic, write_jsonl_records_atomic
from thresher.pipeline.layout import PROFILE_NAME, Layout
from thresher.pipeline.ledger import Ledger
from thresher.pipeline.profile import Profile
from thresher.pipeline.progress import pass_totals
from thresher.pipeline.recipe import Recipe
from thresher.pipeline.summary import MarkerSummary


@dataclass
class RunResult:
    out: Path
    ledger: Ledger
    output_rows: int
    files: list[str]
    seconds: float
    url: str | None = None  # the object-store URL the output was published to (``out`` was its staging)


def input_roots(paths: list[str]) -> list[str]:
    """The directories and files a recipe's input paths name (globs by their fixed part)."""
    from thresher.pipeline.io.inputs import glob_root

    return [glob_root(p) if any(c in p for c in "*?[") else p for p in paths
            if not p.startswith("demo:") and not fs.is_url(p)]


def check_output_path(layout: Layout) -> None:
    """Read-only checks before anything is touched: the output is a directory of ours (or empty, or
    new) and holds nothing thresher did not write."""
    out = layout.out
    if out.exists() and not out.is_dir():
        raise OutputError(f"the output path '{out}' is a file, not a directory; choose another --output")
    if not out.is_dir():
        return
    present = [f for f in outdir.list_files(out) if f != outdir.LOCK_NAME]
    if present and outdir.owned_files(out, present) is None:
        raise _not_ours(out, present)


def _not_ours(out: Path, present: list[str]) -> OutputError:
    return OutputError(f"output directory '{out}' is not empty and is not a thresher output (it holds "
                       f"{outdir.describe(present)}); choose another --output")


def prepare_output(layout: Layout, recipe: Recipe, shards: list[Shard], resume: bool, overwrite: bool) -> bool:
    """Make the output directory ready (under the output lock). Sets ``recipe.run_id``. Returns
    True when a finished run is being resumed."""
    manifest = {"recipe": recipe.fingerprint(), "source": recipe.source,
                "shards": [[s.rel, s.format, s.start, s.end, s.size] for s in shards]}
    out = layout.out
    present = [f for f in outdir.list_files(out) if f != outdir.LOCK_NAME] if out.is_dir() else []
    if present:
        owned = outdir.owned_files(out, present)
        if owned is None:
            raise _not_ours(out, present)
        finished = layout.success.is_file() and (out / outdir.MANIFEST_NAME).is_file()
        unfinished = layout.manifest.is_file()
        foreign = sorted(set(present) - owned)
        if foreign and (overwrite or resume or not unfinished or finished):
            raise OutputError(f"output directory '{out}' holds files thresher did not write ({outdir.describe(foreign)}); "
                              "move them or choose another --output — nothing was deleted")
        if resume and finished:
            old = outdir.read_json(out / outdir.MANIFEST_NAME) or {}
            recipe.run_id = old.get("run_id", "")
            if layout.work.exists():  # a crash after _SUCCESS, before the scratch was removed
                outdir.remove_owned(out, {f for f in owned if f.startswith(outdir.WORK_NAME + "/")})
            return True
        if resume and unfinished:
            old = load_json(layout.manifest)
            if old.get("recipe") != manifest["recipe"]:
                raise OutputError(f"cannot resume '{out}': the recipe changed since the interrupted run "
                                  "(use --overwrite to start again)")
            if old.get("shards") != manifest["shards"]:
                raise OutputError(f"cannot resume '{out}': the input files, or how they are split into shards, "
                                  "changed since the interrupted run (use --overwrite to start again)")
            recipe.run_id = old.get("run_id") or _new_run_id()
            return False
        if unfinished and not finished and not overwrite:
            raise OutputError(f"output directory '{out}' holds an unfinished run; "
                              "pass --resume to finish it or --overwrite to start again")
        outdir.remove_owned(out, owned)  # an earlier run of ours (finished, or --overwrite): replace it
    recipe.run_id = _new_run_id()
    manifest["run_id"] = recipe.run_id
    layout.work.mkdir(parents=True, exist_ok=True)
    write_json_atomic(layout.manifest, manifest)
    return False


def _new_run_id() -> str:
    return uuid.uuid4().hex


def make_executor(recipe: Recipe):
    if recipe.executor.type == "ray":
        from thresher.pipeline.executors.ray import RayExecutor

        return RayExecutor(recipe.executor.workers, recipe.executor.address)
    from thresher.pipeline.executors.local import LocalExecutor

    return LocalExecutor(recipe.executor.workers)


def run(recipe: Recipe, *, resume: bool = False, overwrite: bool = False, progress=None) -> RunResult:
    t0 = time.perf_counter()
    recipe.attempt_id = uuid.uuid4().hex
    recipe.storage = fs.Storage.from_recipe(recipe)  # the stores' options and environment, for the workers too
    fs.configure(recipe.storage)
    files = resolve_inputs(recipe.input.paths, recipe.input.format)  # every input problem, before work
    shards = plan_shards(files, recipe.input.shard_size_mb)
    remote = None
    if fs.is_url(recipe.output.path):  # an object store: written by the Ray tasks or staged, published when finished
        if recipe.analysis:
            raise OutputError(f"analyze writes a local directory (its report is read there): give --output a local "
                              f"path, not '{fs.redact(recipe.output.path)}' (its inputs may be URLs)")
        from thresher.pipeline.io.objectstore import RemoteOutput, check_not_overlapping

        remote = RemoteOutput(recipe.output.path)
        check_not_overlapping(remote.url, recipe.input.paths)
        remote.attach(recipe)  # executor ray: the tasks write their parts to the bucket themselves
    layout = Layout(fs.staging_dir(remote.url) if remote else recipe.output.path)
    outdir.check_not_overlapping(layout.out, input_roots(recipe.input.paths), [f[0] for f in files if not fs.is_url(f[0])])
    check_output_path(layout)
    for op in recipe.build_ops():
        op.prepare()  # fetch models and lists now: a missing asset stops the run before any data is read
    with outdir.OutputLock(layout.out).acquire() as lock:
        if remote is not None and remote.prepare(layout, resume, overwrite) == "finished":
            return _result_from_remote(remote, layout, time.perf_counter() - t0)
        if prepare_output(layout, recipe, shards, resume, overwrite):
            result = _result_from_disk(layout, time.perf_counter() - t0)
            return _published(remote, layout, result) if remote else result
        lock.note_run(recipe.run_id)
        try:
            summary = marker_summary(layout, recipe, shards)
            timings = _run_passes(recipe, layout, shards, progress, summary)
            timings["seconds"] = _since(t0)
            result = finish(layout, recipe, shards, len(ops_for(recipe)[1]), timings, summary)
        except RunFailed:
            raise  # finish wrote its ledger
        except Exception as e:
            _write_failed_ledger(layout, recipe, shards, e)
            raise
        if remote is not None:
            _published(remote, layout, result)
    result.seconds = time.perf_counter() - t0
    return result


def _published(remote, layout: Layout, result: RunResult) -> RunResult:
    remote.publish(layout)
    result.url = remote.url
    return result


def _result_from_remote(remote, layout: Layout, seconds: float) -> RunResult:
    """A finished output on an object store (``--resume`` of a run that was published)."""
    report = remote.read_json(outdir.LEDGER_NAME) or {}
    if "totals" not in report:
        raise OutputError(f"output '{fs.redact(remote.url)}' is finished but its ledger.json cannot be read")
    return RunResult(layout.out, Ledger.from_dict(report), report["totals"]["output"], report["run"]["files"], seconds,
                     url=remote.url)


def marker_summary(layout: Layout, recipe: Recipe, shards: list[Shard]) -> MarkerSummary:
    ops, _ = ops_for(recipe)
    return MarkerSummary(layout, [(op.ctx.key, op.name, op.ctx.index) for op in ops], [s.index for s in shards],
                         recipe.output.trace_samples)


def _run_passes(recipe: Recipe, layout: Layout, shards: list[Shard], progress, summary: MarkerSummary) -> dict:
    """Every pass not done yet (and its resolve), on the recipe's executor. Returns the timings.
    ``summary`` reads each shard's done marker once, as it arrives."""
    _, stages = ops_for(recipe)
    out = str(layout.out)
    timings: dict = {"executor": recipe.executor.type, "passes": []}  # this invocation's wall seconds
    t_start = time.perf_counter()
    with make_executor(recipe) as executor:
        timings["start_seconds"] = _since(t_start)
        for k, stage in enumerate(stages):
            todo = [s for s in shards if not layout.done(k, s.index).exists()]
            if progress:
                progress.start_pass(k, *pass_totals(layout, k, todo, summary.kept(k - 1) if k else None),
                                    passes=len(stages))
            names = " + ".join(op.ctx.key for op in stage.local_ops) or "read/write"
            if stage.barrier is not None:
                names += f" -> {stage.barrier.ctx.key} (fingerprint)"
            t_pass = time.perf_counter()

            def shard_done(s: int, k: int = k) -> None:
                summary.arrived(k)
                if k:
                    drop_consumed(layout, k - 1, s)
                if progress:
                    progress.shard_done(k, s)

            executor.run_pass(recipe, out, k, todo, shard_done,
                              context=f"pass {k} (ops: {names})", events=progress.put if progress else None)
            summary.complete(k)
            record = {"pass": k, "shards": len(todo), "seconds": _since(t_pass)}
            _check_policy(layout, recipe, shards, k, summary)  # a run that is failing stops at the end of the pass
            if stage.barrier is not None and not layout.resolved(k).exists():
                t_resolve = time.perf_counter()
                if sum(summary.kept(k).values()):
                    executor.resolve(recipe, out, k, len(shards))
                else:  # nothing reached the global op: nothing to decide
                    write_decisions(layout, k, stage.barrier, no_decisions(), {}, 0.0)
                record["resolve"] = stage.barrier.ctx.key
                record["resolve_seconds"] = _since(t_resolve)
                trim_heap()  # what the resolve freed goes back to the system before the next pass's workers grow
            if stage.barrier is not None:  # decided: the fingerprints are not read again
                for f in layout.pass_dir(k).glob("fp-*.parquet"):
                    f.unlink(missing_ok=True)
            timings["passes"].append(record)
            if progress:
                progress.end_pass(k)
    return timings


def _gather(layout: Layout, recipe: Recipe, shards: list[Shard], n_passes: int) -> Ledger:
    """The ledger of whatever shards of passes 0..n_passes-1 finished (a failed run's diagnosis)."""
    ops, _ = ops_for(recipe)
    ledger = Ledger([(op.ctx.key, op.name, op.ctx.index) for op in ops])
    for k in range(n_passes):
        for s in shards:
            done = layout.read_done(k, s.index)
            if done is not None:
                ledger.merge(Ledger.from_dict({"ops": done["ledger"]}))
    return _with_resolves(layout, recipe, ledger, n_passes)


def _with_resolves(layout: Layout, recipe: Recipe, markers: Ledger, n_passes: int) -> Ledger:
    """A copy of the markers' ledger with the resolve records of passes 0..n_passes-1 added."""
    ops, stages = ops_for(recipe)
    ledger = Ledger([(op.ctx.key, op.name, op.ctx.index) for op in ops])
    ledger.merge(markers)
    for k in range(n_passes):
        if stages[k].barrier is not None and layout.resolved(k).exists():
            info = load_json(layout.resolved(k))
            entry = ledger[info["op"]]
            entry.seconds += info["seconds"]
            entry.counters.update(info.get("counters", {}))
    return ledger


def quarantine_share(ledger: Ledger) -> tuple[int, int]:
    """(rows quarantined, rows that could have been: read + created)."""
    t = ledger.totals()
    return t["quarantined"], t["input"] + t["created"]


def _policy_error(recipe: Recipe, ledger: Ledger, out: Path) -> str | None:
    bad, total = quarantine_share(ledger)
    limit = recipe.policy.max_quarantine_fraction
    if not total or bad / total <= limit:
        return None
    reasons = Counter()
    for e in ledger.entries.values():
        for r, n in e.quarantined.items():
            reasons[f"{e.key}: {r}"] += n
    top = "; ".join(f"{r} ({n:,})" for r, n in reasons.most_common(3))
    return (f"{bad:,} of {total:,} rows ({bad / total:.1%}) went to quarantine, more than "
            f"policy.max_quarantine_fraction={limit:g} — {top}. See {out}/quarantine/ and {out}/ledger.json; "
            "after fixing the cause, --overwrite (or --resume --set policy.max_quarantine_fraction=... to accept them)")


def drop_consumed(layout: Layout, k: int, shard: int) -> None:
    """Pass ``k + 1`` has finished ``shard`` (its done marker exists, so it is never run again, even by
    ``--resume``): the rows pass ``k`` kept of it have been read for the last time. Removing them as
    each shard finishes keeps ``_work/`` near one generation of rows instead of one per pass."""
    base = layout.intermediate(k, shard)
    for f in base.parent.glob(base.name + "*"):
        f.unlink(missing_ok=True)


def _check_policy(layout: Layout, recipe: Recipe, shards: list[Shard], k: int, summary: MarkerSummary) -> None:
    ledger = _with_resolves(layout, recipe, summary.ledger, k + 1)
    msg = _policy_error(recipe, ledger, layout.out)
    if msg:
        _write_ledger(layout, recipe, shards, ledger, None, status="failed", error=msg)
        raise RunFailed(msg)


def _write_failed_ledger(layout: Layout, recipe: Recipe, shards: list[Shard], err: BaseException) -> None:
    """Best effort: what the finished shards recorded, and why the run failed (for diagnosis)."""
    try:
        ledger = _gather(layout, recipe, shards, len(ops_for(recipe)[1]))
        _write_ledger(layout, recipe, shards, ledger, None, status="failed", error=f"{type(err).__name__}: {err}")
    except Exception:  # noqa: BLE001 - never hide the run's own error behind this one
        pass


def _write_ledger(layout: Layout, recipe: Recipe, shards: list[Shard], ledger: Ledger, output_rows: int | None,
                  status: str, error: str | None = None, files: list[str] | None = None,
                  timings: dict | None = None) -> dict:
    report = ledger.to_dict(output_rows)
    report["status"] = status
    report["balanced"] = status == "succeeded"
    report["mode"] = "analyze" if recipe.analysis else "run"
    if error:
        report["error"] = error
    report["run"] = {"recipe": recipe.model.name or Path(recipe.source).stem, "source": recipe.source,
                     "fingerprint": recipe.fingerprint(), "run_id": recipe.run_id, "executor": recipe.executor.type,
                     "shards": len(shards), "files": files or []}
    if timings is not None:
        report["run"]["timings"] = timings
    write_json_atomic(layout.ledger, report)
    return report


def _since(t: float) -> float:
    return round(time.perf_counter() - t, 3)


def finish(layout: Layout, recipe: Recipe, shards: list[Shard], n_passes: int, timings: dict | None = None,
           summary: MarkerSummary | None = None) -> RunResult:
    """Gather the ledger, check it, and commit the output. The order makes every crash point
    resumable: trace and ledger, then ``_thresher.json`` (the list of files this run wrote, which
    is what lets a later run delete them), then ``_SUCCESS``, and only then the scratch ``_work/``
    (a crash before that leaves a complete output whose leftovers the next run removes).
    ``summary``: the passes' done markers, merged while they ran (read here where not given)."""
    crash_point("before-commit")
    ops, _ = ops_for(recipe)
    if summary is None:
        summary = marker_summary(layout, recipe, shards)
    summary.complete(n_passes - 1)
    ledger = _with_resolves(layout, recipe, summary.ledger, n_passes)
    trace, profile = summary.trace, summary.profile
    files = summary.output_files(n_passes - 1)
    output_rows = sum(summary.kept(n_passes - 1).values())
    if recipe.output.format == "parquet" and not recipe.analysis:  # one schema for every part (datasets, polars)
        from thresher.pipeline.io.objectstore import unify_parts
        from thresher.pipeline.io.unify import unify_parquet_parts

        if fs.direct_output(recipe):  # the parts are in the bucket (a Ray run's tasks wrote them there)
            unify_parts(fs.direct_output(recipe), files)
        else:
            unify_parquet_parts(layout.out, files)
    if recipe.analysis:  # the analysis parts -> one stats.parquet
        from thresher.pipeline.analyze import merge_stats

        files = merge_stats(layout.out, files)
    try:
        ledger.check_balance(output_rows)
    except Exception as e:
        _write_ledger(layout, recipe, shards, ledger, output_rows, "failed", str(e), files, timings)
        raise
    msg = _policy_error(recipe, ledger, layout.out)
    if msg:
        _write_ledger(layout, recipe, shards, ledger, output_rows, "failed", msg, files, timings)
        raise RunFailed(msg)
    written = list(files)
    for op in ops:
        if trace[op.ctx.key]:
            path = layout.trace / f"{op.ctx.index:02d}-{op.ctx.key}.jsonl"
            write_jsonl_records_atomic(path, [{k: v for k, v in r.items() if k != "key"} for r in trace[op.ctx.key]])
            written.append(f"trace/{path.name}")
    crash_point("after-trace")
    _write_ledger(layout, recipe, shards, ledger, output_rows, "succeeded", None, files, timings)
    crash_point("after-ledger")
    write_json_atomic(layout.profile, _profile_report(layout, recipe, ops, n_passes, profile))
    written.append(PROFILE_NAME)
    if recipe.analysis:
        from thresher.pipeline.analyze import finish_analysis

        written += finish_analysis(layout.out, recipe, ops)[1]
    if recipe.output.report:
        written.append(_write_report(layout))
    if fs.direct_output(recipe):
        from thresher.pipeline.io.objectstore import quarantine_names

        written += quarantine_names(fs.direct_output(recipe))
    elif layout.quarantine.is_dir():
        written += sorted(f"quarantine/{f.name}" for f in layout.quarantine.glob("pass*.jsonl"))
    written.append(outdir.LEDGER_NAME)
    write_json_atomic(layout.out / outdir.MANIFEST_NAME, {"run_id": recipe.run_id, "recipe": recipe.fingerprint(),
                                                         "files": written})
    crash_point("after-manifest")
    write_bytes_atomic(layout.success, b"ok\n")
    crash_point("after-success")
    shutil.rmtree(layout.work, ignore_errors=True)
    return RunResult(layout.out, ledger, output_rows, files, 0.0)


def _profile_report(layout: Layout, recipe: Recipe, ops: list, n_passes: int, profile: Profile) -> dict:
    """``profile.json``: the merged histograms, with each op's name, place and thresholds (for the
    report), and the distributions global ops measured in their resolve step."""
    from thresher.pipeline.ops import Filter

    _, stages = ops_for(recipe)
    for k in range(n_passes):
        if stages[k].barrier is not None and layout.resolved(k).exists():
            info = load_json(layout.resolved(k))
            for name, counts in info.get("distributions", {}).items():
                profile.add_distribution(info["op"], name, counts)
    out = profile.to_dict()
    out["text_key"] = recipe.input.text_key
    for op in ops:
        entry = out["ops"].setdefault(op.ctx.key, {"stats": {}, "outside": {}, "categories": {}, "distributions": {}})
        entry.update({"op": op.name, "index": op.ctx.index, "kind": op.kind()})
        if isinstance(op, Filter):
            entry["thresholds"] = {stat: {"lo": b.lo, "hi": b.hi, "lo_param": b.lo_param, "hi_param": b.hi_param,
                                          "inclusive": b.inclusive} for stat, b in op.thresholds().items()}
    return out


def _write_report(layout: Layout) -> str:
    """Build ``report.html``; returns its name (for the list of files the run wrote)."""
    from thresher.pipeline.report import write_report

    return write_report(layout.out, own=False).name  # listed in _thresher.json by finish


def _result_from_disk(layout: Layout, seconds: float) -> RunResult:
    report = load_json(layout.ledger)
    return RunResult(layout.out, Ledger.from_dict(report), report["totals"]["output"], report["run"]["files"], seconds)
