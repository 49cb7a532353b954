"""Crash points for fault-injection tests.

The commit of a run is a sequence of steps; a crash between any two must leave an output that
``--resume`` finishes (or that is already complete). Tests prove it by killing a real run at each
named point: ``THRESHER_CRASH_AT=<point>`` makes the process exit at once (``os._exit``, no
cleanup, as a SIGKILL would) when it reaches that point. Unset, a crash point costs one
dictionary lookup. ``THRESHER_PAUSE_AT=<point>=<seconds>`` makes the process sleep there instead,
so a test can act while a run is provably in the middle of something (e.g. holding its lock).
"""

from __future__ import annotations

import os

ENV = "THRESHER_CRASH_AT"
PAUSE_ENV = "THRESHER_PAUSE_AT"
EXIT_CODE = 137  # what a shell reports for SIGKILL


def crash_point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os._exit(EXIT_CODE)
    pause = os.environ.get(PAUSE_ENV)
    if pause and pause.rpartition("=")[0] == name:
        import time

        time.sleep(float(pause.rpartition("=")[2]))
