"""Shuffles in rounds sized to the object store (``ray_shuffle``): with a tiny round budget a
shuffle runs in several rounds, gives exactly what one round gives, and never has more than two
rounds' pieces in the store — checked on a real local Ray by the order in which the tasks ran (a
round's map tasks start only after the reducers of the round two before it have finished), and
by counting pieces. The whole MinHash resolve under a tiny budget gives the local executor's
output byte for byte. Fingerprint files are read by the tasks that use them, only the columns
asked for."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import run_recipe, sample_docs, write_jsonl
from tests.pipeline.test_ray_shuffle import _join

pytest.importorskip("ray")

P = 2  # partitions per round


def _files(tmp_path, n_files: int, rows: int, keys: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n_files):
        path = tmp_path / f"f{i}.parquet"
        pq.write_table(pl.DataFrame({"k": rng.integers(0, keys, rows), "v": np.arange(rows) + i * rows,
                                     "pad": rng.integers(0, 1 << 40, rows)}).to_arrow(), path)
        paths.append(str(path))
    return paths


def _log(path: str, what: str, df: pl.DataFrame) -> pl.DataFrame:
    """Appends one line per call (O_APPEND: lines from several processes stay whole)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{what}\n".encode())
    finally:
        os.close(fd)
    return df


def _sizes(log: str, df: pl.DataFrame) -> pl.DataFrame:
    return _log(log, "r", df.group_by("k").agg(pl.len().alias("n"), pl.col("v").sum().alias("s")))


def _reference(paths: list[str]) -> pl.DataFrame:
    df = pl.concat([pl.read_parquet(p) for p in paths])
    return df.group_by("k").agg(pl.len().cast(pl.UInt32).alias("n"), pl.col("v").sum().alias("s")).sort("k")


SCHEMA = {"k": pl.Int64, "n": pl.UInt32, "s": pl.Int64}


def test_a_group_in_rounds_holds_at_most_two_rounds_of_pieces(local_ray, tmp_path):
    from thresher.pipeline.executors.ray_shuffle import IN_FLIGHT_ROUNDS, RayShuffle

    paths = _files(tmp_path, 6, 2000, 500)
    shuffle = RayShuffle(P, round_bytes=40_000)
    log = str(tmp_path / "events.log")
    ds = shuffle.map(shuffle.read_parquet(paths, [0] * len(paths), "v"), functools.partial(_log, log, "m"))
    got = shuffle.collect(shuffle.group(ds, "k", functools.partial(_sizes, log)), SCHEMA).sort("k")

    assert got.equals(_reference(paths))
    rounds, blocks = shuffle.rounds[0], len(ds.refs)
    assert rounds >= 3, "the budget is a fraction of the input: several rounds"
    events = Path(log).read_text().split()
    assert events.count("m") == rounds * blocks  # each round reads every block again
    assert events.count("r") == rounds * P  # every partition of every round got rows (500 keys)
    maps = reduces = 0
    for e in events:
        if e == "r":
            reduces += 1
            continue
        maps += 1
        submitted = (maps - 1) // blocks  # at least this round had been submitted when this map ran
        # ... so every reducer of round `submitted - IN_FLIGHT_ROUNDS` had finished
        assert reduces >= (submitted - IN_FLIGHT_ROUNDS + 1) * P, (maps, reduces, events)
    assert shuffle.peak_pieces == IN_FLIGHT_ROUNDS * blocks * P


def test_one_round_without_a_budget_and_the_same_result(local_ray, tmp_path):
    from thresher.pipeline.executors.ray_shuffle import RayShuffle

    paths = _files(tmp_path, 4, 1000, 300, seed=3)
    log = str(tmp_path / "unused.log")
    outs = []
    for budget in (None, 10_000):
        shuffle = RayShuffle(P, round_bytes=budget)
        ds = shuffle.read_parquet(paths, [0] * len(paths), "v")
        outs.append(shuffle.collect(shuffle.group(ds, "k", functools.partial(_sizes, log)), SCHEMA).sort("k"))
        assert (shuffle.rounds[0] == 1) == (budget is None)
    assert outs[0].equals(outs[1]) and outs[0].equals(_reference(paths))


def test_a_co_group_of_blocks_in_the_store_runs_in_rounds(local_ray):
    """Blocks already in the object store (not files) are sized by what the store holds."""
    import ray

    from thresher.pipeline.executors.ray_shuffle import Blocks, RayShuffle

    rng = np.random.default_rng(5)
    left = pl.DataFrame({"k": rng.integers(0, 5000, 60_000), "a": np.arange(60_000)})
    right = pl.DataFrame({"k": np.arange(0, 5000, 3), "b": np.arange(0, 5000, 3) * 7})
    blocks = [Blocks([ray.put(part.to_arrow()) for part in df.iter_slices(20_000)]) for df in (left, right)]
    shuffle = RayShuffle(P, round_bytes=300_000)  # the inputs: ~1 MB and ~27 kB
    got = shuffle.collect(shuffle.co_group(*blocks, "k", "k", {"k": pl.Int64, "a": pl.Int64},
                                           {"k": pl.Int64, "b": pl.Int64}, _join),
                          {"k": pl.Int64, "a": pl.Int64, "b": pl.Int64})
    assert shuffle.rounds[0] >= 3
    assert got.sort("a").equals(left.join(right, on="k").sort("a")) and got.height > 0


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keys=st.integers(1, 400), budget=st.integers(2_000, 200_000), seed=st.integers(0, 100))
def test_rounds_never_change_which_rows_meet(local_ray, tmp_path_factory, keys, budget, seed):
    from thresher.pipeline.executors.ray_shuffle import RayShuffle

    tmp = tmp_path_factory.mktemp("r")
    paths = _files(tmp, 3, 700, keys, seed=seed)
    shuffle = RayShuffle(P, round_bytes=budget)
    got = shuffle.collect(shuffle.group(shuffle.read_parquet(paths, [0] * 3, "v"), "k",
                                        functools.partial(_sizes, str(tmp / "log"))), SCHEMA)
    assert got.sort("k").equals(_reference(paths))


def test_select_reads_only_the_columns_asked_for(local_ray, tmp_path):
    from thresher.pipeline.executors.ray_shuffle import RayShuffle

    paths = _files(tmp_path, 2, 100, 10)
    shuffle = RayShuffle(P, round_bytes=1 << 30)
    ds = shuffle.read_parquet(paths, [0, 100], "v")
    narrow = shuffle.select(ds, ["k", "v"])
    got = shuffle.collect(narrow, {"k": pl.Int64, "v": pl.Int64})
    assert got["v"].to_list() == list(range(100)) + [100 + i + 100 for i in range(100)]  # offsets added
    assert narrow.nbytes() < ds.nbytes()  # sized by the columns read
    assert set(shuffle.collect(shuffle.map(narrow, _columns), {"c": pl.Utf8})["c"]) == {"k,v"}


def _columns(df: pl.DataFrame) -> pl.DataFrame:
    return pl.DataFrame({"c": [",".join(df.columns)]})


@pytest.mark.slow
def test_minhash_in_tiny_rounds_gives_the_local_output(tmp_path, local_ray, monkeypatch):
    """The distributed MinHash resolve with a 20 kB round budget (many rounds in every shuffle)
    decides exactly what the local executor does."""
    from thresher.pipeline.executors import ray_shuffle

    made = []

    class Recorded(ray_shuffle.RayShuffle):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)

    monkeypatch.setattr(ray_shuffle, "RayShuffle", Recorded)
    monkeypatch.setenv(ray_shuffle.ROUND_ENV, str(20_000 / 1024 / 1024))
    docs = sample_docs(900, seed=9)
    docs += [dict(d, id=f"near-{d['id']}", text=d["text"] + " and that is all") for d in docs[:150]]
    paths = [write_jsonl(tmp_path / "in" / f"p{i}.jsonl", docs[i::3]) for i in range(3)]
    process = [{"whitespace_normalize": {}}, {"minhash_dedup": {"threshold": 0.8, "keep": "longest"}}]
    run_recipe(paths, tmp_path / "local", process, workers=2)
    run_recipe(paths, tmp_path / "ray", process, executor={"type": "ray", "workers": 2})

    def data(out):
        return b"".join(f.read_bytes() for f in sorted((out / "data").iterdir()))

    assert data(tmp_path / "local") == data(tmp_path / "ray") and data(tmp_path / "local")
    led = json.loads((tmp_path / "ray" / "ledger.json").read_text())
    assert led["ops"]["minhash_dedup"]["dropped"]
    assert made and max(max(s.rounds) for s in made) >= 3
