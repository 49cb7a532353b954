"""The local executor's pool: workers forked from one clean fork server that imported the recipe's
modules (pipeline/executors/local.py, pipeline/executors/forkserver.py). What is checked: where the
workers come from, that the server forks with no other thread running that could hold a lock,
that the environment the workers need holds in them, that the output is that of one process,
that an op whose module the server did not import still runs, that a killed worker still gives
the clear error, when and why the pool spawns instead, and that nothing is left running."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import signal
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from tests.conftest import make_recipe, read_output, run_recipe, sample_docs, write_jsonl
from thresher.pipeline.errors import ThresherError
from thresher.pipeline.executors import local
from thresher.pipeline.executors.local import LocalExecutor, worker_allocator_env
from thresher.pipeline.ops import Mapper
from thresher.pipeline.registry import _REGISTRY, register

pytestmark = pytest.mark.skipif("forkserver" not in mp.get_all_start_methods() or sys.platform != "linux",
                                reason="no fork server here, or no /proc to look at its threads")


@pytest.fixture(autouse=True)
def _server_pool(monkeypatch):
    """These tests are about the fork server: a pool's workers are forked from the driver itself
    where that is safe (tests/pipeline/test_fork_pool.py), from the server where asked or not safe."""
    monkeypatch.setenv("THRESHER_POOL", "forkserver")


def _threads(pid: int) -> list[str]:
    return sorted(open(f"/proc/{pid}/task/{t}/comm").read().strip() for t in os.listdir(f"/proc/{pid}/task"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _worker_view(_: int) -> dict:
    import polars as pl

    from thresher.pipeline.executors import forkserver

    return {"pid": os.getpid(), "ppid": os.getppid(), "env": dict(os.environ), "polars_threads": pl.thread_pool_size(),
            "pandas": "pandas" in sys.modules, "done": forkserver.DONE,
            "modules": sorted(m for m in sys.modules if m.startswith("thresher.operators."))}


def _recipe(process):
    return make_recipe(["x.jsonl"], "out", process)


@pytest.mark.parametrize(("op", "module"), [("exact_dedup", "thresher.operators.dedup.exact"),
                                           ("gopher_repetition_filter", "thresher.operators.filter.gopher")])
def test_workers_are_forked_from_a_server_started_without_thread_pools(op, module):
    """(gopher: numba, and its kernels loaded in the server)"""
    with LocalExecutor(2) as ex:
        ex.want(_recipe([{op: {}}]))
        seen = []
        ex.map(_worker_view, [(i,) for i in range(4)], seen.append)
        server = local.forkserver_pid()
        assert ex.start_method == "forkserver" and ex.why == ""
        assert server is not None and server != os.getpid()
        assert {s["ppid"] for s in seen} == {server}  # forked by the server, not by this process
        # No thread pool started before the forks (polars' "polars-N", jemalloc's background threads,
        # OpenBLAS): only the main thread and the one thread polars' import starts, parked on a futex.
        # (a thread started by a C library, OpenBLAS's say, bears the main thread's name: the
        # executable's, "python" or "python3")
        main = Path(f"/proc/{server}/comm").read_text().strip()
        assert set(_threads(server)) <= {main, "polars-ooc-clea"}
        assert _threads(server).count(main) == 1
        # what the server imported, the workers have without importing it
        assert all(module in s["modules"] for s in seen)
    assert local.forkserver_pid() is None and not _alive(server)  # stopped and waited for with the pool


def test_environment_holds_in_the_workers(monkeypatch):
    """The allocator settings, the thread budget, the driver's own environment and the pandas
    probe hold in forked workers as in spawned ones; a changed environment reaches the next pool."""
    for k in local.WORKER_ALLOCATOR:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("THRESHER_TEST_MARK", "first")
    threads = str(max(1, local.default_workers() // 2))
    with LocalExecutor(2) as ex:
        ex.want(_recipe([{"exact_dedup": {}}]))
        seen = []
        ex.map(_worker_view, [(0,), (1,)], seen.append)
    for s in seen:
        env = s["env"]
        assert env["ARROW_DEFAULT_MEMORY_POOL"] == worker_allocator_env()["ARROW_DEFAULT_MEMORY_POOL"]
        assert all(env[k] == v for k, v in local.WORKER_ALLOCATOR.items() if k != "ARROW_DEFAULT_MEMORY_POOL")
        assert env["POLARS_MAX_THREADS"] == threads == str(s["polars_threads"])
        assert env["THRESHER_TEST_MARK"] == "first"
        assert env["JE_ARROW_MALLOC_CONF"].endswith("background_thread:false")
        assert local.SETUP_ENV not in env
        assert not s["pandas"] and s["done"]["no_pandas"]  # settled once, in the server
    monkeypatch.setenv("THRESHER_TEST_MARK", "second")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "3145728")  # the user's value wins
    with LocalExecutor(2) as ex:
        seen = []
        ex.map(_worker_view, [(0,), (1,)], seen.append)
    assert all(s["env"]["THRESHER_TEST_MARK"] == "second" and s["env"]["MALLOC_MMAP_THRESHOLD_"] == "3145728"
               for s in seen)


def _digest(out) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted((out / "data").iterdir())}


def test_forked_workers_write_what_one_process_writes(tmp_path, monkeypatch):
    """Exact dedup, heuristics with numba kernels and MinHash: the same bytes from forked workers,
    spawned workers and one process (workers forked from the driver: tests/pipeline/test_fork_pool.py)."""
    docs = sample_docs(1200, seed=5)
    docs += [dict(d, id=f"dup-{d['id']}") for d in docs[:200]]
    paths = [write_jsonl(tmp_path / "in" / f"{i}.jsonl", docs[i::3]) for i in range(3)]
    process = [{"gopher_repetition_filter": {}}, {"exact_dedup": {}},
               {"minhash_dedup": {"threshold": 0.8, "num_perm": 32, "bands": 4, "rows": 8}}]
    methods = []
    real = LocalExecutor._get_pool

    def recording(self):
        pool = real(self)
        methods.append(self.start_method)
        return pool

    monkeypatch.setattr(LocalExecutor, "_get_pool", recording)
    kw = dict(input={"shard_size_mb": 0.05})
    one = run_recipe(paths, tmp_path / "w1", process, workers=1, **kw)
    forked = run_recipe(paths, tmp_path / "w2", process, workers=2, **kw)
    assert set(methods) == {"forkserver"}
    monkeypatch.setenv("THRESHER_POOL", "spawn")
    spawned = run_recipe(paths, tmp_path / "w2s", process, workers=2, **kw)
    assert methods[-1] == "spawn"
    assert one.output_rows == forked.output_rows == spawned.output_rows > 0
    assert _digest(tmp_path / "w1") == _digest(tmp_path / "w2") == _digest(tmp_path / "w2s")
    assert len(_digest(tmp_path / "w1")) >= 1 and local.forkserver_pid() is None


class ShoutOutsideThresher(Mapper):
    """Upper-cases the text: an op whose module (this test file) the fork server does not import."""

    name = "test_shout_outside_thresher"

    def process(self, batch: pa.Table) -> pa.Table:
        import pyarrow.compute as pc

        return batch.set_column(batch.column_names.index(self.text_key), self.text_key,
                                pc.utf8_upper(batch[self.text_key]))


@pytest.fixture
def outside_op():
    register(ShoutOutsideThresher)
    yield ShoutOutsideThresher.name
    _REGISTRY.pop(ShoutOutsideThresher.name)


def test_an_op_the_server_did_not_import_runs_in_the_workers(tmp_path, outside_op):
    docs = [{"id": str(i), "text": f"row {i} of the test"} for i in range(300)]
    paths = [write_jsonl(tmp_path / f"{i}.jsonl", docs[i::2]) for i in range(2)]
    recipe = make_recipe(paths, tmp_path / "o", [{outside_op: {}}, {"exact_dedup": {}}], workers=2)
    with LocalExecutor(2) as ex:
        ex.want(recipe)
        assert __name__ not in ex._preload and "thresher.operators.dedup.exact" in ex._preload
        seen = []
        ex.map(_worker_view, [(0,), (1,)], seen.append)
    # not every op is built in: pyarrow's pandas probe is left alone (a plugin may hand it pandas)
    assert all(not s["done"]["no_pandas"] for s in seen)
    res = run_recipe(paths, tmp_path / "o", [{outside_op: {}}, {"exact_dedup": {}}], workers=2)
    assert res.output_rows == 300
    assert sorted(r["text"] for r in read_output(tmp_path / "o")) == sorted(d["text"].upper() for d in docs)


def _die(i: int) -> int:
    if i == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer does
    return i


def test_a_killed_worker_gives_the_clear_error():
    with LocalExecutor(2) as ex, pytest.raises(ThresherError, match="a worker process died in pass 3"):
        ex.want(_recipe([{"exact_dedup": {}}]))
        ex.map(_die, [(0,), (1,), (2,)], lambda r: None, context="pass 3")
    assert ex.start_method == "forkserver" and local.forkserver_pid() is None


def test_spawns_where_there_is_no_usable_fork_server(monkeypatch):
    monkeypatch.setenv("THRESHER_POOL", "spawn")
    with LocalExecutor(2) as ex:
        seen = []
        ex.map(_worker_view, [(0,), (1,)], seen.append)
    assert ex.start_method == "spawn" and "THRESHER_POOL" in ex.why
    assert {s["ppid"] for s in seen} == {os.getpid()}
    monkeypatch.delenv("THRESHER_POOL")
    monkeypatch.setattr(local.mp, "get_all_start_methods", lambda: ["spawn"])
    with LocalExecutor(2) as ex:
        ex.map(_worker_view, [(0,), (1,)], lambda r: None)
    assert ex.start_method == "spawn" and "no fork server" in ex.why


def test_a_second_open_pool_with_other_modules_spawns_and_both_run():
    """One fork server per process: while a pool forked from it is open, a pool that needs other
    modules cannot restart it (the open pool's workers report their exit through it)."""
    with LocalExecutor(2) as a:
        a.want(_recipe([{"exact_dedup": {}}]))
        first = []
        a.map(_worker_view, [(0,), (1,)], first.append)
        with LocalExecutor(2) as b:
            b.want(_recipe([{"gopher_repetition_filter": {}}]))
            second = []
            b.map(_worker_view, [(0,), (1,)], second.append)
        assert b.start_method == "spawn" and "still open" in b.why
        assert local.forkserver_pid() is not None  # the first pool's server is still there
        again = []
        a.map(_worker_view, [(0,), (1,)], again.append)
    assert a.start_method == "forkserver" and {s["ppid"] for s in first + again} == {first[0]["ppid"]}
    assert local.forkserver_pid() is None


def test_the_server_loads_cached_kernels_for_the_workers(tmp_path):
    """A recipe's numba kernels that numba's cache holds are loaded once, in the server: the
    workers inherit them and compile or load none themselves."""
    recipe = _recipe([{"minhash_dedup": {"num_perm": 32, "bands": 4, "rows": 8}}])
    from thresher.pipeline.precompile import recipe_kernels

    kernels = recipe_kernels(spec.op_class() for spec in recipe.ops)
    assert kernels
    for _ in range(2):  # the first may compile them (a cold cache): the second finds them cached
        with LocalExecutor(2) as ex:
            ex.want(recipe)
            ex.precompile(recipe)
            seen = []
            ex.map(_kernel_view, [(k, sigs) for k, sigs in kernels], seen.append)
    assert all(s["loaded_in_server"] == len(s["overloads"]) > 0 and s["misses"] == 0 and s["hits"] == 0
               for s in seen)


def _kernel_view(kernel: str, sigs) -> dict:
    import importlib

    from thresher.pipeline.executors import forkserver

    module, _, name = kernel.partition(":")
    d = getattr(importlib.import_module(module), name)
    # hits/misses counted since the fork: the server's own load is in its counters, copied at fork
    return {"loaded_in_server": forkserver.DONE["kernels"].get(kernel, 0), "overloads": list(d.overloads),
            "misses": sum(d.stats.cache_misses.values()), "hits": sum(d.stats.cache_hits.values()) - forkserver.DONE["kernels"].get(kernel, 0)}
