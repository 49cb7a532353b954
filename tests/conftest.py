"""Shared fixtures: an isolated cache, helpers to write inputs and run recipes for real."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import settings

from thresher.pipeline.recipe import parse_recipe
from thresher.pipeline.run import run

# no per-example deadline: these machines are noisy and numba compiles on first use
settings.register_profile("thresher", deadline=None)
settings.load_profile("thresher")


@pytest.fixture(scope="session")
def _session_cache(tmp_path_factory):
    """One model/LLM cache for the session, set in the environment before anything (a local Ray's
    workers included) starts, so every process of the test run finds the assets the driver fetched."""
    import os

    cache = str(tmp_path_factory.getbasetemp() / "thresher-cache")
    saved = os.environ.get("THRESHER_CACHE")
    os.environ["THRESHER_CACHE"] = cache
    yield cache
    if saved is None:
        os.environ.pop("THRESHER_CACHE", None)
    else:
        os.environ["THRESHER_CACHE"] = saved


@pytest.fixture(autouse=True)
def _isolated_cache(_session_cache, monkeypatch):
    monkeypatch.setenv("THRESHER_CACHE", _session_cache)


# for tests of quarantine itself, whose tiny inputs are mostly bad rows on purpose
ACCEPT_BAD_ROWS = {"max_quarantine_fraction": 1.0}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def read_output(out: Path) -> list[dict]:
    """All output rows in file order (JSONL or Parquet parts)."""
    import pyarrow.parquet as pq

    rows: list[dict] = []
    for f in sorted((out / "data").glob("part-*")):
        if f.suffix == ".parquet":
            rows += pq.read_table(f).to_pylist()
        else:
            import gzip

            import zstandard

            raw = f.read_bytes()
            if f.name.endswith(".gz"):
                raw = gzip.decompress(raw)
            elif f.name.endswith(".zst"):
                raw = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
            rows += [json.loads(x) for x in raw.decode("utf-8").splitlines() if x.strip()]
    return rows


def read_quarantine(out: Path) -> list[dict]:
    recs: list[dict] = []
    for f in sorted((out / "quarantine").glob("*.jsonl")) if (out / "quarantine").exists() else []:
        recs += [json.loads(x) for x in f.read_text(encoding="utf-8").splitlines()]
    return recs


def make_recipe(inputs, out, process=(), *, fmt="jsonl", workers=1, sets=None, **extra):
    body = {
        "input": {"paths": [str(p) for p in inputs], **extra.pop("input", {})},
        "output": {"path": str(out), "format": fmt, **extra.pop("output", {})},
        "executor": {"type": "local", "workers": workers, **extra.pop("executor", {})},
        "seed": 1,
        "process": list(process),
        **extra,
    }
    return parse_recipe(yaml.safe_dump(body), "test-recipe.yaml", sets)


def run_recipe(inputs, out, process=(), **kw):
    resume = kw.pop("resume", False)
    overwrite = kw.pop("overwrite", False)
    return run(make_recipe(inputs, out, process, **kw), resume=resume, overwrite=overwrite)


def sample_docs(n: int, seed: int = 0) -> list[dict]:
    """Documents of varied length (deterministic)."""
    import random

    rng = random.Random(seed)
    words = ["river", "town", "library", "bridge", "museum", "harbour", "garden", "festival", "winter", "summer", "letters", "canal", "mill"]
    docs = []
    for i in range(n):
        k = rng.randint(1, 80)
        docs.append({"id": f"d{i}", "text": " ".join(rng.choice(words) for _ in range(k)), "n": i})
    return docs


@pytest.fixture(scope="session")
def local_ray(_session_cache):
    """One local Ray (2 CPUs) for the whole test session (its workers inherit the session's cache)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()
