"""executor: ray runs each pass as a Ray Data pipeline and each global op's resolve as Ray Data
shuffles on a real local Ray (2 CPUs), and gives the same output and ledger as the local executor.

Ray writes one file per input block where local mode writes one per shard, so "the same output" is:
the bytes of the data files read in name order (the row stream, in the same order) are identical."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_recipe, sample_docs, write_jsonl

ray = pytest.importorskip("ray")


@pytest.mark.slow
def test_ray_matches_local(tmp_path, local_ray):
    docs = sample_docs(600, seed=4)
    docs += [dict(d, id=f"copy-{d['id']}") for d in docs[:60]]
    docs += [dict(d, id=f"near-{d['id']}", text=d["text"] + " and that is all") for d in docs[60:120]]
    paths = [write_jsonl(tmp_path / "in" / f"p{i}.jsonl", docs[i::3]) for i in range(3)]
    process = [{"whitespace_normalize": {}}, {"text_length_filter": {"min_words": 4}}, {"exact_dedup": {}},
               {"minhash_dedup": {"threshold": 0.8}}]
    run_recipe(paths, tmp_path / "local", process, workers=2)
    run_recipe(paths, tmp_path / "ray", process, executor={"type": "ray", "workers": 2})
    assert _data(tmp_path / "local") == _data(tmp_path / "ray") and _data(tmp_path / "local")
    assert _counts(tmp_path / "local") == _counts(tmp_path / "ray")
    led = json.loads((tmp_path / "ray" / "ledger.json").read_text())
    assert led["ops"]["minhash_dedup"]["dropped"], "the test data has near-duplicates for the distributed resolve"
    assert led["ops"]["exact_dedup"]["dropped"]


def _data(out):
    """The output row stream: every data file's bytes, in file-name order."""
    return b"".join(f.read_bytes() for f in sorted((out / "data").iterdir()))


def _counts(out):
    led = json.loads((out / "ledger.json").read_text())
    return {k: {kk: vv for kk, vv in v.items() if kk != "seconds"} for k, v in led["ops"].items()}


def _with_lid(name: str):
    """These recipes run language_id, whose lid.176 model is downloaded into the test cache."""
    return pytest.param(name, marks=pytest.mark.network)


@pytest.mark.parametrize("recipe", ["quickstart", _with_lid("fineweb"), _with_lid("gopher"), _with_lid("c4"),
                                    _with_lid("multilingual"), "dedup", "sft-clean", "dpo-from-ranked"])
def test_every_shipped_recipe_gives_the_same_result_on_ray(tmp_path, local_ray, recipe):
    from thresher.pipeline.recipe import load_recipe
    from thresher.pipeline.run import run

    local = load_recipe(recipe, output=str(tmp_path / "local"), workers=2)
    on_ray = load_recipe(recipe, output=str(tmp_path / "ray"), executor="ray", workers=2)
    run(local)
    run(on_ray)
    assert _data(tmp_path / "local") == _data(tmp_path / "ray")
    assert _counts(tmp_path / "local") == _counts(tmp_path / "ray")


@pytest.mark.slow
def test_killing_a_ray_worker_mid_run_changes_nothing(tmp_path, local_ray):
    """SIGKILL one Ray worker while it runs a pass: Ray retries the task, and the idempotent pass
    (cleans what the killed attempt left, writes atomically) gives exactly the clean run's output."""
    import os
    import signal
    import threading

    import psutil

    docs = sample_docs(3000, seed=8)
    paths = [write_jsonl(tmp_path / "in" / f"p{i:02d}.jsonl", docs[i::30]) for i in range(30)]
    process = [{"whitespace_normalize": {}}, {"gopher_repetition_filter": {}}, {"exact_dedup": {}}]
    run_recipe(paths, tmp_path / "clean", process, executor={"type": "ray", "workers": 2})

    killed = []

    def killer():
        deadline = __import__("time").time() + 60
        while not killed and __import__("time").time() < deadline:
            for p in psutil.process_iter(["cmdline"]):
                cmd = " ".join(p.info["cmdline"] or [])
                if "ray::" in cmd and "process_blocks" in cmd:
                    os.kill(p.pid, signal.SIGKILL)
                    killed.append(p.pid)
                    return
            __import__("time").sleep(0.01)

    t = threading.Thread(target=killer)
    t.start()
    run_recipe(paths, tmp_path / "faulty", process, executor={"type": "ray", "workers": 2})
    t.join()
    assert killed, "no Ray worker was running a pass to kill"
    assert _data(tmp_path / "faulty") == _data(tmp_path / "clean")
    assert _counts(tmp_path / "faulty") == _counts(tmp_path / "clean")


@pytest.mark.slow
def test_out_of_memory_names_the_pass_its_ops_and_the_knobs(tmp_path):
    """A real out-of-memory kill: Ray's memory monitor, told that 2% of the machine is the limit,
    kills the pass's workers. The run fails with one message, not a Ray stack, and no _SUCCESS."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, RAY_memory_usage_threshold="0.02", RAY_memory_monitor_refresh_ms="50",
               RAY_task_oom_retries="0")
    env.pop("RAY_ADDRESS", None)
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "thresher", "run", "quickstart", "--output", str(out),
                          "--executor", "ray", "--workers", "2", "-q"], capture_output=True, text=True, env=env,
                         timeout=300)
    assert res.returncode != 0
    err = " ".join(res.stderr.split())
    assert "a Ray worker ran out of memory" in err
    assert "pass 0 (ops: unicode_normalize + whitespace_normalize + text_length_filter" in err
    assert "executor.batch_size_mb" in err and "executor.workers" in err
    assert "Traceback" not in res.stderr
    assert not (out / "_SUCCESS").exists()


def test_model_ops_run_in_tasks_on_a_local_ray_unless_the_recipe_asks_for_actors():
    """A local Ray started by the run: one set of worker processes for every pass (model ops in
    tasks) unless ``model_actors`` is set; a cluster (or a Ray the run did not start): the setting."""
    from thresher.pipeline.executors.ray import RayExecutor
    from thresher.pipeline.recipe import parse_recipe

    def recipe(extra: str):
        return parse_recipe("input: {paths: [x.jsonl]}\noutput: {path: o}\n"
                            f"executor: {{type: ray{extra}}}\nprocess: [{{exact_dedup: {{}}}}]\n", "t.yaml", [])

    local, cluster = RayExecutor(2), RayExecutor(2, address="ray://head:10001")
    local._local = True  # what __enter__ sets after starting a local Ray
    assert local.model_actors(recipe("")) is False
    assert local.model_actors(recipe(", model_actors: true")) is True
    assert local.model_actors(recipe(", model_actors: false")) is False
    assert cluster.model_actors(recipe("")) is True and cluster.model_actors(recipe(", model_actors: false")) is False
