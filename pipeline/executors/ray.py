"""The Ray executor: each pass is one Ray task (or model-actor call) per shard, each global op's
resolve a set of shuffles on Ray tasks (see ``ray_data`` and ``ray_shuffle``).

``ray.init()`` starts a local Ray when no cluster is given; ``executor.address`` or
``RAY_ADDRESS`` connects to an existing one. Ray retries the task of a worker that dies; every
block's outputs are written atomically under names fixed by the block, so a retry rewrites the same
files and cannot duplicate or lose rows. Done markers are written by the driver after a pass, so a
driver that dies mid-pass leaves that pass to be redone by ``--resume``. With an object-store
output the tasks write to the bucket themselves — parts, rows between passes, and a done marker
after them — so the nodes share no filesystem (``io/objectstore``).

A local Ray started here is this run's alone, started without Ray's autoscaler monitor, API server
and log monitor (``_lean_head``): ``__exit__`` shuts it down, and a watchdog process
(``ray_watchdog``) tears it down completely when the driver dies without getting there (SIGKILL,
OOM killer) — Ray itself stops its head processes then, but leaves the raylet's agents and workers.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from thresher.pipeline import fs
from thresher.pipeline.errors import ThresherError


class RayExecutor:
    name = "ray"

    def __init__(self, workers: int = 0, address: str | None = None):
        self.workers = workers
        self.address = address or os.environ.get("RAY_ADDRESS")
        self._started = False
        self._local = False  # a local Ray started by this executor
        self._watchdog: subprocess.Popen | None = None
        self._events = None  # the progress queue (an actor), made for the first pass that reports

    def __enter__(self) -> RayExecutor:
        try:
            import ray
        except ImportError as e:  # pragma: no cover - ray is a core dependency
            raise ThresherError("executor 'ray' needs ray: pip install 'ray[data]'") from e
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False}
            if self.address:
                kwargs["address"] = self.address
            else:  # a local Ray for this run only: no dashboard, a modest object store (blocks stream through it),
                # and none of the head processes a one-node run never uses (``_lean_head``)
                kwargs.update(include_dashboard=False, object_store_memory=512 * 1024 * 1024)
                if self.workers:
                    kwargs["num_cpus"] = self.workers
            # Ray sets OMP_NUM_THREADS to a task's CPUs; polars would start a thread per core in every
            # worker. A local Ray's workers inherit the driver's environment: one polars thread per
            # worker, as the local executor's processes have, and the same allocator settings
            # (``local.WORKER_ALLOCATOR``: freed block memory goes back to the system; on a cluster
            # the nodes' own settings hold).
            env = {} if self.address else {"POLARS_MAX_THREADS": "1", **_worker_env()}
            saved = {k: os.environ.get(k) for k in env}
            os.environ.update({k: v for k, v in env.items() if saved[k] is None})
            try:
                with _lean_head(not self.address):
                    ray.init(**kwargs)
            except Exception as e:
                from thresher.cluster.auth import connect_error, is_auth_error

                if self.address and (isinstance(e, ConnectionError) or is_auth_error(e)):
                    # a token-protected cluster says only "Failed to connect": name what to set
                    raise ThresherError(connect_error(self.address, e)) from None
                raise
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
            self._started = True
            if not self.address:
                self._local = True
                self._watchdog = _start_watchdog()
        return self

    def __exit__(self, *exc) -> None:
        if self._events is not None:
            self._events.close()
            self._events = None
        try:
            if self._started:
                import ray

                ray.shutdown()
                self._started = False
        finally:  # after the shutdown, so the watchdog finds nothing left to stop (or stops what is)
            if self._watchdog is not None:
                _stop_watchdog(self._watchdog)
                self._watchdog = None

    @property
    def parallelism(self) -> int:
        import ray

        return self.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))

    def run_pass(self, recipe, out: str, k: int, shards: list, on_shard_done: Callable[[int], None],
                 context: str = "", events: Callable[[tuple], None] | None = None) -> None:
        """``events``: where progress events go; the tasks put them on a small actor that a driver
        thread empties into it (see ``progress``)."""
        from thresher.pipeline.executors.ray_data import RayEvents, run_pass

        if not shards:
            return
        actors = self.model_actors(recipe)
        if events is None:
            with _errors(context):
                run_pass(recipe, out, k, shards, self.parallelism, on_shard_done, model_actors=actors)
            return
        from thresher.pipeline.progress import Channel, Drain

        if self._events is None:
            self._events = RayEvents()
        channel = Channel(self._events, getattr(recipe, "attempt_id", ""))
        with _errors(context), Drain(self._events.take, events):  # (the blocks' records come with their summaries)
            run_pass(recipe, out, k, shards, self.parallelism, on_shard_done, channel=channel, events=events,
                     model_actors=actors)

    def model_actors(self, recipe) -> bool:
        """Whether ops that load a model run in an actor pool: ``executor.model_actors`` where the
        recipe says so or Ray is a cluster's; on a local Ray this run started, tasks unless the recipe
        asks for actors. There the same worker processes then run every pass and shuffle, each
        loading a model once, where actors are extra processes that load the stack again and leave,
        so the next shuffle waits for fresh workers (fineweb, 20k docs, 2 cores: ~3.6 CPU-s;
        docs/benchmarks.md, "Ray overhead and scaling model")."""
        spec = recipe.executor
        if "model_actors" in getattr(spec, "model_fields_set", ()) or not self._local:
            return spec.model_actors
        return False

    def resolve(self, recipe, out: str, k: int, n_shards: int) -> dict:
        """The pass's global op on Ray Data shuffles (in the driver if the op has no distributed form)."""
        from thresher.pipeline.columns import ROW
        from thresher.pipeline.executors.passes import ops_for, piece_offsets, resolve_pass, write_decisions
        from thresher.pipeline.executors.ray_shuffle import RayShuffle, round_budget
        from thresher.pipeline.layout import Layout

        layout = Layout(out)
        _, stages = ops_for(recipe)
        barrier = stages[k].barrier
        t0 = time.perf_counter()
        shuffle = RayShuffle(self.parallelism, round_bytes=round_budget())  # rounds sized to the object store
        pieces = piece_offsets(layout, k, n_shards)
        direct = fs.direct_output(recipe)  # the fingerprints are in the bucket (objectstore)
        if direct:
            from thresher.pipeline.executors.ray_shuffle import configure_data_context
            from thresher.pipeline.io.objectstore import pull_fingerprints, read_fingerprints

            configure_data_context()  # the bucket's files are read by a Ray Data pipeline

            fps = read_fingerprints(direct, layout, k, pieces, ROW, recipe.storage, 4 * shuffle.partitions)
        else:
            fps = shuffle.read_parquet([str(layout.fingerprints(k, s, p)) for s, p, _ in pieces],
                                       [o for _, _, o in pieces], ROW)
        barrier.ensure_setup()
        with _errors(f"pass {k} (resolve {barrier.ctx.key})"):
            decided = barrier.resolve_distributed(fps, shuffle)
        if decided is None:
            if direct:
                pull_fingerprints(direct, layout, k, pieces)
            return resolve_pass(recipe, out, k, n_shards)
        return write_decisions(layout, k, barrier, decided, barrier.take_counters(), time.perf_counter() - t0)


LEAN_ENV = "THRESHER_RAY_LEAN"  # "0": a local Ray with every process Ray starts (benchmarks compare)
# The head processes a local Ray started for one run does without (``ray._private.node.Node``'s methods).
SKIPPED = ("start_monitor", "start_api_server", "start_log_monitor")


@contextlib.contextmanager
def _lean_head(local: bool) -> Iterator[bool]:
    """While ``ray.init()`` starts a local Ray: a head node without the three head processes a
    one-node run that nobody watches never uses. Yields whether it is lean.

    - the autoscaler ``monitor.py`` (~51 MB PSS): a local Ray has one node and nothing to scale;
    - the API server ``dashboard.py`` (~77 MB): with ``include_dashboard=False`` it loads only the
      usage-stats module, and ``ray.init`` turns usage stats off; ``ray.init`` waits for it to publish
      its address (~2-3 s of the start on 2 cores, while it imports);
    - the log monitor ``log_monitor.py`` (~47 MB): it only forwards the workers' output to the
      driver, which ``log_to_driver=False`` turns off; the workers still write it to the session's
      ``logs/worker-*.out|err`` themselves, and errors still reach the driver as exceptions.

    ``ray.init`` has no argument for any of them (``ray start`` has ``--no-monitor`` and
    ``--include-log-monitor``, which map to the same ``RayParams``; the API server is started
    whatever the flags), so for the call it builds its node from a subclass of
    ``ray._private.node.Node`` whose methods that start these three do nothing: Ray's own code path
    where the API server could not start (``webui_url`` stays None) and where a node is started with
    ``no_monitor`` and without ``include_log_monitor``. The raylet's two agents stay: the raylet
    refuses to start without their commands ("Dashboard agent command must be non empty", Ray 2.60).
    Nothing changes for a cluster (``executor.address``), or where Ray's private node API is not
    the one expected (a plain ``ray.init``), or with ``THRESHER_RAY_LEAN=0``. Measured on 2 cores:
    ~175 MB PSS, ~3 s of ``ray.init`` and ~1 s of ``ray.shutdown`` less (docs/benchmarks.md, "Ray
    overhead and scaling model", round three)."""
    try:
        import ray._private.node as ray_node

        base = ray_node.Node
        usable = all(callable(getattr(base, m, None)) for m in SKIPPED)
    except (ImportError, AttributeError):  # pragma: no cover - another Ray
        usable = False
    if not (local and usable) or os.environ.get(LEAN_ENV, "1") == "0":
        yield False
        return

    class LeanNode(base):
        def start_monitor(self):
            pass

        def start_api_server(self, *, include_dashboard=None, raise_on_failure=False):
            self._webui_url = None

        def start_log_monitor(self):
            pass

    ray_node.Node = LeanNode  # looked up by ``ray.init`` when it starts the node
    try:
        yield True
    finally:
        ray_node.Node = base


def _worker_env() -> dict[str, str]:
    from thresher.pipeline.executors.local import worker_allocator_env

    return worker_allocator_env()


def _start_watchdog() -> subprocess.Popen | None:
    """Start ``ray_watchdog`` for the local Ray this process has just started (see its docstring:
    without it a SIGKILLed driver leaves Ray's agents and workers running, ~220 MB and more).

    The roots it gets are the processes Ray reports it started for this node, kept only if they are
    our own children — so a Ray this process merely connected to is never watched. Its output goes to
    the session's log directory, not to the driver's stdout/stderr: a caller reading those pipes would
    otherwise wait for the watchdog too. ``None`` if Ray's (private) node API is not there."""
    import psutil
    import ray

    try:
        node = ray._private.worker.global_worker.node
        session_dir = node.get_session_dir_path()
        pids = {info.process.pid for infos in node.all_processes.values() for info in infos}
    except Exception:  # a private API: without it the run goes on as before, unwatched
        return None
    roots = sorted(pids & {c.pid for c in psutil.Process().children()})
    if not roots:
        return None
    try:
        with open(os.path.join(session_dir, "logs", "thresher_watchdog.log"), "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "thresher.pipeline.executors.ray_watchdog", str(os.getpid()), session_dir,
                 *map(str, roots)], stdin=subprocess.PIPE, stdout=log, stderr=log, start_new_session=True)
    except OSError as e:  # the run itself can go on; only a killed driver would leave processes behind
        warnings.warn(f"cannot start the Ray watchdog ({e}): if this run is killed, stop its Ray by hand",
                      RuntimeWarning, stacklevel=2)
        return None


def _stop_watchdog(proc: subprocess.Popen) -> None:
    """After ``ray.shutdown()``: tell the watchdog to stop what is left of the session (normally
    nothing) and wait for it, so no stray process outlives the run. If it takes too long it is
    left to finish alone (it is in its own session and only ever stops the session's processes)."""
    from thresher.pipeline.executors.ray_watchdog import GRACE_S

    with contextlib.suppress(OSError):  # a watchdog that is gone already
        proc.stdin.write(b"stop\n")
        proc.stdin.close()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=2 * GRACE_S + 10)


@contextlib.contextmanager
def _errors(context: str) -> Iterator[None]:
    """Ray's wrapped failures -> the op's own error, or one message about memory and its knobs."""
    from ray.exceptions import OutOfMemoryError, RayError, WorkerCrashedError

    try:
        yield
    except RayError as e:
        chain = list(_causes(e))
        if any(isinstance(c, (OutOfMemoryError, WorkerCrashedError, MemoryError)) for c in chain):
            raise ThresherError(oom_message(context, type(next(c for c in chain if isinstance(
                c, (OutOfMemoryError, WorkerCrashedError, MemoryError)))).__name__)) from None
        own = [c for c in chain if not isinstance(c, RayError) and type(c).__module__.split(".")[0] != "ray"]
        if own:
            raise own[0] from None
        raise


def _causes(e: BaseException) -> Iterator[BaseException]:
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = getattr(e, "cause", None) or e.__cause__ or e.__context__


def oom_message(context: str, what: str) -> str:
    return (f"a Ray worker ran out of memory ({what}) in {context or 'a pass'}. Lower executor.batch_size_mb "
            "(bytes of input per block), run fewer tasks or model actors per node (executor.workers), or give the "
            "workers more memory; ops that load a model need their model's memory in every actor.")
