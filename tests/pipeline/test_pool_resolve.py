"""A resolve runs in a child forked from the driver, after the pool's idle workers have ended
(pipeline/executors/local.py: ``LocalExecutor.resolve``, ``run_forked``).

Each driver here is a fresh ``python -c`` process: forking is refused in a process where polars'
thread pool already runs (``fork_unsafe``), as it does in this test process after any in-process run.
What is checked: where the resolve runs and what runs beside it, that the output is that of one
process, that its result, its exception (with the child's traceback) or its death reach the driver,
and that a driver where forking is unsafe resolves itself.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import run_recipe, sample_docs, write_jsonl

pytestmark = pytest.mark.skipif("forkserver" not in mp.get_all_start_methods() or sys.platform != "linux",
                                reason="no fork server here, or no /proc and prctl")

ROOT = Path(__file__).resolve().parents[2]
PROCESS = [{"exact_dedup": {}}, {"minhash_dedup": {"threshold": 0.8, "num_perm": 32, "bands": 4, "rows": 8}}]

# A driver that runs PROCESS over the inputs and records, in the resolve, where it runs and what
# else runs: the resolve function is wrapped in the driver (the forked child has the wrapper too).
DRIVER = textwrap.dedent("""
    import json, os, sys, threading
    import psutil
    from thresher.pipeline.executors import local, passes
    from thresher.pipeline.run import run
    from tests.conftest import make_recipe

    record, out, workers, process, inputs = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4]), sys.argv[5:]
    real, driver = passes.resolve_pass, os.getpid()

    def spy(*args):
        import polars as pl

        server = local.forkserver_pid()
        seen = {"pid": os.getpid(), "ppid": os.getppid(), "driver": driver, "polars_threads": pl.thread_pool_size(),
                "server_children": sorted(p.pid for p in psutil.Process(server).children()) if server else None,
                "driver_children": sorted(p.pid for p in psutil.Process(driver).children()  # forked from it
                                          if p.cmdline() == psutil.Process(driver).cmdline()),
                # of those, the ones started before this resolve (a pass's workers), not the next pass's
                "older_children": sorted(p.pid for p in psutil.Process(driver).children()
                                         if p.cmdline() == psutil.Process(driver).cmdline()
                                         and p.create_time() < psutil.Process().create_time()),
                "threads": sorted(t.name for t in threading.enumerate())}
        with open(record, "a") as f:
            f.write(json.dumps(seen) + "\\n")
        return real(*args)

    passes.resolve_pass = spy
    res = run(make_recipe(inputs, out, process, workers=workers, input={"shard_size_mb": 0.05}))
    print(res.output_rows)
""")


def _drive(tmp_path: Path, name: str, inputs: list[Path], workers: int, env: dict) -> tuple[int, list[dict]]:
    """(rows out, what the spy saw in each resolve); the pool's workers are forked from the driver
    unless ``env`` asks for the fork server (``THRESHER_POOL``)."""
    record = tmp_path / f"{name}.jsonl"
    res = subprocess.run([sys.executable, "-c", DRIVER, str(record), str(tmp_path / name), str(workers),
                          json.dumps(PROCESS), *map(str, inputs)],
                         capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "THRESHER_POOL": "", "THRESHER_RESOLVE": "", **env})
    assert res.returncode == 0, res.stderr
    return int(res.stdout.split()[-1]), [json.loads(line) for line in record.read_text().splitlines()]


def _digest(out: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted((out / "data").iterdir())}


@pytest.fixture
def inputs(tmp_path):
    docs = sample_docs(900, seed=7)
    docs += [dict(d, id=f"dup-{d['id']}") for d in docs[:150]]
    return [write_jsonl(tmp_path / "in" / f"{i}.jsonl", docs[i::3]) for i in range(3)]


def _idle_workers(s: dict) -> list[int]:
    """The pool's workers alive during a resolve, started before it: the server's children, or the
    driver's (workers forked from the driver for the next pass start while the resolve runs)."""
    if s["server_children"] is not None:
        return s["server_children"]
    if s["pid"] == s["driver"]:  # resolved in the driver (THRESHER_RESOLVE=driver): its children are the workers
        return s["driver_children"]
    return [p for p in s["older_children"] if p != s["pid"]]


@pytest.mark.parametrize("pool", ["", "forkserver"])
def test_the_resolve_runs_in_a_child_of_the_driver_with_no_idle_worker(tmp_path, inputs, pool):
    rows, seen = _drive(tmp_path, "forked", inputs, 2, {"POLARS_MAX_THREADS": "3", "THRESHER_POOL": pool})
    assert len(seen) == 2  # exact dedup's resolve and MinHash's
    for s in seen:
        assert s["pid"] != s["driver"] and s["ppid"] == s["driver"]  # a child of the driver
        assert (s["server_children"] is None) == (pool == "")  # workers forked from the driver, or the server
        assert _idle_workers(s) == []  # the pool's workers ended before it
        if pool == "":  # the next pass's, forked from the driver while it runs (the last resolve's: an unused pool)
            assert len([p for p in s["driver_children"] if p != s["pid"]]) <= 2
        assert s["polars_threads"] == 3  # the driver's thread budget, not a worker's
        assert s["threads"] == ["MainThread"]
    one = run_recipe(inputs, tmp_path / "one", PROCESS, workers=1, input={"shard_size_mb": 0.05})
    assert rows == one.output_rows > 0
    assert _digest(tmp_path / "forked") == _digest(tmp_path / "one")
    # as before (benchmarks compare): in the driver, the idle workers kept
    rows, seen = _drive(tmp_path, "driver", inputs, 2, {"THRESHER_RESOLVE": "driver", "THRESHER_POOL": pool})
    assert all(s["pid"] == s["driver"] and len(_idle_workers(s)) == 2 for s in seen) and len(seen) == 2
    assert rows == one.output_rows and _digest(tmp_path / "driver") == _digest(tmp_path / "one")


RUN_FORKED = textwrap.dedent("""
    import json, os, signal
    from thresher.pipeline.errors import ThresherError
    from thresher.pipeline.executors.local import ChildTraceback, fork_unsafe, run_forked

    out = {"unsafe_at_start": fork_unsafe()}
    out["pid"] = run_forked(os.getpid, (), "a test")

    def fails(msg):
        raise ValueError(msg)

    try:
        run_forked(fails, ("boom in the child",), "a test")
    except ValueError as e:
        out["error"] = [str(e), isinstance(e.__cause__, ChildTraceback), "fails" in str(e.__cause__)]

    class Odd(Exception):
        def __init__(self, a, b):
            super().__init__(a)

    def odd():
        raise Odd("odd one", 2)

    try:
        run_forked(odd, (), "a test")
    except Exception as e:
        out["unpicklable"] = [type(e).__name__, str(e)]
    def die():
        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer does

    try:
        run_forked(die, (), "a test")
    except ThresherError as e:
        out["killed"] = str(e)

    import io, threading, warnings
    from rich.console import Console
    from rich.live import Live

    def warns():
        warnings.warn("a warning from the child")  # written to the child's own stderr
        return os.getpid()

    with Live("progress", console=Console(file=io.StringIO(), force_terminal=True), refresh_per_second=50):
        out["unsafe_live"] = fork_unsafe()  # the display's refresh thread runs: still safe
        out["pid_live"] = run_forked(warns, (), "a test")
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, name="some-thread")
    other.start()
    out["unsafe_thread"] = fork_unsafe()
    stop.set()
    other.join()

    import polars as pl

    pl.DataFrame({"a": [3, 1, 2]}).sort("a")  # polars' thread pool starts: forking is unsafe from here
    out["unsafe_after_query"] = fork_unsafe()
    out["pid_after_query"] = run_forked(os.getpid, (), "a test")
    out["driver"] = os.getpid()
    print(json.dumps(out))
""")


def test_run_forked_returns_raises_and_falls_back():
    res = subprocess.run([sys.executable, "-c", RUN_FORKED], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.splitlines()[-1])
    assert out["unsafe_at_start"] == "" and out["pid"] != out["driver"]
    assert out["error"] == ["boom in the child", True, True]  # its type, its message, the child's traceback
    assert out["unpicklable"] == ["RuntimeError", "Odd: odd one"]
    assert "the process forked for it died in a test" in out["killed"]
    assert out["unsafe_live"] == "" and out["pid_live"] not in (out["driver"], out["pid"])
    assert "a warning from the child" in res.stderr
    assert out["unsafe_thread"] == "another Python thread runs (some-thread)"
    assert out["unsafe_after_query"].startswith("polars' threads run") and out["pid_after_query"] == out["driver"]
