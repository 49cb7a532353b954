"""Tear down the local Ray a thresher driver started when that driver dies, however it dies.

Why a separate process: Ray starts its head processes (gcs_server, raylet, monitor, dashboard,
log_monitor) so that they die with the driver (``PR_SET_PDEATHSIG``), but what the raylet starts does
not follow the raylet: after a SIGKILLed driver the ``DashboardAgent`` and ``RuntimeEnvAgent``
(~220 MB together) and idle workers live on, re-parented to init, and the agents catch SIGTERM without
exiting. Nothing runs in a process killed by SIGKILL, so the driver cannot clean up after itself;
this watchdog, started by :class:`pipeline.executors.ray.RayExecutor` right after ``ray.init()``
started a local Ray, does it instead. It runs in its own session, so a Ctrl-C or hang-up sent to the
driver's terminal does not take it along before the driver has shut Ray down.

Usage: ``python -m pipeline.executors.ray_watchdog DRIVER_PID SESSION_DIR ROOT_PID...`` with a pipe on
stdin. It waits until the driver's pid exits (a pidfd where the kernel has one, else a poll) or
anything arrives on stdin (the driver writes ``stop`` after ``ray.shutdown()``; EOF when it dies),
then stops every process of the session: SIGTERM, SIGKILL after :data:`GRACE_S`, and exits.

Which processes belong to the session (only those: other Ray sessions share the machine):

- the roots the driver names (the processes ``ray.init()`` started: gcs_server, raylet, ...) and,
  tracked every :data:`TICK_S` while the driver lives, all their descendants — the raylet's agents and
  workers, and whatever those start. The tree has to be recorded beforehand: once the driver dies,
  Ray kills the raylet and its children are re-parented, which erases the link;
- at the end, also every process whose command line names the session directory (the head
  processes are started with it), or that has a file of the session directory open as its stdin,
  stdout or stderr (Ray sends each worker's output to ``SESSION_DIR/logs``; a worker's children
  inherit it), or — for a process named ``ray::…`` (agents and workers rename themselves so) — as
  any descriptor (they inherit the raylet's ``logs/raylet.out``). This catches a process born between
  the last tick and the driver's death. A reader such as ``tail -f`` of a log has it on another
  descriptor and is left alone;
- never the driver (it has session files open too, and outlives ``ray.shutdown()`` on a normal
  exit) nor the watchdog itself; pids are checked with their creation time, so a reused pid is not
  taken for a session process.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import sys
import time
from collections import defaultdict

import psutil

GRACE_S = 3.0  # between SIGTERM and SIGKILL: Ray's agents catch SIGTERM and stay, so keep it short
TICK_S = 2.0  # how often the session's process tree is recorded while the driver lives (~10 ms a scan)


class Session:
    """The processes of one local Ray session, as defined in the module docstring."""

    def __init__(self, session_dir: str, roots: list[int], exclude: set[int]):
        self.dirs = {os.path.abspath(session_dir), os.path.realpath(session_dir)}
        self.named = re.compile("|".join(re.escape(d) + r"(?=$|[/\s'\",;:])" for d in self.dirs))
        self.exclude = exclude
        self.known: dict[int, psutil.Process] = {}
        for pid in roots:
            with contextlib.suppress(psutil.Error):
                self.known[pid] = psutil.Process(pid)

    def track(self) -> None:
        """Record the descendants of every session process still alive (the tree is lost once the
        driver and raylet are gone)."""
        self.known = {pid: p for pid, p in self.known.items() if alive(p)}
        children: dict[int, list[psutil.Process]] = defaultdict(list)
        for p in psutil.process_iter(["ppid"]):
            children[p.info["ppid"]].append(p)
        stack = list(self.known)
        while stack:
            for c in children.get(stack.pop(), ()):
                if c.pid not in self.known and c.pid not in self.exclude:
                    self.known[c.pid] = c
                    stack.append(c.pid)

    def _under(self, path: str) -> bool:
        return any(path.startswith(d + os.sep) for d in self.dirs)

    def _marked(self, p: psutil.Process) -> bool:
        """Whether ``p`` names the session directory or has its files as Ray's processes do."""
        try:
            if self.named.search(" ".join(p.info["cmdline"] or ())):
                return True
            ray_named = (p.info["name"] or "").startswith("ray::")
            return any(self._under(f.path) and (ray_named or f.fd in (0, 1, 2)) for f in p.open_files())
        except psutil.Error:  # gone, or another user's (which we could not stop anyway)
            return False

    def members(self) -> list[psutil.Process]:
        """The tracked processes plus those marked as the session's, and their descendants."""
        for p in psutil.process_iter(["name", "cmdline"]):
            if p.pid not in self.exclude and p.pid not in self.known and self._marked(p):
                self.known[p.pid] = p
        self.track()
        return list(self.known.values())

    def stop(self, grace: float = GRACE_S) -> tuple[int, list[psutil.Process]]:
        """SIGTERM every member, SIGKILL what is left after ``grace``; again while new ones turn up
        (a raylet may start a worker while it goes down). Returns how many were signalled and the
        processes that survived."""
        left: list[psutil.Process] = []
        n = 0
        for _ in range(3):
            procs = [p for p in self.members() if alive(p)]
            if not procs:
                break
            n += len(procs)
            _signal(procs, "terminate")
            left = _wait(procs, grace)
            _signal(left, "kill")
            left = _wait(left, 2.0)
        return n, left


def alive(p: psutil.Process) -> bool:
    """Running and not a zombie (a killed orphan stays a zombie until init reaps it: it holds no memory)."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def _signal(procs: list[psutil.Process], how: str) -> None:
    for p in procs:
        with contextlib.suppress(psutil.Error):
            getattr(p, how)()  # psutil refuses if the pid was reused by another process


def _wait(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in procs if alive(p)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def wait_for_driver(driver_pid: int, session: Session) -> str:
    """Block until the driver exits or writes to (or closes) our stdin; track the tree meanwhile."""
    try:
        driver = psutil.Process(driver_pid)
    except psutil.NoSuchProcess:
        return "driver gone before the watchdog started"
    if os.getppid() != driver_pid:  # re-parented: the driver died before we got here
        return "driver gone before the watchdog started"
    waitables: list = [sys.stdin.fileno()]
    with contextlib.suppress(AttributeError, OSError):
        waitables.append(os.pidfd_open(driver_pid))  # Linux >= 5.3: readable when the process exits
    while True:
        session.track()
        ready, _, _ = select.select(waitables, [], [], TICK_S)
        if sys.stdin.fileno() in ready:
            return "stop requested" if os.read(sys.stdin.fileno(), 64).strip() else "driver's pipe closed"
        if ready or not alive(driver):
            return "driver exited"


def main(argv: list[str]) -> int:
    driver_pid, session_dir, roots = int(argv[0]), argv[1], [int(a) for a in argv[2:]]
    session = Session(session_dir, roots, exclude={os.getpid(), driver_pid})
    why = wait_for_driver(driver_pid, session)
    t0 = time.monotonic()
    n, left = session.stop()
    print(f"thresher ray watchdog: {why}; stopped {n} process(es) of {session_dir} in "
          f"{time.monotonic() - t0:.1f}s" + (f"; could not stop {[p.pid for p in left]}" if left else ""),
          file=sys.stderr, flush=True)
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
