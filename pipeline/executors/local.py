"""The local executor (the default): a process pool over shards on this machine.

``workers=1`` runs in this process; more use a spawn-context pool (no fork: polars and
pyarrow keep thread pools that do not survive fork). Each worker builds the recipe's ops once.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from thresher.pipeline.errors import ThresherError


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def _warm(_: int) -> int:
    """Start a worker and import the engine in it (so polars reads the thread setting)."""
    import thresher.pipeline.executors.passes  # noqa: F401

    return os.getpid()


class LocalExecutor:
    name = "local"

    def __init__(self, workers: int = 0):
        self.workers = workers or default_workers()
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # threads per worker so that workers x threads ~ cores (set before the children import polars)
            threads = str(max(1, default_workers() // self.workers))
            saved = {k: os.environ.get(k) for k in ("POLARS_MAX_THREADS", "OMP_NUM_THREADS")}
            os.environ.update({"POLARS_MAX_THREADS": threads, "OMP_NUM_THREADS": threads})
            try:
                self._pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"))
                # start the workers now, while the environment is set
                list(self._pool.map(_warm, range(self.workers)))
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
        return self._pool

    def run_pass(self, recipe, out: str, k: int, shards: list, on_shard_done: Callable[[int], None],
                 context: str = "") -> None:
        """Pass k, one process-pool task per shard (each leaves its own done marker)."""
        from thresher.pipeline.executors.passes import run_pass_shard

        self.map(run_pass_shard, [(recipe, out, k, s) for s in shards], lambda r: on_shard_done(r["shard"]), context)

    def resolve(self, recipe, out: str, k: int, n_shards: int) -> dict:
        from thresher.pipeline.executors.passes import resolve_pass

        return resolve_pass(recipe, out, k, n_shards)

    def map(self, fn: Callable[..., Any], calls: Iterable[tuple], on_done: Callable[[Any], None],
            context: str = "") -> None:
        """Run ``fn(*args)`` for every args tuple; ``on_done(result)`` as each finishes.
        The first exception cancels what has not started and is re-raised."""
        calls = list(calls)
        if not calls:
            return
        if self.workers == 1 or len(calls) == 1:
            for args in calls:
                on_done(fn(*args))
            return
        pool = self._get_pool()
        futures = {pool.submit(fn, *args) for args in calls}
        while futures:
            done, futures = wait(futures, return_when=FIRST_EXCEPTION)
            for f in done:
                exc = f.exception()
                if exc is not None:
                    for other in futures:
                        other.cancel()
                    if isinstance(exc, BrokenProcessPool):  # a worker was killed, most often by the OOM killer
                        raise ThresherError(
                            f"a worker process died in {context or 'a pass'} (killed, often for memory). Lower "
                            "executor.batch_size_mb or executor.workers; the finished shards are kept, so "
                            "`--resume` continues from there.") from None
                    raise exc
                on_done(f.result())
