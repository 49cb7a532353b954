"""The local Ray a run starts for itself runs without Ray's autoscaler monitor, API server and log
monitor (issue 19 item 4: ~175 MB PSS and ~2 s of start-up on 2 cores; ``executor.ray._lean_head``),
and everything a run needs still works there: the recipe's output is byte-identical to the local
executor's, a task's output still reaches the session's worker logs, a task's error reaches the
driver as the op's own exception. ``THRESHER_RAY_LEAN=0`` starts Ray's full set (the control that
shows the check can see those processes). A cluster's Ray (``executor.address``) is never touched.

Done for real: each Ray is started by ``RayExecutor`` in a subprocess of its own (the test session
has its own local Ray, which a second ``ray.init`` in this process would only join)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_recipe, sample_docs, write_jsonl

pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[2]
PROCESS = [{"whitespace_normalize": {}}, {"text_length_filter": {"min_words": 4}}, {"exact_dedup": {}},
           {"minhash_dedup": {"threshold": 0.8}}]
# the scripts of the three head processes left out, as they appear in a command line
SKIPPED_SCRIPTS = ("autoscaler/_private/monitor.py", "dashboard/dashboard.py", "_private/log_monitor.py")

SCRIPT = r"""
import json, os, sys
import psutil, ray
from thresher.pipeline.executors.ray import RayExecutor

inputs, out = json.loads(sys.argv[1]), sys.argv[2]
report = {}
with RayExecutor(workers=2) as ex:
    node = ray._private.worker.global_worker.node
    report["process_types"] = sorted(node.all_processes)
    report["webui_url"] = node.webui_url
    report["lean"] = type(node).__name__
    report["node_class_after"] = ray._private.node.Node.__name__

    @ray.remote
    def shout(x):
        print(f"task output {x}", flush=True)
        return x

    @ray.remote
    def fail():
        raise ValueError("a task's own error")

    report["results"] = ray.get([shout.remote(i) for i in range(4)])
    try:
        ray.get(fail.remote())
    except ValueError as e:  # Ray's RayTaskError subclasses the task's exception type
        report["error"] = str(e).splitlines()[-1]
    if out:
        from tests.conftest import make_recipe
        from thresher.pipeline.run import run

        # the same local Ray (it is initialised): the run's executor joins it
        run(make_recipe(inputs, out, json.loads(sys.argv[3]), executor={"type": "ray", "workers": 2}))
    report["cmdlines"] = [" ".join(p.cmdline()) for p in psutil.Process().children(recursive=True)
                          if p.is_running()]
    logs = os.path.join(node.get_session_dir_path(), "logs")
    report["worker_logs"] = "".join(open(os.path.join(logs, f), errors="replace").read()
                                    for f in os.listdir(logs) if f.startswith("worker-") and f.endswith(".out"))
print("REPORT " + json.dumps(report))
"""


def _start_ray(tmp_path: Path, lean: str, inputs: list[Path], out: Path | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a local Ray of its own
    env.update(THRESHER_RAY_LEAN=lean, RAY_USAGE_STATS_ENABLED="0")
    r = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps([str(p) for p in inputs]), str(out or ""),
                        json.dumps(PROCESS)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("REPORT "))
    return json.loads(line[len("REPORT "):])


def _docs(tmp_path: Path) -> list[Path]:
    docs = sample_docs(600, seed=9)
    docs += [dict(d, id=f"copy-{d['id']}") for d in docs[:60]]
    docs += [dict(d, id=f"near-{d['id']}", text=d["text"] + " and that is all") for d in docs[60:120]]
    return [write_jsonl(tmp_path / "in" / f"p{i}.jsonl", docs[i::3]) for i in range(3)]


def _data(out: Path) -> bytes:
    return b"".join(f.read_bytes() for f in sorted((out / "data").iterdir()))


@pytest.mark.slow
def test_a_runs_own_local_ray_has_no_monitor_api_server_or_log_monitor(tmp_path):
    inputs = _docs(tmp_path)
    report = _start_ray(tmp_path, "1", inputs, tmp_path / "ray")
    running = "\n".join(report["cmdlines"])
    for script in SKIPPED_SCRIPTS:
        assert script not in running, f"{script} runs in the run's own local Ray:\n{running}"
    assert not {"monitor", "dashboard", "log_monitor"} & set(report["process_types"]), report["process_types"]
    assert {"gcs_server", "raylet"} <= set(report["process_types"])
    assert "ray::DashboardAgent" in running and "ray::RuntimeEnvAgent" in running  # the raylet needs both
    assert report["lean"] == "LeanNode" and report["node_class_after"] == "Node"  # Ray's class is put back
    assert report["webui_url"] is None
    # what a run needs: tasks run, their output is in the session's logs, their errors reach the driver
    assert report["results"] == [0, 1, 2, 3]
    assert all(f"task output {i}" in report["worker_logs"] for i in range(4))
    assert report["error"] == "ValueError: a task's own error"
    # and the recipe's output is the local executor's, byte for byte
    run_recipe(inputs, tmp_path / "local", PROCESS, workers=2)
    assert _data(tmp_path / "ray") == _data(tmp_path / "local") and _data(tmp_path / "local")
    led = json.loads((tmp_path / "ray" / "ledger.json").read_text())
    assert led["ops"]["exact_dedup"]["dropped"] and led["ops"]["minhash_dedup"]["dropped"]


@pytest.mark.slow
def test_lean_0_starts_every_process_ray_starts(tmp_path):
    """The control: the same check sees Ray's monitor, API server and log monitor when they run."""
    report = _start_ray(tmp_path, "0", [], None)
    running = "\n".join(report["cmdlines"])
    for script in SKIPPED_SCRIPTS:
        assert script in running, f"{script} not found:\n{running}"
    assert {"monitor", "dashboard", "log_monitor"} <= set(report["process_types"])
    assert report["lean"] == "Node"
    assert report["error"] == "ValueError: a task's own error"


def test_lean_head_changes_nothing_for_a_cluster_or_when_turned_off(monkeypatch):
    import ray._private.node as ray_node

    from thresher.pipeline.executors.ray import LEAN_ENV, _lean_head

    base = ray_node.Node
    with _lean_head(False) as lean:  # executor.address / RAY_ADDRESS: Ray's own node class
        assert lean is False and ray_node.Node is base
    monkeypatch.setenv(LEAN_ENV, "0")
    with _lean_head(True) as lean:
        assert lean is False and ray_node.Node is base
    monkeypatch.delenv(LEAN_ENV)
    with _lean_head(True) as lean:
        assert lean is True and issubclass(ray_node.Node, base) and ray_node.Node is not base
    assert ray_node.Node is base
    with pytest.raises(RuntimeError), _lean_head(True):  # put back whatever ray.init raises
        raise RuntimeError("ray.init failed")
    assert ray_node.Node is base

