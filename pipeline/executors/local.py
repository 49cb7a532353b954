"""The local executor (the default): a process pool over shards on this machine.

``workers=1`` runs in this process; more use a process pool whose workers are forked from the
driver itself where that is safe (``fork_unsafe``: no polars thread pool or other Python thread
running in it), after it has done what a fork server would (``_prepare_fork``: imported the engine
and the modules of the recipe's ops, loaded their cached numba kernels): the workers share the
driver's pages copy-on-write, the tree holds its imports once, and no server has to start before
the first pass (docs/benchmarks.md, "Workers forked from the driver"). Otherwise, or with
``THRESHER_POOL=forkserver``, they are forked from one fork server (multiprocessing's
``forkserver`` start method): a clean process started for the pool, which imports the engine and
the modules of the recipe's ops (and loads their cached numba kernels,
pipeline/executors/forkserver.py) once, before it has started any thread pool, so the workers share
those pages copy-on-write instead of each importing its own (peak PSS of the tree, docs/benchmarks.md
"Fourth step: forked workers"). Where there is no fork server (not Linux/macOS), or
``THRESHER_POOL=spawn``, the workers are spawned, each importing what it needs
(``LocalExecutor.start_method`` and ``.why``). Each worker builds the recipe's ops once. Before the
first pass that uses the pool, the workers compile the recipe's numba kernels the cache does not
hold, each kernel in one of them (pipeline/precompile.py), so a first run does not compile them in
every worker.

A global op's resolve runs in a child forked from the driver for it (``run_forked``), after the
pool's idle workers have ended (the next pass forks fresh ones from the server): the resolve's
memory goes back to the system when the child exits, instead of staying with the driver (polars'
allocator kept ~30 MB of exact dedup's through the last pass), and idle workers hold nothing
meanwhile (docs/benchmarks.md, "Sixth step"). The child has the driver's thread budget and shares its
pages; where forking the driver is not safe (a polars thread pool or another Python thread running
in it: a ``workers: 1`` run, a spawned pool) the resolve runs in the driver, as before.
"""

from __future__ import annotations

import contextlib
import gc
import json
import multiprocessing as mp
import os
import pickle
import queue
import signal
import sys
import threading
import traceback
import warnings
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
# where pyarrow is built without jemalloc, malloc ("system"). The mmap threshold is 4 MiB (a block's
# size, executor.batch_size_mb) and the trim threshold 16 MiB: at 1 MiB every block-sized numpy/bytes
# temporary was a fresh mapping, and a fixed mmap threshold also pins glibc's trim threshold at
# 128 KiB, so the heap top was handed back and faulted in again around every 256 KiB mask; the heap
# goes back to the system after each shard anyway (passes.trim_heap). Exact dedup, 100k docs, 2
# workers: system 2.3 -> 1.1 s, CPU 6.6 -> 5.2 s, the same peak PSS (docs/benchmarks.md, "Sixth step, time").
WORKER_ALLOCATOR = {"ARROW_DEFAULT_MEMORY_POOL": "jemalloc", "MALLOC_MMAP_THRESHOLD_": str(4 << 20),
                    "MALLOC_TRIM_THRESHOLD_": str(16 << 20)}


def worker_allocator_env() -> dict[str, str]:
    env = {k: v for k, v in WORKER_ALLOCATOR.items() if k not in os.environ}
    if env.get("ARROW_DEFAULT_MEMORY_POOL") == "jemalloc":
        import pyarrow as pa

        try:
            pa.jemalloc_memory_pool()
        except NotImplementedError:
            env["ARROW_DEFAULT_MEMORY_POOL"] = "system"
    return env


POOL_ENV = "THRESHER_POOL"  # "forkserver" / "spawn": workers from the fork server / spawned (benchmarks compare)
RESOLVE_ENV = "THRESHER_RESOLVE"  # "driver": resolve in the driver with the workers kept, as before (benchmarks)
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


def _init_worker(events, driver: int | None = None, forked: dict[str, str] | None = None) -> None:
    global _events
    _events = events
    events.cancel_join_thread()  # a worker exits without waiting for events nobody reads any more
    if forked is not None:
        _forked_from_driver(forked)
    if driver is not None:
        _end_with(driver)


def _forked_from_driver(env: dict[str, str]) -> None:
    """In a worker forked from the driver (``LocalExecutor._prepare_fork``): what a server's worker
    has from its environment, set after the fact. The allocator's settings through ``mallopt`` (glibc
    read ``MALLOC_*`` when the driver started; M_TRIM_THRESHOLD -1, M_MMAP_THRESHOLD -3) and Arrow's
    pool through ``set_memory_pool``; a collection leaves the inherited objects alone (``gc.freeze``:
    their pages stay shared); streams of its own (the driver's progress display may have held the
    lock of its proxies when it forked). polars' and numba's thread counts were read at the driver's
    import: the worker keeps the driver's (docs/benchmarks.md, "Workers forked from the driver")."""
    gc.freeze()
    sys.stdout, sys.stderr = (open(fd, "w", closefd=False) for fd in (1, 2))  # noqa: SIM115
    os.environ.update(env)
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        for key, param in (("MALLOC_TRIM_THRESHOLD_", -1), ("MALLOC_MMAP_THRESHOLD_", -3)):
            if key in env and key in WORKER_ALLOCATOR and env[key] == WORKER_ALLOCATOR[key]:
                libc.mallopt(param, int(env[key]))
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass
    pool = env.get("ARROW_DEFAULT_MEMORY_POOL")
    if pool:
        import pyarrow as pa

        with contextlib.suppress(NotImplementedError, AttributeError):
            pa.set_memory_pool(getattr(pa, f"{pool}_memory_pool")())


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
        self.start_method = ""  # how the pool's workers started: "fork", "forkserver" or "spawn" (once started)
        self.why = ""  # why not "fork" (forked from this process), where they were not
        self._events_method = ""  # the start method the progress queue was made for

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
            asked = os.environ.get(POOL_ENV, "")
            unsafe = "" if asked in ("spawn", "forkserver") else \
                fork_unsafe() or ("" if "fork" in mp.get_all_start_methods() else "no fork here")
            if asked not in ("spawn", "forkserver") and not unsafe:
                ctx, self.why = self._prepare_fork(), ""
                self.start_method = "fork"
            else:
                ctx, self.why = (None, f"{POOL_ENV}=spawn") if asked == "spawn" else \
                    forkserver_context([*self._preload, "thresher.pipeline.executors.forkserver"],  # last: it settles
                                       {**env, **server_env(), SETUP_ENV: json.dumps(self._setup)})
                self.start_method = "spawn" if ctx is None else "forkserver"
                if asked != "forkserver" and ctx is not None:
                    self.why = f"not forked from this process: {unsafe}"
            with _environ(env):  # spawned workers start in it (forked ones have the server's, or set it: _init_worker)
                ctx = ctx or mp.get_context("spawn")
                # a queue only a process started with it can use: unused (and free) while no progress is asked
                # for; the pools started after ``end_workers`` the same way get the same one
                if self._events is None or self._events_method != self.start_method:
                    if self._events is not None:
                        self._events.close()
                    self._events, self._events_method = ctx.Queue(), self.start_method
                # (not the thread counts: polars and numba read theirs when this process imported them)
                forked = {k: env[k] for k in WORKER_ALLOCATOR} if self.start_method == "fork" else None
                self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker,
                                                 initargs=(self._events, os.getpid(), forked))
                # start the workers now, while the environment is set
                list(self._pool.map(_warm, range(self.workers)))
            if self.start_method == "forkserver":
                _forked_pools.add(self._pool)
        return self._pool

    def _prepare_fork(self):
        """The ``fork`` context, after this process has done what the fork server does before it forks
        (pipeline/executors/forkserver.py): import the engine and the recipe's op modules, settle the
        pandas probe, load the recipe's cached kernels (once per executor), collect garbage and trim the
        heap. The workers
        then share this process's pages (its imports, once in the tree) and start in milliseconds."""
        import importlib

        for module in self._preload:
            importlib.import_module(module)
        from thresher.pipeline.executors.forkserver import DONE, setup

        # again before each pool: it loads what the last pool's workers compiled into the cache (precompile)
        done = setup(self._setup)
        loaded = DONE.setdefault("kernels", {})
        for kernel, n in done["kernels"].items():
            loaded[kernel] = loaded.get(kernel, 0) + n
        DONE["no_pandas"] = done["no_pandas"]
        from thresher.pipeline.executors.passes import trim_heap

        gc.collect()
        trim_heap()  # free heap pages a worker's malloc would reuse, copying them, go back to the system first
        return mp.get_context("fork")

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
        """Pass k's resolve: the idle workers end first, then it runs in a child forked from the
        driver (``run_forked``), or in the driver where that is not safe or ``THRESHER_RESOLVE=driver``."""
        from thresher.pipeline.executors.passes import resolve_pass, trim_heap

        if os.environ.get(RESOLVE_ENV) == "driver":
            return resolve_pass(recipe, out, k, n_shards)
        restart = self.start_method == "fork" and self._pool is not None
        self.end_workers()
        trim_heap()  # the heap's free pages go back first: the child reusing them would copy them
        # the next pass's workers are forked while the resolve runs (they start with ~4 MB of their own)
        return run_forked(resolve_pass, (recipe, out, k, n_shards), f"the resolve of pass {k}",
                          meanwhile=self._get_pool if restart else None)

    def end_workers(self) -> None:
        """End the pool's workers, keeping the fork server: the next pass forks fresh ones, each
        starting with ~4 MB of its own memory (a worker that ran a pass holds 35-50 MB, docs/benchmarks.md).
        What they lose: the ops each built (``passes.ops_for``; an op's setup, models among them, runs
        at its first batch, in the pass that uses it) and the kernels loaded after the fork (from
        numba's cache again). A spawned pool is kept: its workers' imports would be paid again."""
        if self._pool is not None and self.start_method in ("fork", "forkserver"):
            self._pool.shutdown(wait=True)
            self._pool = None

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
                        raise _died("a worker process", context or "a pass") from None
                    raise exc
                on_done(f.result())


def _died(what: str, context: str) -> ThresherError:
    return ThresherError(f"{what} died in {context} (killed, often for memory). Lower executor.batch_size_mb or "
                         "executor.workers; the finished shards are kept, so `--resume` continues from there.")


def fork_unsafe() -> str:
    """Why this process cannot fork a child that runs polars now ('' where it can). A forked child
    has only the forking thread: a polars thread pool (threads ``polars-N``, started by the first query;
    the size is read at import) or its async runtime (``tokio-*``) would be there without its threads,
    and the first query would wait for them for ever; another Python thread may hold a lock the child
    needs. What else may run is safe across fork: jemalloc's background threads and OpenBLAS's pool
    (both re-initialised by their ``pthread_atfork`` handlers), polars' ``polars-ooc-cleaner`` (parked
    on a futex, holding no lock), and the progress display's refresh thread (rich's ``Live``: the
    locks it may hold are the display's and the driver's stdout and stderr, which the child does not
    use: it writes to streams of its own, ``run_forked``)."""
    if sys.platform != "linux" or not hasattr(os, "fork"):
        return "not Linux"
    others = [t for t in threading.enumerate() if t is not threading.current_thread()
              and (type(t).__module__, type(t).__name__) != ("rich.live", "_RefreshThread")]
    if others:
        return f"another Python thread runs ({others[0].name})"
    from pathlib import Path

    if not Path("/proc/self/task").is_dir():
        return "no /proc to look at the threads"
    names = []
    for p in Path("/proc/self/task").glob("*/comm"):
        with contextlib.suppress(OSError):  # a thread that ended since the listing
            names.append(p.read_text().strip())
    busy = [n for n in names if n.startswith("tokio") or (n.startswith("polars-") and n[7:].isdigit())]
    return f"polars' threads run ({', '.join(sorted(set(busy)))})" if busy else ""


class ChildTraceback(Exception):
    """The traceback of an exception raised in a forked child (its ``__cause__`` in the driver)."""

    def __str__(self) -> str:
        return "\n" + self.args[0]


def run_forked(fn: Callable[..., Any], args: tuple, context: str, meanwhile: Callable[[], Any] | None = None) -> Any:
    """``fn(*args)`` in a child forked from this process for it, where that is safe (``fork_unsafe``;
    else here): its result or exception comes back pickled through a pipe, and what it allocated goes
    back to the system when it exits. The child shares this process's pages copy-on-write and has its
    thread budget (polars reads ``POLARS_MAX_THREADS`` at import: this process's). It ends with this
    process (Linux ``PR_SET_PDEATHSIG``). A child killed (the OOM killer) is a ThresherError.
    ``meanwhile()`` runs here while the child runs (after it, where the child is not forked)."""
    if fork_unsafe():
        out = fn(*args)
        if meanwhile is not None:
            meanwhile()
        return out
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()
    r, w = os.pipe()
    with warnings.catch_warnings():  # Python 3.12+ warns of any other thread: those left are checked above
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: whatever happens, it ends here, through os._exit (no atexit, no inherited buffers)
        code = 1
        try:
            os.close(r)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: killed when the driver ends
            gc.freeze()  # a collection here leaves the driver's objects (and their pages) alone: not copied
            # streams of its own: the driver's (a progress display's proxies among them) may have been
            # locked by another of its threads when it forked
            sys.stdout, sys.stderr = (open(fd, "w", closefd=False) for fd in (1, 2))  # noqa: SIM115
            if os.getppid() == parent:
                try:
                    out = (True, fn(*args), "")
                except BaseException as e:  # noqa: BLE001 - every exception goes back to the driver
                    out = (False, e, traceback.format_exc())
                try:
                    data = pickle.dumps(out)
                    pickle.loads(data)  # an exception that does not unpickle goes back as text
                except Exception:  # noqa: BLE001
                    data = pickle.dumps((False, RuntimeError(f"{type(out[1]).__name__}: {out[1]}"), out[2]))
                with os.fdopen(w, "wb") as f:
                    f.write(data)
                code = 0
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os._exit(code)
    os.close(w)
    try:
        with os.fdopen(r, "rb") as f:
            if meanwhile is not None:
                meanwhile()
            data = f.read()
    finally:
        os.waitpid(pid, 0)
    if not data:
        raise _died("the process forked for it", context)
    ok, value, tb = pickle.loads(data)
    if ok:
        return value
    raise value from ChildTraceback(tb)


def _take_all(q) -> list:
    """What is waiting on a multiprocessing queue, without blocking."""
    out = []
    with contextlib.suppress(queue.Empty):
        while True:
            out.append(q.get_nowait())
    return out
