"""The local executor (the default): a process pool over shards on this machine.

``workers=1`` runs in this process; more use a process pool whose workers are forked from one fork
server (multiprocessing's ``forkserver`` start method): a clean process started for the pool, which
imports the engine and the modules of the recipe's ops (and loads their cached numba kernels,
pipeline/executors/forkserver.py) once, before it has started any thread pool, so the workers share
those pages copy-on-write instead of each importing its own (peak PSS of the tree, docs/benchmarks.md
"Fourth step: forked workers"). Not the driver itself: polars and pyarrow keep thread pools that do
not survive fork. Where there is no fork server (not Linux/macOS), or ``THRESHER_POOL=spawn``, the
workers are spawned, each importing what it needs (``LocalExecutor.start_method`` and ``.why``).
Each worker builds the recipe's ops once. Before the first pass that uses the pool, the workers
compile the recipe's numba kernels the cache does not hold, each kernel in one of them
(pipeline/precompile.py), so a first run does not compile them in every worker.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import queue
import signal
import threading
import weakref
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


POOL_ENV = "THRESHER_POOL"  # "spawn": spawned workers, as before the fork server (benchmarks compare)
SETUP_ENV = "THRESHER_FORKSERVER_SETUP"  # what the fork server does after its imports (forkserver.py)
# The engine every worker runs (its imports: pyarrow, polars, numpy) and what a pool task unpickles.
ENGINE_MODULES = ("thresher.pipeline.executors.passes", "thresher.pipeline.executors.local",
                  "thresher.pipeline.progress", "thresher.pipeline.precompile")


def server_env() -> dict[str, str]:
    """The fork server starts single-threaded, so that no lock is held by another thread when it
    forks: no jemalloc background threads in Arrow's or polars' allocator (``background_thread``,
    added after any setting the user made; a child forked from a process with them has them off
    anyway: jemalloc turns them off after fork), and OpenBLAS without its thread pool unless the
    user set ``OPENBLAS_NUM_THREADS``. polars' own thread pool starts on first use, not on import;
    its import does start one parked thread (``polars-ooc-cleaner``, nothing turns it off), which
    waits on a futex holding no lock."""
    env = {k: ",".join(filter(None, [os.environ.get(k, ""), "background_thread:false"]))
           for k in ("JE_ARROW_MALLOC_CONF", "_RJEM_MALLOC_CONF")}
    if "OPENBLAS_NUM_THREADS" not in os.environ:
        env["OPENBLAS_NUM_THREADS"] = "1"
    return env


# The fork server this module started: one per process (multiprocessing keeps one, with one global
# preload list), stopped when the last pool forked from it closes. A pool that needs other modules or
# another environment while another is open (their workers report their exit through the server) spawns.
_server_lock = threading.Lock()
_server: dict[str, Any] = {"pid": None, "key": None}
_forked_pools: weakref.WeakSet = weakref.WeakSet()


@contextlib.contextmanager
def _environ(env: dict[str, str]):
    """``os.environ`` is ``env`` inside (for a process started in it), as it was after; only the
    keys that differ are touched (other threads of this process may read the environment)."""
    saved = dict(os.environ)
    _set_environ(env)
    try:
        yield
    finally:
        _set_environ(saved)


def _set_environ(env: dict[str, str]) -> None:
    for k in [k for k in os.environ if k not in env]:
        del os.environ[k]
    for k, v in env.items():
        if os.environ.get(k) != v:
            os.environ[k] = v


def _open_pools() -> bool:
    return any(not p._shutdown_thread for p in _forked_pools)


def _stop_server() -> None:
    import multiprocessing.forkserver as mpfs

    fs = mpfs._forkserver
    if fs._forkserver_pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(fs._forkserver_pid, signal.SIGTERM)  # it would wait for every process that holds its pipe
        fs._stop()
    _server.update(pid=None, key=None)


def forkserver_context(preload: list[str], env: dict[str, str]):
    """The ``forkserver`` context with a server that has imported ``preload`` in environment ``env``
    (started or restarted here), or (None, why not): the caller spawns its workers instead."""
    if "forkserver" not in mp.get_all_start_methods():
        return None, "this platform has no fork server"
    try:
        import multiprocessing.forkserver as mpfs

        fs = mpfs._forkserver
        fs._forkserver_pid, fs._stop  # noqa: B018 - the private parts used below: their absence means spawn
    except (ImportError, AttributeError):
        return None, "this Python's multiprocessing has no fork server this executor can manage"
    ctx = mp.get_context("forkserver")
    key = (tuple(preload), tuple(sorted(env.items())))
    with _server_lock:
        if fs._forkserver_pid is not None and fs._forkserver_pid != _server["pid"]:
            return None, "this process's fork server was started by other code"
        if _server["pid"] is not None and _server["key"] != key:
            if _open_pools():
                return None, "a pool forked from a fork server with other modules or environment is still open"
            _stop_server()
        with _environ(env):  # the server, and every worker it forks, has this environment
            ctx.set_forkserver_preload(list(preload))
            fs.ensure_running()  # (also restarts a server that died)
        _server.update(pid=fs._forkserver_pid, key=key)
    return ctx, ""


def release_server() -> None:
    """Stop the fork server once no pool forked from it is open, and wait for it: a run leaves no
    process behind, and its workers' CPU time counts in this process's children (``RUSAGE_CHILDREN``,
    what the benchmarks measure: the server waited for its workers), as a spawned pool's did."""
    with _server_lock:
        if _server["pid"] is not None and not _open_pools():
            _stop_server()


def forkserver_pid() -> int | None:
    """The pid of the fork server this module started, while it runs (tests)."""
    return _server["pid"]


_events = None  # in a pool worker: the pool's progress queue (see LocalExecutor._get_pool)


def _init_worker(events, driver: int | None = None) -> None:
    global _events
    _events = events
    events.cancel_join_thread()  # a worker exits without waiting for events nobody reads any more
    if driver is not None:
        _end_with(driver)


def _end_with(driver: int) -> None:
    """End this worker as soon as the driver process has ended, however it ended. A driver killed
    outright (SIGKILL, the OOM killer) otherwise leaves its pool's workers running for good: a
    worker forked from the fork server is not the driver's child, and a spawned one holds both ends
    of the task queue's pipe, so neither ever reads an end of file. Linux: a daemon thread blocked
    on the driver's pidfd (readable once the process has ended); elsewhere it checks once a second."""
    import select
    import time

    def watch() -> None:
        try:
            fd = os.pidfd_open(driver)
        except ProcessLookupError:
            os._exit(1)  # already gone
        except (AttributeError, OSError):  # no pidfd_open (not Linux, or a kernel before 5.3)
            fd = None
        if fd is not None:
            select.select([fd], [], [])
        else:
            while True:
                time.sleep(1.0)
                try:
                    os.kill(driver, 0)
                except ProcessLookupError:
                    break
                except PermissionError:
                    pass
        os._exit(1)

    threading.Thread(target=watch, name="thresher-driver-watch", daemon=True).start()


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
        self._preload: list[str] = list(ENGINE_MODULES)  # what the fork server imports (want)
        self._setup: dict = {}  # what it does then (pipeline/executors/forkserver.py)
        self.start_method = ""  # how the pool's workers started: "forkserver" or "spawn" (once started)
        self.why = ""  # why "spawn", where the fork server was not used

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            if self.start_method == "forkserver":
                release_server()
        if self._events is not None:
            self._events.close()
            self._events = None

    def want(self, recipe) -> None:
        """Before the pool starts: the fork server is to import the modules of the recipe's built-in
        ops (a plugin's module is imported by each worker: its import may have side effects, threads
        among them), settle the pandas probe where every op is built in (passes.ops_for does the same
        in each worker) and load the recipe's kernels from numba's cache (unless
        ``THRESHER_PRECOMPILE=0``, where each worker compiles what it calls)."""
        if self._pool is not None:
            return
        from thresher.pipeline.precompile import recipe_kernels

        classes = [spec.op_class() for spec in recipe.ops]
        builtin = all(c.__module__.startswith("thresher.") for c in classes)
        mods = sorted({c.__module__ for c in classes if c.__module__.startswith("thresher.")})
        self._preload = [*ENGINE_MODULES, *mods]
        precompile = os.environ.get("THRESHER_PRECOMPILE", "1") != "0"
        self._setup = {"no_pandas": builtin,
                       "kernels": [[k, list(sigs)] for k, sigs in recipe_kernels(classes)] if precompile else []}

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # threads per worker so that workers x threads ~ cores (set before the children import polars)
            threads = str(max(1, default_workers() // self.workers))
            env = {**os.environ, "POLARS_MAX_THREADS": threads, "OMP_NUM_THREADS": threads, **worker_allocator_env()}
            ctx, self.why = (None, f"{POOL_ENV}=spawn") if os.environ.get(POOL_ENV) == "spawn" else \
                forkserver_context([*self._preload, "thresher.pipeline.executors.forkserver"],  # last: it settles
                                   {**env, **server_env(), SETUP_ENV: json.dumps(self._setup)})
            self.start_method = "spawn" if ctx is None else "forkserver"
            with _environ(env):  # spawned workers start in it (forked ones have the server's)
                ctx = ctx or mp.get_context("spawn")
                # a queue only a process started with it can use: unused (and free) while no progress is asked for
                self._events = ctx.Queue()
                self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker,
                                                 initargs=(self._events, os.getpid()))
                # start the workers now, while the environment is set
                list(self._pool.map(_warm, range(self.workers)))
            if self.start_method == "forkserver":
                _forked_pools.add(self._pool)
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
        if not self._in_process(len(shards)):
            self.want(recipe)
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
