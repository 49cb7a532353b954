"""Cold start (issue 19 item 6): where numba caches compiled kernels, and what the command line
imports before it needs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
