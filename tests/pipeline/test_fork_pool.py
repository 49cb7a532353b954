"""The local pool's workers forked from the driver itself (pipeline/executors/local.py,
``LocalExecutor._prepare_fork``, ``_forked_from_driver``): the default where forking the driver is
safe, the fork server where it is not.

Each driver here is a fresh ``python -c`` process: forking is refused in a process where polars'
thread pool already runs (``fork_unsafe``), as it does in this test process after any in-process run.
What is checked: where the workers come from and what they inherit (the op modules, the kernels
loaded in the driver, the allocator settings, the thread counts), that nothing else is started,
the fallback to the fork server and why, that the output is that of one process and of the fork
server's workers, and that a killed worker still gives the clear error.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import run_recipe, sample_docs, write_jsonl

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="no fork of the driver, or no /proc, here")

ROOT = Path(__file__).resolve().parents[2]

VIEW = textwrap.dedent("""
    import json, os, sys, threading
    from thresher.pipeline.executors import forkserver, local
    from thresher.pipeline.executors.local import LocalExecutor
    from tests.conftest import make_recipe

    from tests.pipeline.test_fork_pool import worker_view as view

    first = sys.argv[1]
    if first == "polars":  # polars' thread pool started in the driver: forking it is not safe
        import polars as pl
        pl.DataFrame({"a": list(range(1000))}).lazy().group_by(pl.col("a") % 7).agg(pl.len()).collect()
    elif first == "thread":
        threading.Thread(target=threading.Event().wait, name="busy", daemon=True).start()
    recipe = make_recipe(["x.jsonl"], "out", [{"gopher_repetition_filter": {}}])
    from thresher.pipeline.precompile import recipe_kernels
    kernels = [k for k, _ in recipe_kernels(spec.op_class() for spec in recipe.ops)]
    import polars as pl
    import pyarrow as pa
    with LocalExecutor(2) as ex:
        ex.want(recipe)
        ex.precompile(recipe)  # a cold cache: the workers compile; then cached for the next pool
        ex.end_workers()
        seen = []
        ex.map(view, [(k,) for k in kernels * 2], seen.append)
        out = {"method": ex.start_method, "why": ex.why, "server": local.forkserver_pid(), "driver": os.getpid(),
               "driver_pool": pa.default_memory_pool().backend_name, "driver_polars": pl.thread_pool_size(),
               "seen": seen, "gopher_in_driver": "thresher.operators.filter.gopher" in sys.modules}
    print(json.dumps(out))
""")


def worker_view(kernel: str) -> dict:
    """What a pool's worker has (run in it by the VIEW driver)."""
    import gc
    import importlib

    import polars as pl
    import pyarrow as pa

    from thresher.pipeline.executors import forkserver, local

    module, _, name = kernel.partition(":")
    d = getattr(importlib.import_module(module), name)
    loaded = forkserver.DONE.get("kernels", {}).get(kernel, 0)
    return {"pid": os.getpid(), "ppid": os.getppid(), "pool": pa.default_memory_pool().backend_name,
            "env": {k: os.environ.get(k) for k in local.WORKER_ALLOCATOR}, "polars": pl.thread_pool_size(),
            "frozen": gc.get_freeze_count(), "loaded": loaded, "overloads": len(d.overloads),
            "misses": sum(d.stats.cache_misses.values()), "hits": sum(d.stats.cache_hits.values()) - loaded,
            "pandas": "pandas" in sys.modules}


def _view(first: str = "", **env) -> dict:
    res = subprocess.run([sys.executable, "-c", VIEW, first], capture_output=True, text=True, cwd=ROOT, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "THRESHER_POOL": "", **env})
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.splitlines()[-1])


def test_workers_are_forked_from_the_driver_and_inherit_its_imports_and_kernels():
    v = _view()
    assert v["method"] == "fork" and v["why"] == "" and v["server"] is None  # no fork server started
    assert {s["ppid"] for s in v["seen"]} == {v["driver"]} and len({s["pid"] for s in v["seen"]}) <= 2
    assert v["gopher_in_driver"]  # the op's module, imported once in the driver
    for s in v["seen"]:
        # the kernels: loaded in the driver from the cache the first pool filled, none loaded or compiled after
        assert s["loaded"] == s["overloads"] > 0 and s["misses"] == 0 and s["hits"] == 0
        assert s["frozen"] > 0  # the inherited objects in the permanent generation: a collection leaves their pages
        assert not s["pandas"]  # the probe settled in the driver
        # the allocator a server's worker has: Arrow's pool (the driver keeps its own) and glibc's settings
        expect = os.environ.get("ARROW_DEFAULT_MEMORY_POOL") or _jemalloc_or_system()
        assert s["pool"] == expect
        assert s["env"]["MALLOC_MMAP_THRESHOLD_"] == os.environ.get("MALLOC_MMAP_THRESHOLD_", str(4 << 20))
        assert s["polars"] == v["driver_polars"]  # read at the driver's import: documented, not changed
    assert v["driver_pool"] != "jemalloc" or expect == "jemalloc"


def _jemalloc_or_system() -> str:
    import pyarrow as pa

    try:
        pa.jemalloc_memory_pool()
    except NotImplementedError:
        return "system"
    return "jemalloc"


@pytest.mark.parametrize(("first", "why"), [("polars", "polars' threads run"), ("thread", "another Python thread runs (busy)")])
def test_the_fork_server_where_forking_the_driver_is_not_safe(first, why):
    v = _view(first)
    assert v["method"] == "forkserver" and why in v["why"]
    assert v["server"] is not None and {s["ppid"] for s in v["seen"]} == {v["server"]}


def test_asked_for_the_fork_server_it_is_used():
    v = _view(THRESHER_POOL="forkserver")
    assert v["method"] == "forkserver" and v["why"] == "" and {s["ppid"] for s in v["seen"]} == {v["server"]}


RUN = textwrap.dedent("""
    import json, os, signal, sys
    from thresher.pipeline.errors import ThresherError
    from thresher.pipeline.executors.local import LocalExecutor
    from thresher.pipeline.run import run
    from tests.conftest import make_recipe

    out, process, inputs = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3:]
    methods = []
    real = LocalExecutor._get_pool

    def recording(self):
        pool = real(self)
        methods.append(self.start_method)
        return pool

    LocalExecutor._get_pool = recording
    res = run(make_recipe(inputs, out, process, workers=2, input={"shard_size_mb": 0.05}))

    def die(i):
        if i == 1:
            os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer does
        return i

    try:
        with LocalExecutor(2) as ex:
            ex.map(die, [(0,), (1,), (2,)], lambda r: None, context="pass 3")
        killed = ""
    except ThresherError as e:
        killed = str(e)
    print(json.dumps({"rows": res.output_rows, "methods": methods, "killed": killed}))
""")


def _digest(out: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted((out / "data").iterdir())}


def test_workers_forked_from_the_driver_write_what_one_process_writes(tmp_path):
    """Heuristics with kernels, exact dedup and MinHash: the same bytes as one process and as the
    fork server's workers; a killed worker is still the clear error."""
    docs = sample_docs(900, seed=11)
    docs += [dict(d, id=f"dup-{d['id']}") for d in docs[:150]]
    inputs = [write_jsonl(tmp_path / "in" / f"{i}.jsonl", docs[i::3]) for i in range(3)]
    process = [{"gopher_repetition_filter": {}}, {"exact_dedup": {}},
               {"minhash_dedup": {"threshold": 0.8, "num_perm": 32, "bands": 4, "rows": 8}}]
    runs = {}
    for pool in ("", "forkserver"):
        out = tmp_path / f"out-{pool or 'fork'}"
        res = subprocess.run([sys.executable, "-c", RUN, str(out), json.dumps(process), *map(str, inputs)],
                             capture_output=True, text=True, cwd=ROOT, timeout=600,
                             env={**os.environ, "PYTHONPATH": str(ROOT), "THRESHER_POOL": pool})
        assert res.returncode == 0, res.stderr
        runs[pool] = json.loads(res.stdout.splitlines()[-1])
    assert set(runs[""]["methods"]) == {"fork"} and set(runs["forkserver"]["methods"]) == {"forkserver"}
    one = run_recipe(inputs, tmp_path / "one", process, workers=1, input={"shard_size_mb": 0.05})
    assert runs[""]["rows"] == runs["forkserver"]["rows"] == one.output_rows > 0
    assert _digest(tmp_path / "out-fork") == _digest(tmp_path / "out-forkserver") == _digest(tmp_path / "one")
    assert "a worker process died in pass 3" in runs[""]["killed"]


DROP = textwrap.dedent("""
    import json, os
    import numba, numpy as np
    from thresher.pipeline.executors.forkserver import drop_library_pages, load_cached
    from thresher.pipeline.kernel_index import KERNELS
    from thresher.pipeline.precompile import compile_kernel

    def llvm(writable):
        rss, cur = 0, False
        for line in open("/proc/self/smaps"):
            h = line.split()
            if len(h) >= 5 and "-" in h[0] and len(h[1]) == 4:
                cur = "libllvmlite" in line and (("w" in h[1]) == writable)
            elif cur and h[0] == "Rss:":
                rss += int(h[1]) * 1024
        return rss

    k = "thresher.operators.common.minhash:_signatures"
    """)


def test_llvm_code_pages_are_dropped_after_the_kernels_are_loaded(tmp_path):
    """The driver (or the fork server) loads the recipe's cached kernels, then drops the pages of
    LLVM's code it touched for that (``forkserver.drop_library_pages``); LLVM still works after."""
    script = DROP + textwrap.dedent("""
        import sys
        if sys.argv[1] == "fill":  # into numba's cache, in a process of its own (as a pool's worker does)
            compile_kernel(k, KERNELS[k][1])
            raise SystemExit(0)
        loaded = load_cached(k, KERNELS[k][1])
        before, data_before = llvm(False), llvm(True)
        dropped = drop_library_pages()
        after, data_after = llvm(False), llvm(True)
        @numba.njit
        def twice(x):
            return x.sum() * 2
        print(json.dumps({"loaded": loaded, "before": before, "dropped": dropped, "after": after,
                          "data": [data_before, data_after], "twice": int(twice(np.arange(10)))}))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    for arg in ("fill", "check"):
        res = subprocess.run([sys.executable, "-c", script, arg], capture_output=True, text=True, cwd=ROOT,
                             timeout=600, env=env)
        assert res.returncode == 0, res.stderr
    v = json.loads(res.stdout.splitlines()[-1])
    assert v["loaded"] >= 1 and v["before"] > 10 << 20  # loading touched LLVM's code
    assert v["dropped"] > 10 << 20 and v["after"] < v["before"] - (10 << 20)
    assert v["data"][0] == v["data"][1]  # the library's written (relocated, writable) pages are left alone
    assert v["twice"] == 90  # LLVM compiles again afterwards: its code comes back from the page cache
