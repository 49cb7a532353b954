"""Cold start (issue 19 item 6): where numba caches compiled kernels, and what the command line
imports before it needs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from thresher.pipeline import kernel_cache


def _python(code: str, env: dict[str, str], cwd: Path) -> str:
    res = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    return {**env, "THRESHER_CACHE": str(tmp_path / "cache"), **extra}


def test_unwritable_kernel_sources_send_the_cache_to_thresher_cache(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file, so nothing can be made under it (not even by root)")
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("THRESHER_CACHE", str(tmp_path / "cache"))
    folder = kernel_cache.configure(operators_dir=blocker / "operators")
    assert folder == str(tmp_path / "cache" / "numba")
    assert os.environ["NUMBA_CACHE_DIR"] == folder


def test_writable_sources_and_a_users_numba_cache_dir_are_left_alone(tmp_path, monkeypatch):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    assert kernel_cache.configure(operators_dir=tmp_path / "operators") is None
    assert "NUMBA_CACHE_DIR" not in os.environ
    assert (tmp_path / "operators" / "common" / "__pycache__").is_dir()
    assert not list((tmp_path / "operators" / "common" / "__pycache__").iterdir())  # the probe is gone
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    assert kernel_cache.configure(operators_dir=tmp_path / "file" / "operators") is None
    assert os.environ["NUMBA_CACHE_DIR"] == str(tmp_path / "mine")


def test_a_read_only_install_caches_kernels_under_thresher_cache_and_runs(tmp_path):
    """A process whose package folder refuses writes (simulated at the probe: this machine's tests
    run as root) picks $THRESHER_CACHE/numba when thresher is imported, compiles there, and a second
    process loads the kernel from there instead of compiling it again."""
    code = """
import os, json
real_open = os.open
def read_only(path, *a, **k):
    if ".thresher-probe-" in str(path):
        raise OSError(30, "Read-only file system", str(path))
    return real_open(path, *a, **k)
os.open = read_only
import thresher  # chooses the cache folder
import pyarrow as pa
from thresher.operators.common.tokenize import _word_count_kernel, whitespace_word_counts

counts = whitespace_word_counts(pa.array(["one two  three", "", "x"]))
print(json.dumps({"dir": os.environ.get("NUMBA_CACHE_DIR"), "counts": counts.tolist(),
                  "hits": sum(_word_count_kernel.stats.cache_hits.values())}))
"""
    env = _env(tmp_path)
    first = json.loads(_python(code, env, tmp_path))
    assert first["dir"] == str(tmp_path / "cache" / "numba")
    assert first["counts"] == [3, 0, 1]
    cached = list((tmp_path / "cache" / "numba").rglob("*tokenize*word_count_kernel*.nbi"))
    assert cached, sorted(p.name for p in (tmp_path / "cache").rglob("*"))
    second = json.loads(_python(code, env, tmp_path))
    assert second["counts"] == [3, 0, 1]
    assert second["hits"] == 1  # loaded from the cache, not compiled
    assert first["hits"] == 0


def test_importing_the_command_line_leaves_heavy_modules_unloaded(tmp_path):
    heavy = ["ray", "matplotlib", "numba", "polars", "pandas", "pyarrow", "torch", "scipy"]
    out = _python(f"import sys, thresher.pipeline.cli; print([m for m in {heavy!r} if m in sys.modules])",
                  _env(tmp_path), tmp_path)
    assert out.strip() == "[]"


def test_the_quickstart_run_imports_no_ray_or_plotting(tmp_path):
    code = ("import sys\nfrom thresher.pipeline.cli import main\n"
            f"rc = main(['run', 'quickstart', '--output', {str(tmp_path / 'out')!r}, '-q'])\n"
            "print(rc, sorted(m for m in ('ray', 'matplotlib', 'torch', 'sklearn', 'transformers') if m in sys.modules))")
    env = {**os.environ}  # the session's cache: its demo corpus and numba's in-tree kernels
    assert _python(code, env, tmp_path).strip().splitlines()[-1] == "0 []"


# ------------------------------------------------------------------ the lazy registry (op_index)


def test_op_index_is_the_registry_written_out():
    """op_index.py is what `python -m thresher.pipeline.registry --write-index` writes from the
    registry built by importing every op module: an op added, renamed or moved needs it regenerated."""
    from thresher.pipeline import registry

    path = Path(registry.__file__).with_name("op_index.py")
    assert registry.index_source() == path.read_text(encoding="utf-8"), \
        "run `python -m thresher.pipeline.registry --write-index`"


def test_validating_a_recipe_imports_only_its_ops(tmp_path):
    code = """
import json, sys
from thresher.pipeline.recipe import parse_recipe
from thresher.pipeline.registry import op_names
r = parse_recipe(json.dumps({"input": {"paths": ["x.jsonl"]}, "output": {"path": "out"},
                             "process": [{"exact_dedup": {}}, {"fix_mojibake": {}}]}))
print(json.dumps({"ops": [s.name for s in r.ops], "classes": [s.op_cls.__name__ for s in r.ops],
                  "modules": sorted(m for m in sys.modules if m.startswith("thresher.operators.") and "common" not in m),
                  "heavy": [m for m in ("numba", "scipy", "pandas", "sklearn") if m in sys.modules],
                  "names": len(op_names())}))
"""
    got = json.loads(_python(code, _env(tmp_path), tmp_path))
    assert got["ops"] == ["exact_dedup", "mojibake_fix"]  # a former name resolved without importing the rest
    assert got["modules"] == ["thresher.operators.clean", "thresher.operators.clean.mojibake",
                              "thresher.operators.dedup", "thresher.operators.dedup.exact"]
    assert got["heavy"] == []
    assert got["names"] > 70  # every op is still known by name


def test_a_plugin_cannot_take_the_name_of_a_builtin_that_is_not_imported(tmp_path):
    code = """
import sys
from thresher.api import Mapper
from thresher.pipeline.registry import register

class Mine(Mapper):
    '''Mine.'''
    name = "minhash_dedup"
try:
    register(Mine)
except TypeError as e:
    print(e, "thresher.operators.dedup.minhash" in sys.modules)
"""
    assert _python(code, _env(tmp_path), tmp_path).strip() == (
        "op name 'minhash_dedup' is taken by thresher.operators.dedup.minhash.MinHashDedup False")


def test_an_unknown_op_still_suggests_the_closest_name(tmp_path):
    from thresher.pipeline.errors import RecipeError
    from thresher.pipeline.registry import get_op

    with pytest.raises(RecipeError, match="Did you mean 'minhash_dedup'"):
        get_op("minhash_dedupe")


# ---------------------------------------------------------------- compiling kernels once (precompile)


def _rows(n: int, seed: int) -> list[dict]:
    words = ["alpha", "beta", "gamma", "delta", "the", "of", "and", "river", "stone", "light"]
    return [{"id": f"{seed}-{i}", "text": " ".join(words[(i * 7 + j * seed) % 10] for j in range(30 + i % 50)) + "."}
            for i in range(n)]


def test_a_cold_run_compiles_each_kernel_once_and_a_warm_run_none(tmp_path):
    """Two workers, three shards, an empty kernel cache: each kernel the recipe's ops call is saved to
    numba's cache once (one worker compiled it; the other loaded it), and a second run saves none.
    Before precompile both workers compiled (and saved) every kernel; `THRESHER_PRECOMPILE=0` still does.
    (The shipped kernels are turned off: this is the compiling path, as where they do not match.)"""
    from tests.conftest import write_jsonl

    for k in range(3):
        write_jsonl(tmp_path / "in" / f"part{k}.jsonl", _rows(60, k + 1))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({
        "input": {"paths": [str(tmp_path / "in")]}, "output": {"path": str(tmp_path / "out")},
        "executor": {"type": "local", "workers": 2},
        "process": [{"text_length_filter": {"min_words": 5}}, {"word_repetition_filter": {}}]}))
    def saves(cache: str, **extra: str) -> dict[str, int]:
        """How many times each of the two ops' kernels was saved to numba's cache in one run."""
        env = _env(tmp_path, NUMBA_CACHE_DIR=str(tmp_path / cache), NUMBA_DEBUG_CACHE="1",
                   THRESHER_SHIPPED_KERNELS="0", **extra)  # compiled here, not loaded from the bundle
        res = subprocess.run([sys.executable, "-m", "thresher", "run", str(recipe), "-q", "--overwrite"], env=env,
                             cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        files = [Path(line.split("data saved to ")[1].strip("'")).name for line in res.stdout.splitlines()
                 if "data saved to" in line]
        return {k: sum(f.startswith(k + "-") for f in files) for k in ("tokenize._word_count_kernel", "repetition._word_kernel")}

    assert saves("numba") == {"tokenize._word_count_kernel": 1, "repetition._word_kernel": 1}
    assert saves("numba") == {"tokenize._word_count_kernel": 0, "repetition._word_kernel": 0}  # warm
    # without it each worker compiles what it calls: the same run saves them twice
    assert saves("numba-off", THRESHER_PRECOMPILE="0") == {"tokenize._word_count_kernel": 2, "repetition._word_kernel": 2}


def test_the_kernel_table_covers_what_the_ops_call(tmp_path):
    """After compiling what kernel_index lists for these ops (in one process, empty cache), running
    the ops on real text (another process) compiles nothing: the table names every kernel they call
    from Python, with the signatures they call it with. Fails when a kernel or its arguments change
    without `python -m thresher.pipeline.precompile --write`."""
    ops = ["text_length_filter", "gopher_repetition_filter", "c4_line_filter", "word_repetition_filter"]
    env = _env(tmp_path, NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    first = f"""
from thresher.pipeline.precompile import compile_kernel, recipe_kernels
from thresher.pipeline.registry import get_op
todo = recipe_kernels(get_op(n) for n in {ops!r})
print(sum(compile_kernel(k, s)[1] for k, s in todo), len(todo))
"""
    compiled, kernels = map(int, _python(first, env, tmp_path).split())
    assert compiled >= kernels >= 3
    second = f"""
import warnings
import pyarrow as pa
from thresher.api import apply_op
from thresher.pipeline.precompile import _dispatchers, _sample_rows
from thresher.pipeline.registry import get_op
table = pa.Table.from_pylist(_sample_rows())
warnings.simplefilter("ignore")
for n in {ops!r}:
    apply_op(n, table, params=get_op(n).example)
print(sorted(f"{{d.py_func.__qualname__}}" for d in _dispatchers() if sum(d.stats.cache_misses.values())))
"""
    assert _python(second, env, tmp_path).strip() == "[]"


# ------------------------------------------------------- kernels shipped compiled (shipped_kernels)

_SHIPPED_OPS = {"word_repetition_filter": "thresher.operators.common.repetition:_word_kernel",
                "line_length_filter": "thresher.operators.filter.lines:_splitlines_kernel",
                "text_length_filter": "thresher.operators.common.tokenize:_word_count_kernel"}


def test_the_shipped_kernels_are_current():
    """shipped_kernels.zip holds every kernel of kernel_index, with its signatures, compiled from
    the sources as they are: fails when a kernel, or a source it depends on, changes without
    `python -m thresher.pipeline.shipped_kernels --write`."""
    from thresher.pipeline import shipped_kernels

    assert shipped_kernels.stale() == [], "run `python -m thresher.pipeline.shipped_kernels --write`"
    man = shipped_kernels.manifest()
    assert man["cpu"] == "generic"
    assert set(man) >= {"numba", "python", "triple", "kernels"}
    assert not set(man["kernels"]) & shipped_kernels.HOST_TUNED  # compiled here: generic code is slower


def test_kernel_dependencies_follow_imports_within_the_operators():
    from thresher.pipeline.shipped_kernels import dependencies

    names = [p.relative_to(p.parents[1]).as_posix() for p in dependencies("thresher.operators.common.repetition")]
    assert names == ["common/ngrams.py", "common/repetition.py", "common/special_chars.py", "common/tokenize.py",
                     "common/utf8.py"]  # tokenize imports utf8
    assert [p.name for p in dependencies("thresher.operators.filter.fasttext_infer")] == ["fasttext_infer.py"]


def _clone(tmp_path: Path) -> Path:
    """The sources copied to a new place, as a fresh clone is: other paths, new file times, no
    __pycache__ (so no kernel cache)."""
    import shutil

    root = Path(__file__).resolve().parents[2]
    clone = tmp_path / "clone"
    for part in ("thresher", "pipeline", "operators", "recipes", "capacity", "cluster"):
        shutil.copytree(root / part, clone / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(root / "pyproject.toml", clone / "pyproject.toml")
    return clone


_SEED_AND_RUN = f"""
import json, warnings
import pyarrow as pa
import thresher
from thresher.api import apply_op
from thresher.pipeline.precompile import _dispatchers, _sample_rows
from thresher.pipeline.registry import get_op
from thresher.pipeline.shipped_kernels import seed

ops = {_SHIPPED_OPS!r}
seeded = seed(ops.values())
table = pa.Table.from_pylist(_sample_rows())
warnings.simplefilter("ignore")
rows = {{n: apply_op(n, table, params=get_op(n).example).num_rows for n in ops}}
stats = {{f"{{d.py_func.__module__}}:{{d.py_func.__qualname__}}": [sum(d.stats.cache_hits.values()), sum(d.stats.cache_misses.values())]
         for d in _dispatchers()}}
print(json.dumps({{"file": thresher.__file__, "seeded": seeded, "rows": rows, "stats": {{k: stats.get(k) for k in ops.values()}},
                   "compiled": sorted(k for k, (_, m) in stats.items() if m)}}))
"""


def _seed_and_run(clone: Path, tmp_path: Path, **extra: str) -> dict:
    env = {**_env(tmp_path), "PYTHONPATH": str(clone), **extra}  # the clone's thresher, numba's in-tree cache
    got = json.loads(_python(_SEED_AND_RUN, env, tmp_path).strip().splitlines()[-1])
    assert got["file"] == str(clone / "thresher" / "__init__.py")
    return got


def _shipped_usable() -> bool:
    from thresher.pipeline import shipped_kernels

    man = shipped_kernels.manifest()
    return man is not None and shipped_kernels.host_tag() == {k: man[k] for k in ("numba", "python", "triple")}


@pytest.mark.skipif(not _shipped_usable(), reason="the bundle was built for another numba, Python or platform")
def test_a_fresh_clone_loads_the_shipped_kernels_and_compiles_nothing(tmp_path):
    """A copy of the sources at a new path (new mtimes, no cache): each kernel the ops call is put
    into numba's in-tree cache from the bundle and loaded from it; nothing is compiled. Then an
    edit to a source one kernel depends on through an import (ngrams.py's probe step, compiled
    into repetition's kernel: numba's own stamp, repetition.py's hash, does not see it) keeps that
    kernel from being seeded, in a second fresh clone: it is compiled, never loaded stale."""
    clone = _clone(tmp_path / "a")
    got = _seed_and_run(clone, tmp_path)
    assert got["seeded"] == {k: 1 for k in _SHIPPED_OPS.values()}
    assert got["stats"] == {k: [1, 0] for k in _SHIPPED_OPS.values()}  # loaded from the cache, not compiled
    assert got["compiled"] == []
    assert list((clone / "operators" / "common" / "__pycache__").glob("repetition._word_kernel-*.nbi"))
    again = _seed_and_run(clone, tmp_path)  # a second run: numba's cache, nothing seeded again
    assert again["seeded"] == {} and again["compiled"] == [] and again["rows"] == got["rows"]

    edited = _clone(tmp_path / "b")
    ngrams = edited / "operators" / "common" / "ngrams.py"
    src = ngrams.read_text(encoding="utf-8")
    assert src.count("s = (s + 1) & mask") == 1
    ngrams.write_text(src.replace("s = (s + 1) & mask", "s = (s + 3) & mask"), encoding="utf-8")  # same line numbers
    got = _seed_and_run(edited, tmp_path)
    word_kernel = _SHIPPED_OPS["word_repetition_filter"]
    assert got["seeded"] == {k: 1 for k in _SHIPPED_OPS.values() if k != word_kernel}
    assert got["stats"][word_kernel] == [0, 1]  # compiled from the edited sources
    assert word_kernel in got["compiled"]
    assert got["rows"] == again["rows"]


@pytest.mark.skipif(not _shipped_usable(), reason="the bundle was built for another numba, Python or platform")
def test_shipped_kernels_are_not_used_for_another_numba_version_or_when_turned_off(tmp_path):
    from thresher.pipeline import shipped_kernels

    clone = _clone(tmp_path)
    got = _seed_and_run(clone, tmp_path, THRESHER_SHIPPED_KERNELS="0")
    assert got["seeded"] == {} and set(_SHIPPED_OPS.values()) <= set(got["compiled"])
    # a bundle whose manifest names another numba: nothing seeded (numba would refuse its index too)
    import zipfile

    with zipfile.ZipFile(shipped_kernels.BUNDLE) as z:
        files = {i.filename: z.read(i) for i in z.infolist()}
    man = json.loads(files["manifest.json"])
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as z:
        for name, data in files.items():
            z.writestr(name, json.dumps({**man, "numba": "0.0.1"}) if name == "manifest.json" else data)
    assert shipped_kernels.seed(_SHIPPED_OPS.values(), bundle=other) == {}


@pytest.mark.skipif(not _shipped_usable(), reason="the bundle was built for another numba, Python or platform")
def test_a_first_run_through_the_command_line_loads_instead_of_compiling(tmp_path):
    """`thresher run` with an empty NUMBA_CACHE_DIR: the local executor seeds the recipe's kernels,
    so numba saves only those entries (one each), none of the helpers a compile would also save
    (ngrams._slot...); with THRESHER_SHIPPED_KERNELS=0 it compiles them."""
    from tests.conftest import write_jsonl

    write_jsonl(tmp_path / "in" / "part0.jsonl", _rows(60, 1))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({
        "input": {"paths": [str(tmp_path / "in")]}, "output": {"path": str(tmp_path / "out")},
        "process": [{"text_length_filter": {"min_words": 5}}, {"word_repetition_filter": {}}]}))

    def saved(cache: str, **extra: str) -> list[str]:
        env = _env(tmp_path, NUMBA_CACHE_DIR=str(tmp_path / cache), NUMBA_DEBUG_CACHE="1", **extra)
        res = subprocess.run([sys.executable, "-m", "thresher", "run", str(recipe), "-q", "--overwrite"], env=env,
                             cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        return sorted(Path(line.split("data saved to ")[1].strip("'")).name.split("-")[0]
                      for line in res.stdout.splitlines() if "data saved to" in line)

    assert saved("numba") == ["repetition._word_kernel", "tokenize._word_count_kernel"]
    assert saved("numba") == []  # warm
    compiled = saved("numba-off", THRESHER_SHIPPED_KERNELS="0")
    assert {"repetition._word_kernel", "tokenize._word_count_kernel", "ngrams._slot"} <= set(compiled)
