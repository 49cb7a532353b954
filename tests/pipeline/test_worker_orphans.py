"""A local pool's workers end with the driver, however the driver ends.

Found 2026-11-28: a `thresher run` killed with SIGKILL (as the OOM killer or `kill -9` does) left
its two pool workers running for good, with the fork server (forked pool) or on their own (spawned
pool, the behaviour before the fork server too): a worker forked from the fork server is not the
driver's child, and a spawned one holds both ends of its task queue's pipe, so neither sees the
driver go. Each worker now watches the driver's pid (pipeline/executors/local.py, ``_end_with``); the
child a resolve runs in is killed by the kernel when the driver ends (``run_forked``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

DRIVER = textwrap.dedent("""
    import os, sys, time
    from thresher.pipeline.executors.local import LocalExecutor, _warm

    ex = LocalExecutor(2)
    pool = ex._get_pool()
    list(pool.map(_warm, range(4)))  # both workers up
    print("ready", flush=True)
    time.sleep(600)                  # killed by the test long before
""")


def _gone(pids: list[int], limit: float = 60.0) -> list[int]:
    """The processes of ``pids`` still running after up to ``limit`` seconds (a liveness bound for a
    loaded machine, not a speed check: without the fix they never end)."""
    end = time.monotonic() + limit
    alive = list(pids)
    while alive and time.monotonic() < end:
        alive = [p for p in alive if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.2)
    return alive


@pytest.mark.parametrize("pool", ["fork", "forkserver", "spawn"])
def test_workers_end_when_the_driver_is_killed(pool, tmp_path):
    """fork: the workers are the driver's children, forked from it (the default)."""
    env = {**os.environ, "THRESHER_POOL": pool if pool != "fork" else ""}
    proc = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, text=True, env=env,
                            cwd=tmp_path)
    workers: list[int] = []
    try:
        assert proc.stdout.readline().strip() == "ready"
        tree = psutil.Process(proc.pid).children(recursive=True)
        workers = [p.pid for p in tree if "resource_tracker" not in " ".join(p.cmdline())]
        # forkserver: the server and its two workers; fork, spawn: the two workers
        assert len(workers) == (3 if pool == "forkserver" else 2), [p.cmdline() for p in tree]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert _gone(workers) == []
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.kill()


FORKED = textwrap.dedent("""
    import os, time
    from thresher.pipeline.executors.local import run_forked

    def resolve():
        print("child", os.getpid(), flush=True)
        time.sleep(600)  # killed with the driver long before

    run_forked(resolve, (), "a resolve")
""")


def test_a_resolve_child_ends_when_the_driver_is_killed(tmp_path):
    """The child a resolve runs in (``run_forked``) ends with the driver (``PR_SET_PDEATHSIG``)."""
    proc = subprocess.Popen([sys.executable, "-c", FORKED], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    child = 0
    try:
        line = proc.stdout.readline().split()
        assert line[0] == "child", line
        child = int(line[1])
        assert psutil.Process(child).ppid() == proc.pid
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert _gone([child]) == []
    finally:
        if child:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        proc.kill()


def test_a_worker_started_after_its_driver_ended_exits_at_once():
    """The watch is set up when the worker starts: a driver already gone ends it there."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    code = textwrap.dedent(f"""
        import time
        from thresher.pipeline.executors.local import _end_with
        _end_with({dead.pid})
        time.sleep(600)
    """)
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        assert child.wait(timeout=60) == 1
    finally:
        child.kill()
