"""A Ray run writes its output straight to the bucket: no filesystem shared by the nodes.

Against the real S3 server of ``test_object_store`` (moto on 127.0.0.1, authentication on) and the
session's local Ray, used as a cluster is (``executor.address``, ``THRESHER_STAGING`` unset):

- the output is byte for byte the one the same Ray run writes to a local disk, and the driver's
  own directory never holds a part, a quarantine file, intermediate rows or fingerprints (those are
  the tasks', and the tasks are given the bucket, not the driver's path);
- a run killed at any point of its commit, and one whose driver's directory is lost as well (a new
  head pod), is finished by ``--resume`` from what the bucket holds, with the same output;
- a task run twice — as Ray retries it, after it died having uploaded its parts but not its done
  marker, or after its worker was SIGKILLed — leaves the same objects, never a second copy;
- the credentials appear in no object, message or Ray log.
"""

# ruff: noqa: F811 - the fixtures s3_server and s3 come from test_object_store
from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import make_recipe, run_recipe, sample_docs, write_jsonl
from tests.pipeline.test_object_store import (  # noqa: F401 - fixtures, used by name
    BUCKET,
    PROCESS,
    ROOT,
    S3,
    _inputs,
    _local_files,
    _remote_files,
    s3,
    s3_server,
)

TASK_FILE = re.compile(r"(data|quarantine)/.*|_work/pass-\d+/(rows|fp)-.*")  # what the tasks write


@pytest.fixture
def cluster(s3, local_ray, monkeypatch):
    """The session's Ray as a cluster: its address given, and no THRESHER_STAGING (the driver's
    files go to its cache, the tasks' to the bucket)."""
    monkeypatch.delenv("THRESHER_STAGING")
    return {"type": "ray", "workers": 2, "address": local_ray.get_runtime_context().gcs_address}


def _mixed_inputs(tmp_path: Path, s3: S3) -> list[Path]:
    """``_inputs``, and a file whose rows have one more column (Parquet parts get other schemas,
    which the commit unifies — in the bucket, for a direct run)."""
    paths = _inputs(tmp_path, s3, n=400, files=3)
    extra = write_jsonl(tmp_path / "in" / "p9.jsonl", [dict(d, id=f"x{d['id']}", lang="en")
                                                       for d in sample_docs(60, seed=9)])
    s3.put(f"{s3.prefix}/in/{extra.name}", extra.read_bytes())
    return [*paths, extra]


def _same_as(s3: S3, prefix: str, local_out: Path, quarantine: bool = False) -> None:
    keys = s3.keys(prefix)
    assert keys[-1] == "_SUCCESS" or "_SUCCESS" in keys
    assert not [k for k in keys if k.startswith("_work") or k.endswith(".tmp")]
    remote, local = _remote_files(s3, prefix), _local_files(local_out)
    assert remote == local and any(k.startswith("data/") for k in local)
    assert any(k.startswith("quarantine/") for k in local) or not quarantine
    manifest = json.loads(s3.get(f"{prefix}/_thresher.json"))
    assert sorted(manifest["files"] + ["_SUCCESS", "_thresher.json"]) == keys
    ledger = json.loads(s3.get(f"{prefix}/ledger.json"))
    assert ledger["status"] == "succeeded" and ledger["totals"] == json.loads((local_out / "ledger.json").read_text())["totals"]


def _staging(url: str) -> Path:
    from thresher.pipeline.fs import staging_dir

    return staging_dir(url)


@pytest.mark.slow
def test_cluster_run_writes_the_bucket_directly(tmp_path, s3, cluster, monkeypatch):
    """No THRESHER_STAGING on a cluster is no longer refused: the tasks write to the bucket, and
    the driver's directory holds only the run's own small files."""
    from thresher.pipeline import run as run_module

    paths = _mixed_inputs(tmp_path, s3)
    process = PROCESS
    sets = ["input.shard_size_mb=0.01", "policy.max_quarantine_fraction=1"]
    bad = write_jsonl(tmp_path / "in" / "bad.jsonl", [{"id": "b1", "text": "x"}])
    bad.write_text(bad.read_text() + "{not json\n")
    s3.put(f"{s3.prefix}/in/{bad.name}", bad.read_bytes())
    run_recipe([bad, *paths], tmp_path / "ray-local", process, fmt="parquet", sets=sets,
               executor={"type": "ray", "workers": 2})
    url = f"s3://{BUCKET}/{s3.prefix}/out"
    seen: list[str] = []
    finish = run_module.finish

    def watched_finish(layout, *a, **kw):  # the driver's directory at the end of the passes
        seen.extend(str(p.relative_to(layout.out)) for p in layout.out.rglob("*") if p.is_file())
        return finish(layout, *a, **kw)

    monkeypatch.setattr(run_module, "finish", watched_finish)
    result = run_recipe([f"s3://{BUCKET}/{s3.prefix}/in/*.jsonl"], url, process, fmt="parquet", sets=sets,
                        executor=cluster)
    assert result.url == url
    assert any(f.startswith("_work/pass-1/done-") for f in seen)
    assert not [f for f in seen if TASK_FILE.fullmatch(f)]
    _same_as(s3, f"{s3.prefix}/out", tmp_path / "ray-local", quarantine=True)
    assert not _staging(url).exists()
    parts = [k for k in s3.keys(f"{s3.prefix}/out") if k.startswith("data/")]
    schemas = {pq.read_schema(io.BytesIO(s3.get(f"{s3.prefix}/out/{k}"))) for k in parts}
    assert len(schemas) == 1 and "lang" in next(iter(schemas)).names  # unified in the bucket  # the driver's directory is gone once published


def _cli(args: list[str], address: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "RAY_ADDRESS": address, **(env or {})}
    full.pop("THRESHER_STAGING", None)
    return subprocess.run([sys.executable, "-m", "thresher", *args], cwd=ROOT, capture_output=True, text=True,
                          env=full, timeout=300)


def _recipe_file(tmp_path: Path, s3: S3, name: str) -> Path:
    import yaml

    body = {"input": {"paths": [f"s3://{BUCKET}/{s3.prefix}/in/*.jsonl"], "shard_size_mb": 0.01},
            "output": {"path": f"s3://{BUCKET}/{s3.prefix}/{name}", "format": "jsonl"},
            "executor": {"type": "ray", "workers": 2}, "seed": 1, "process": PROCESS}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("crash_at,lose_driver_files", [("before-commit", False), ("publishing", False),
                                                        ("before-remote-success", True)])
def test_killed_then_resume_on_the_bucket(tmp_path, s3, cluster, crash_at, lose_driver_files):
    """Killed (``os._exit``, as by SIGKILL) after the passes, while publishing and just before
    ``_SUCCESS``; with ``lose_driver_files`` the driver's directory is deleted too (the resume runs
    on another machine): ``--resume`` finishes from the bucket, with the same output."""
    paths = _inputs(tmp_path, s3)
    run_recipe(paths, tmp_path / "ray-local", PROCESS, sets=["input.shard_size_mb=0.01"],
               executor={"type": "ray", "workers": 2})
    recipe = _recipe_file(tmp_path, s3, "killed")
    url = f"s3://{BUCKET}/{s3.prefix}/killed"
    killed = _cli(["run", str(recipe), "-q"], cluster["address"], {"THRESHER_CRASH_AT": crash_at})
    assert killed.returncode == 137, killed.stderr
    keys = s3.keys(f"{s3.prefix}/killed")
    assert "_SUCCESS" not in keys and any(k.startswith("data/") for k in keys)
    assert any(k.startswith("_work/pass-0/done-") for k in keys) or crash_at == "before-remote-success"
    again = _cli(["run", str(recipe), "-q"], cluster["address"])
    assert again.returncode == 2 and "--resume" in again.stderr
    if lose_driver_files:
        shutil.rmtree(_staging(url))
    resumed = _cli(["run", str(recipe), "-q", "--resume"], cluster["address"])
    assert resumed.returncode == 0, resumed.stderr
    _same_as(s3, f"{s3.prefix}/killed", tmp_path / "ray-local")
    for out in (killed, again, resumed):
        assert s3.secret not in out.stdout + out.stderr and s3.key not in out.stdout + out.stderr


@pytest.mark.slow
def test_resume_redoes_only_what_the_bucket_lacks(tmp_path, s3, cluster):
    """Between passes, on another machine: the driver's directory is gone and some shards of the
    last pass never finished (their parts and done markers missing): ``--resume`` rebuilds the
    run from ``_work/`` in the bucket (its manifest, done markers, decisions), runs the missing
    shards' last pass from the rows pass 0 left there, and gives the same output."""
    paths = _inputs(tmp_path, s3)
    run_recipe(paths, tmp_path / "ray-local", PROCESS, sets=["input.shard_size_mb=0.01"],
               executor={"type": "ray", "workers": 2})
    recipe = _recipe_file(tmp_path, s3, "partial")
    url = f"s3://{BUCKET}/{s3.prefix}/partial"
    assert _cli(["run", str(recipe), "-q"], cluster["address"], {"THRESHER_CRASH_AT": "before-commit"}).returncode == 137
    shutil.rmtree(_staging(url))
    prefix = f"{s3.prefix}/partial"
    keys = s3.keys(prefix)
    lost = [k for k in keys if k.startswith(("_work/pass-1/done-0000", "data/part-0000"))]  # shards 0-9, pass 1
    assert any(k.startswith("data/") for k in lost)
    for k in lost:
        s3.client.delete_object(Bucket=BUCKET, Key=f"{prefix}/{k}")
    resumed = _cli(["run", str(recipe), "-q", "--resume"], cluster["address"])
    assert resumed.returncode == 0, resumed.stderr
    _same_as(s3, prefix, tmp_path / "ray-local")


def _task_setup(tmp_path: Path, s3: S3, name: str):
    """A recipe, its shards and the output, as ``run`` hands them to the Ray tasks of pass 0."""
    from thresher.pipeline import fs
    from thresher.pipeline.io.inputs import plan_shards, resolve_inputs
    from thresher.pipeline.io.objectstore import RemoteOutput

    paths = _inputs(tmp_path, s3, n=200, files=2)
    url = f"s3://{BUCKET}/{s3.prefix}/{name}"
    recipe = make_recipe(paths, url, PROCESS[:2], fmt="parquet", executor={"type": "ray"},
                         sets=["output.rows_per_shard=20", "executor.batch_size_mb=0.002"])
    recipe.storage = fs.Storage.from_recipe(recipe)
    fs.configure(recipe.storage)
    RemoteOutput(url).attach(recipe)
    shards = plan_shards(resolve_inputs(recipe.input.paths, recipe.input.format), recipe.input.shard_size_mb)
    return recipe, url, {s.index: s for s in shards}


def test_a_task_run_twice_leaves_one_copy(tmp_path, s3, monkeypatch):
    """A task that dies after uploading its parts but before its done marker, then is retried
    (and once more): the same keys, the same bytes — overwritten, never duplicated — and its
    scratch directory is gone each time."""
    from thresher.pipeline.executors.ray_data import process_blocks
    from thresher.pipeline.io import objectstore

    scratch = tmp_path / "node-tmp"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    recipe, url, shards = _task_setup(tmp_path, s3, "retried")
    prefix = f"{s3.prefix}/retried"

    def die(name):
        if name == "task-before-marker":
            raise MemoryError("the worker died")

    original = objectstore.crash_point
    monkeypatch.setattr(objectstore, "crash_point", die)
    with pytest.raises(MemoryError):
        process_blocks(pa.table({"shard": [0]}), recipe, url, 0, shards)
    first = {k: s3.get(f"{prefix}/{k}") for k in s3.keys(prefix)}
    assert first and not [k for k in first if "done-" in k] and len([k for k in first if k.startswith("data/")]) > 1
    assert not any(scratch.iterdir())
    monkeypatch.setattr(objectstore, "crash_point", original)
    for _ in range(2):
        result = process_blocks(pa.table({"shard": [0]}), recipe, url, 0, shards)
        assert not any(scratch.iterdir())
    after = {k: s3.get(f"{prefix}/{k}") for k in s3.keys(prefix)}
    assert set(after) == set(first) | {"_work/pass-0/done-00000.json"}
    assert {k: v for k, v in after.items() if "done-" not in k} == first
    marker = json.loads(after["_work/pass-0/done-00000.json"])
    assert marker == json.loads(result["done"][0].as_py())
    assert sorted(f"data/{f}" for f in marker["files"]) == sorted(k for k in after if k.startswith("data/"))


@pytest.mark.slow
def test_a_killed_worker_is_retried_without_duplicates(tmp_path, s3, cluster):
    """A Ray worker SIGKILLed in the middle of a pass (Ray retries its task): the bucket holds the
    same objects as an undisturbed run."""
    import psutil

    paths = _inputs(tmp_path, s3, n=2000)
    sets = ["input.shard_size_mb=0.02"]
    run_recipe(paths, tmp_path / "ray-local", PROCESS, sets=sets, executor={"type": "ray", "workers": 2})
    killed: list[int] = []

    def killer():
        deadline = time.time() + 60
        while not killed and time.time() < deadline:
            for p in psutil.process_iter(["cmdline"]):
                if "process_blocks" in " ".join(p.info["cmdline"] or []) and "ray::" in " ".join(p.info["cmdline"]):
                    os.kill(p.pid, signal.SIGKILL)
                    killed.append(p.pid)
                    return
            time.sleep(0.01)

    t = threading.Thread(target=killer)
    t.start()
    run_recipe([f"s3://{BUCKET}/{s3.prefix}/in/*.jsonl"], f"s3://{BUCKET}/{s3.prefix}/out", PROCESS, sets=sets,
               executor=cluster)
    t.join()
    assert killed, "no Ray worker was running a pass to kill"
    _same_as(s3, f"{s3.prefix}/out", tmp_path / "ray-local")


@pytest.mark.slow
def test_no_secret_in_objects_or_ray_logs(tmp_path, s3, cluster, local_ray, monkeypatch):
    """The credentials travel to the tasks inside the pickled recipe: none of the output's objects
    (ledger, manifest, report, done markers, ``_work/``) and none of Ray's log files holds them."""
    from thresher.pipeline.io import objectstore

    _inputs(tmp_path, s3, n=100, files=2)
    url = f"s3://{BUCKET}/{s3.prefix}/out"
    leaked = []
    publish = objectstore.RemoteOutput.publish

    def check_then_publish(self, layout):  # _work/ is still in the bucket here
        for k in s3.keys(f"{s3.prefix}/out"):
            body = s3.get(f"{s3.prefix}/out/{k}")
            if s3.secret.encode() in body or s3.key.encode() in body:
                leaked.append(k)
        return publish(self, layout)

    monkeypatch.setattr(objectstore.RemoteOutput, "publish", check_then_publish)
    run_recipe([f"s3://{BUCKET}/{s3.prefix}/in/*.jsonl"], url, PROCESS, executor=cluster)
    assert not leaked
    for k in s3.keys(f"{s3.prefix}/out"):
        assert s3.secret.encode() not in s3.get(f"{s3.prefix}/out/{k}")
    logs = Path(local_ray._private.worker.global_worker.node.get_session_dir_path()) / "logs"
    for f in logs.rglob("*"):
        if f.is_file() and f.stat().st_size < 50 << 20:
            data = f.read_bytes()
            assert s3.secret.encode() not in data and s3.key.encode() not in data, f


@settings(max_examples=200)
@given(st.lists(st.tuples(st.sampled_from(["rows", "fp", "done", "q", "data", "other-pass", "run"]),
                          st.integers(0, 30), st.integers(0, 3)), max_size=40),
       st.sets(st.integers(0, 30)), st.integers(0, 2), st.booleans())
def test_leftovers_are_exactly_the_shards_about_to_run(objects, todo, k, final):
    """Before pass k, the driver deletes what an interrupted attempt left of the shards about to
    run — and nothing of another shard, another pass, or the run's own files."""
    from thresher.pipeline.io.objectstore import leftovers

    def name(kind: str, shard: int, block: int) -> tuple[str, bool]:
        mine = shard in todo
        return {"rows": (f"_work/pass-{k}/rows-{shard:05d}.arrow.b{block:05d}.000", mine),
                "fp": (f"_work/pass-{k}/fp-{shard:05d}.b{block:05d}.parquet", mine),
                "done": (f"_work/pass-{k}/done-{shard:05d}.json", mine),
                "q": (f"quarantine/pass{k}-{shard:05d}.b{block:05d}.jsonl", mine),
                "data": (f"data/part-{shard:05d}-b{block:05d}-000.parquet", mine and final),
                "other-pass": (f"_work/pass-{k + 1}/rows-{shard:05d}.arrow.b{block:05d}.000", False),
                "run": (f"_work/pass-{k}/decisions.parquet", False)}[kind]

    named = dict(name(*o) for o in objects)
    assert sorted(leftovers(sorted(named), k, todo, final)) == sorted(n for n, doomed in named.items() if doomed)
