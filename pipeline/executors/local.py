"""The local executor (the default): a process pool over shards on this machine.

``workers=1`` runs in this process; more use a spawn-context pool (no fork: polars and
pyarrow keep thread pools that do not survive fork). Each worker builds the recipe's ops once.
Before the first pass that uses the pool, the workers compile the recipe's numba kernels, each
kernel in one of them (pipeline/precompile.py), so a first run does not compile them in every worker.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from typing import Any

from thresher.pipeline.errors import ThresherError


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


# Workers hand freed block memory back to the system instead of keeping it for the next block:
# glibc maps allocations from 1 MiB up on their own pages (its default threshold grows up to 32 MiB,
# after which freed blocks stay in the heap), and Arrow's buffers come from jemalloc (not mimalloc,
# which keeps freed pages mapped), which reuses freed pages for a moment before it returns them: from
# malloc, each new block-sized buffer was a fresh mapping zero-filled page by page (two thirds of the
# fineweb recipe's system time). Peak PSS of a 2-worker exact dedup: -100 MB against mimalloc; against
# malloc, the same peak and 4-5x fewer page faults (100k docs: 3.4 -> 1.3 s system time); docs/benchmarks.md,
# "Exact dedup and memory, round two" and "Whole fineweb recipe time". A value set by the user wins;
# where pyarrow is built without jemalloc, malloc ("system").
WORKER_ALLOCATOR = {"ARROW_DEFAULT_MEMORY_POOL": "jemalloc", "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}


def worker_allocator_env() -> dict[str, str]:
    env = {k: v for k, v in WORKER_ALLOCATOR.items() if k not in os.environ}
    if env.get("ARROW_DEFAULT_MEMORY_POOL") == "jemalloc":
        import pyarrow as pa

        try:
            pa.jemalloc_memory_pool()
        except NotImplementedError:
            env["ARROW_DEFAULT_MEMORY_POOL"] = "system"
    return env


_events = None  # in a pool worker: the pool's progress queue (see LocalExecutor._get_pool)


def _init_worker(events) -> None:
    global _events
    _events = events
    events.cancel_join_thread()  # a worker exits without waiting for events nobody reads any more


def _run_shard_reporting(recipe, out: str, k: int, shard, run: str) -> dict:
    """``run_pass_shard`` in a pool worker, its progress events on the pool's queue."""
    from thresher.pipeline.executors.passes import run_pass_shard
    from thresher.pipeline.progress import Channel

    return run_pass_shard(recipe, out, k, shard, Channel(_events, run))


def _warm(_: int) -> int:
    """Start a worker and import the engine in it (so polars reads the thread setting)."""
    import thresher.pipeline.executors.passes  # noqa: F401

    return os.getpid()


class LocalExecutor:
    name = "local"

    def __init__(self, workers: int = 0):
        self.workers = workers or default_workers()
        self._pool: ProcessPoolExecutor | None = None
        self._events = None  # the pool's progress queue (the workers get it when they start)
        self._compiled: set[str] = set()  # kernels the workers have compiled or loaded (precompile)
        self._seeded = False  # shipped compiled kernels put into numba's cache (shipped_kernels)

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._events is not None:
            self._events.close()
            self._events = None

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # threads per worker so that workers x threads ~ cores (set before the children import polars)
            threads = str(max(1, default_workers() // self.workers))
            env = {"POLARS_MAX_THREADS": threads, "OMP_NUM_THREADS": threads, **worker_allocator_env()}
            saved = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            try:
                ctx = mp.get_context("spawn")
                # a queue only a process started with it can use: unused (and free) while no progress is asked for
                self._events = ctx.Queue()
                self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker,
                                                 initargs=(self._events,))
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
                 context: str = "", events: Callable[[tuple], None] | None = None) -> None:
        """Pass k, one process-pool task per shard (each leaves its own done marker). ``events``:
        where progress events go (see ``progress``): called directly when the pass runs in this
        process, else fed from the pool's queue by a driver thread."""
        from thresher.pipeline.executors.passes import run_pass_shard

        if not shards:
            return
        if not self._seeded:  # a first-ever run loads the shipped kernels instead of compiling them
            self._seeded = True
            from thresher.pipeline.shipped_kernels import seed_recipe

            seed_recipe(recipe)
        if not self._in_process(len(shards)) and os.environ.get("THRESHER_PRECOMPILE", "1") != "0":
            # THRESHER_PRECOMPILE=0: each worker compiles what it calls (benchmarks compare)
            self.precompile(recipe)

        def done(r: dict) -> None:
            on_shard_done(r["shard"])

        if events is None:
            self.map(run_pass_shard, [(recipe, out, k, s) for s in shards], done, context)
        elif self._in_process(len(shards)):
            from thresher.pipeline.progress import Channel

            channel = Channel(events, getattr(recipe, "attempt_id", ""))
            self.map(run_pass_shard, [(recipe, out, k, s, channel) for s in shards], done, context)
        else:
            from thresher.pipeline.progress import Drain

            self._get_pool()
            with Drain(partial(_take_all, self._events), events, len(shards)):
                self.map(_run_shard_reporting, [(recipe, out, k, s, getattr(recipe, "attempt_id", "")) for s in shards], done, context)

    def precompile(self, recipe) -> None:
        """Have the workers compile the numba kernels of the recipe's ops (or load them from the
        cache), one task per kernel, the costliest first, before the shards run: each kernel is
        compiled once, the workers in parallel, and the shards and the driver load it from numba's
        cache (pipeline/precompile.py). Nothing for ops without kernels. A pass that runs in this
        process (one shard) does not start the pool for it: measured on the loaded 2-core machine,
        starting it to compile in parallel cost more than it saved (docs/benchmarks.md)."""
        from thresher.pipeline.precompile import compile_kernel, recipe_kernels

        todo = [(k, sigs) for k, sigs in recipe_kernels(spec.op_class() for spec in recipe.ops)
                if k not in self._compiled]
        if not todo:
            return
        self._compiled.update(k for k, _ in todo)
        list(self._get_pool().map(compile_kernel, [k for k, _ in todo], [sigs for _, sigs in todo]))

    def _in_process(self, calls: int) -> bool:
        return self.workers == 1 or calls == 1

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
        if self._in_process(len(calls)):
            for args in calls:
                on_done(fn(*args))
            return
        pool = self._get_pool()
        futures = {pool.submit(fn, *args) for args in calls}
        while futures:
            done, futures = wait(futures, return_when=FIRST_COMPLETED)  # on_done as each finishes
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


def _take_all(q) -> list:
    """What is waiting on a multiprocessing queue, without blocking."""
    out = []
    with contextlib.suppress(queue.Empty):
        while True:
            out.append(q.get_nowait())
    return out
