"""A local Ray started by ``thresher run --executor ray`` goes away with its driver: after a normal run,
and after a SIGKILLed driver (issue 12). Ray itself stops its head processes when the driver dies
but left the raylet's DashboardAgent / RuntimeEnvAgent (~220 MB) and workers running; the executor's
watchdog (``pipeline.executors.ray_watchdog``) now stops them.

Done for real: the CLI in a subprocess with its own local Ray (no ``RAY_ADDRESS``, so it does not
join the test session's Ray), its processes found by the Ray session directory they use, the driver
killed by signal. Only processes of that session are touched, also when cleaning up after a failure.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import sample_docs, write_jsonl

psutil = pytest.importorskip("psutil")
pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[2]
GONE_WITHIN_S = 20.0
SESSION = re.compile(r"(/[^\s=]*/session_[^/\s]+)/")


def write_recipe(tmp_path: Path, files: int, docs_per_file: int) -> tuple[Path, Path]:
    docs = sample_docs(files * docs_per_file, seed=5)
    for i in range(files):
        write_jsonl(tmp_path / "in" / f"part{i:02d}.jsonl", docs[i * docs_per_file:(i + 1) * docs_per_file])
    out = tmp_path / "out"
    body = {"input": {"paths": [str(tmp_path / "in")]}, "output": {"path": str(out), "rows_per_shard": 500},
            "executor": {"type": "ray", "workers": 2},
            "process": [{"whitespace_normalize": {}}, {"gopher_repetition_filter": {}}, {"exact_dedup": {}}]}
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(body))
    return recipe, out


def start_driver(recipe: Path, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a local Ray of its own
    with open(log, "wb") as f:
        return subprocess.Popen([sys.executable, "-m", "thresher", "run", str(recipe), "--executor", "ray", "-q"],
                                cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)


class SessionWatch:
    """The processes of the driver's Ray session, recorded as they appear: the driver's descendants
    (tracked while it lives: they are re-parented when it dies), and anything naming the session
    directory or holding a file in it. ``psutil.Process`` objects remember their creation time, so a
    pid reused later is not mistaken for one of them."""

    def __init__(self, driver_pid: int):
        self.driver = psutil.Process(driver_pid)
        self.session_dir: str | None = None
        self.seen: dict[int, psutil.Process] = {}
        self.seen_names: set[str] = set()  # kept: a process that is gone has no name to ask for
        self.watchdog_seen = False

    def record(self) -> None:
        try:
            kids = self.driver.children(recursive=True)
        except psutil.NoSuchProcess:
            kids = []
        for p in kids:
            self.seen.setdefault(p.pid, p)
            if self.session_dir is None:
                with _quiet():
                    m = SESSION.search(" ".join(p.cmdline()))
                    self.session_dir = m.group(1) if m else None
        for p in list(self.seen.values()):  # and what those started (the raylet's children)
            with _quiet():
                for c in p.children(recursive=True):
                    self.seen.setdefault(c.pid, c)
        if self.session_dir:
            for p in self.by_session_dir():
                self.seen.setdefault(p.pid, p)

    def by_session_dir(self) -> list[psutil.Process]:
        """Every process (but this one and the driver) whose command line or open files are in the session directory."""
        found = []
        for p in psutil.process_iter(["cmdline"]):
            if p.pid in (os.getpid(), self.driver.pid):
                continue
            with _quiet():
                if (self.session_dir in " ".join(p.info["cmdline"] or ())
                        or any(f.path.startswith(self.session_dir + "/") for f in p.open_files())):
                    found.append(p)
        return found

    def names(self) -> set[str]:
        for p in self.seen.values():
            with _quiet():
                self.seen_names.add(p.name())  # Ray's processes rename themselves: ray::IDLE, ray::ReadBlocks...
        return self.seen_names

    def has_watchdog(self) -> bool:
        """Whether the executor's watchdog runs (remembered: it exits with the session)."""
        for p in self.alive():
            with _quiet():
                if "thresher.pipeline.executors.ray_watchdog" in p.cmdline():
                    self.watchdog_seen = True
        return self.watchdog_seen

    def alive(self) -> list[psutil.Process]:
        return [p for p in self.seen.values() if _alive(p)]

    def kill_all(self) -> None:
        """Cleanup after a failed test: only what was recorded, by pid (and creation time)."""
        for p in self.alive():
            with _quiet():
                p.kill()


def _quiet():
    return contextlib.suppress(psutil.Error)  # the process is gone (or not ours to look into)


def _alive(p) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE  # a zombie is gone, only not reaped yet
    except psutil.NoSuchProcess:
        return False


def _describe(procs) -> list[str]:
    out = []
    for p in procs:
        with _quiet():
            out.append(f"{p.pid} {p.name()} {' '.join(p.cmdline())[:100]}")
    return out


def _wait_gone(watch: SessionWatch, timeout: float) -> list:
    """What is still alive of the session after ``timeout`` (polling): recorded, or newly found by its directory."""
    deadline = time.monotonic() + timeout
    while True:
        left = {p.pid: p for p in watch.alive() + watch.by_session_dir() if _alive(p)}
        if not left or time.monotonic() > deadline:
            return list(left.values())
        time.sleep(0.25)


@pytest.mark.slow
def test_sigkilled_driver_leaves_no_process_of_its_ray_session(tmp_path):
    recipe, out = write_recipe(tmp_path, files=24, docs_per_file=1500)
    driver = start_driver(recipe, tmp_path / "driver.log")
    watch = SessionWatch(driver.pid)
    try:
        deadline = time.monotonic() + 180
        while True:  # until Ray runs the first pass: agents up, workers busy, the watchdog started
            watch.record()
            names = watch.names()
            ready = (watch.session_dir and {"ray::DashboardAgent", "ray::RuntimeEnvAgent", "raylet"} <= names
                     and any(n.startswith("ray::") and "Agent" not in n for n in names)
                     and (out / "_work" / "pass-0").exists() and watch.has_watchdog())
            if ready:
                break
            if driver.poll() is not None:
                pytest.fail("the run ended before it could be killed; make the input bigger\n"
                            + (tmp_path / "driver.log").read_text())
            if time.monotonic() > deadline:
                pytest.fail(f"Ray did not start up in time: {sorted(names)}")
            time.sleep(0.1)
        watch.record()
        before = _describe(watch.alive())
        assert len(before) >= 6, before

        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        t0 = time.monotonic()
        left = _wait_gone(watch, GONE_WITHIN_S)
        assert not left, (f"{len(left)} of the session's processes still run {GONE_WITHIN_S}s after the driver's "
                          f"SIGKILL: {_describe(left)}; the session had {before}")
        print(f"{len(before)} processes of {watch.session_dir} gone {time.monotonic() - t0:.1f}s after the SIGKILL")
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        watch.kill_all()


@pytest.mark.slow
def test_normal_run_leaves_no_process_of_its_ray_session(tmp_path):
    recipe, out = write_recipe(tmp_path, files=3, docs_per_file=300)
    driver = start_driver(recipe, tmp_path / "driver.log")
    watch = SessionWatch(driver.pid)
    try:
        while driver.poll() is None:
            watch.record()
            watch.names()
            watch.has_watchdog()
            time.sleep(0.25)
        assert driver.returncode == 0, (tmp_path / "driver.log").read_text()
        assert (out / "_SUCCESS").exists()
        assert watch.session_dir and "raylet" in watch.names(), "the run's local Ray was not seen"
        assert watch.watchdog_seen
        left = _wait_gone(watch, 5.0)  # the driver waits for Ray and the watchdog to stop: nothing to wait for
        assert not left, f"a finished run left processes of its Ray session: {_describe(left)}"
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        watch.kill_all()
