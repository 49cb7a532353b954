"""The Ray Data shuffle primitives global ops resolve with: hash groups, co-groups (a partitioned
join) and distributed connected components, checked against single-process references."""

from __future__ import annotations

import functools
import uuid

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thresher.operators.dedup.clusters import components

pytest.importorskip("ray")


@pytest.fixture(scope="module")
def shuffle(local_ray):
    from thresher.pipeline.executors.ray_shuffle import RayShuffle, configure_data_context

    configure_data_context()
    return RayShuffle(3)


def _ds(df: pl.DataFrame):
    import ray

    return ray.data.from_arrow(df.to_arrow()).repartition(4)


def _group_sizes(df: pl.DataFrame) -> pl.DataFrame:
    return df.group_by("k").agg(pl.len().alias("n"))


def test_group_sees_every_row_of_a_key_in_one_call(shuffle):
    keys = np.random.default_rng(1).integers(0, 50, 2000)
    out = shuffle.collect(shuffle.group(_ds(pl.DataFrame({"k": keys})), "k", _group_sizes), {"k": pl.Int64, "n": pl.UInt32})
    # a key split over two calls would appear twice
    assert out["k"].is_unique().all()
    want = pl.DataFrame({"k": keys}).group_by("k").agg(pl.len().alias("n"))
    assert out.sort("k").equals(want.sort("k"))


def _join(left: pl.DataFrame, right: pl.DataFrame) -> pl.DataFrame:
    return left.join(right, on="k", how="inner")


def test_co_group_is_a_join(shuffle):
    rng = np.random.default_rng(2)
    left = pl.DataFrame({"k": rng.integers(0, 300, 500), "a": np.arange(500)})
    right = pl.DataFrame({"k": np.arange(0, 300, 2), "b": np.arange(0, 300, 2) * 10})
    got = shuffle.collect(shuffle.co_group(_ds(left), _ds(right), "k", "k", {"k": pl.Int64, "a": pl.Int64},
                                           {"k": pl.Int64, "b": pl.Int64}, _join),
                          {"k": pl.Int64, "a": pl.Int64, "b": pl.Int64})
    want = left.join(right, on="k")
    assert got.sort("a").equals(want.sort("a")) and got.height > 0


def _ray_components(shuffle, s, d, local=None) -> pl.DataFrame:
    edges = _ds(pl.DataFrame({"s": np.asarray(s, np.int64), "d": np.asarray(d, np.int64)}))
    return shuffle.collect(shuffle.components(edges, local), {"gid": pl.Int64, "root": pl.Int64}).sort("gid")


def _reference(s, d) -> pl.DataFrame:
    s, d = np.asarray(s, np.int64), np.asarray(d, np.int64)
    keep = s != d
    return components(s[keep], d[keep]).sort("gid")


def test_components_of_a_long_chain_in_random_order(shuffle):
    """A path is the slowest case for label propagation (diameter n); large/small-star needs few rounds."""
    perm = np.random.default_rng(3).permutation(300) * 7 + 5
    got = _ray_components(shuffle, perm[:-1], perm[1:])
    assert got.equals(_reference(perm[:-1], perm[1:]))
    assert got["root"].n_unique() == 1 and got["root"][0] == perm.min()


def _logged_union_find(log_dir, src, dst) -> pl.DataFrame:
    """The local finisher, leaving a file that says how many edges it was given (it runs in a worker)."""
    (log_dir / f"call-{uuid.uuid4().hex}").write_text(str(len(src)))
    return components(src, dst)


def _finisher_calls(log_dir) -> list[int]:
    calls = [int(f.read_text()) for f in log_dir.glob("call-*")]
    for f in log_dir.glob("call-*"):
        f.unlink()
    return calls


@pytest.mark.slow
def test_small_graphs_finish_in_one_task_with_the_same_components(shuffle, tmp_path):
    from thresher.pipeline.executors.ray_shuffle import RayShuffle

    rng = np.random.default_rng(4)
    s, d = rng.integers(0, 400, 300) * 3, rng.integers(0, 400, 300) * 3
    want = _reference(s, d)
    local = functools.partial(_logged_union_find, tmp_path)
    n_pairs = pl.DataFrame({"a": np.minimum(s, d), "b": np.maximum(s, d)}).filter(pl.col("a") != pl.col("b")).unique().height

    assert _ray_components(shuffle, s, d, local).equals(want)  # under the threshold: contracted blocks, one finish
    calls = _finisher_calls(tmp_path)
    assert len(calls) == 4 + 1 and sum(sorted(calls)[:-1]) <= int((s != d).sum())  # 4 blocks (see _ds), 1 finish
    rounds_first = RayShuffle(3, local_edges=n_pairs // 3)  # star rounds until few enough edges are left
    assert _ray_components(rounds_first, s, d, local).equals(want)
    calls = _finisher_calls(tmp_path)
    assert 4 <= len(calls) <= 5 and (len(calls) == 4 or min(calls) <= n_pairs // 3)
    never = RayShuffle(3, local_edges=-1)
    assert _ray_components(never, s, d, local).equals(want) and len(_finisher_calls(tmp_path)) == 4  # contraction only
    assert _ray_components(shuffle, [5], [5], local).height == 0  # only a self-loop: no edge, no component


@pytest.mark.slow
def test_blocks_are_contracted_in_parallel_before_the_one_task_finish(shuffle, tmp_path):
    """20 clusters of 8 rows, every pair an edge (as small LSH buckets give): each block's union-find
    leaves 7 star edges per cluster, so the one serial task sees 140 edges instead of 560."""
    import ray

    pairs = [(c * 100 + i, c * 100 + j) for c in range(20) for i in range(8) for j in range(i + 1, 8)]
    s, d = (np.array(x, np.int64) for x in zip(*pairs, strict=True))
    edges = ray.data.from_arrow(pl.DataFrame({"s": s, "d": d}).to_arrow()).repartition(1)
    got = shuffle.collect(shuffle.components(edges, functools.partial(_logged_union_find, tmp_path)),
                          {"gid": pl.Int64, "root": pl.Int64}).sort("gid")
    assert got.equals(_reference(s, d)) and got["root"].n_unique() == 20
    assert sorted(_finisher_calls(tmp_path)) == [140, 560]


def _split_contract_reference(s, d, parts):
    """Contract every part of an edge split on its own (as the Ray blocks are), then union-find the rest."""
    from thresher.pipeline.executors.ray_shuffle import _contract

    frame = pl.DataFrame({"s": np.asarray(s, np.int64), "d": np.asarray(d, np.int64)})
    contracted = pl.concat([_contract(components, frame.filter(pl.Series(parts) == p)) for p in sorted(set(parts))])
    return components(contracted["a"].to_numpy(), contracted["b"].to_numpy()).sort("gid")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60), st.integers(0, 4)), min_size=1, max_size=150))
def test_contracting_any_split_of_the_edges_keeps_components_and_roots(edges):
    """The property the parallel contraction relies on, on random graphs and random splits."""
    s, d, parts = zip(*edges, strict=True)
    assert _split_contract_reference(s, d, list(parts)).equals(_reference(s, d))


@pytest.mark.slow
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), min_size=1, max_size=120))
def test_components_equal_union_find(shuffle, edges):
    s, d = zip(*edges, strict=True)
    assert _ray_components(shuffle, s, d).equals(_reference(s, d))


def test_partitions_without_rows_and_empty_sides(local_ray):
    """More partitions than keys (most partitions get no rows: no call for them, nothing collected),
    a co-group whose right side has no rows at all, and chained maps fused into the next task."""
    from thresher.pipeline.executors.ray_shuffle import Blocks, RayShuffle

    sh = RayShuffle(8)
    df = pl.DataFrame({"k": [1, 1, 2, 1], "v": [1, 2, 3, 4]})
    blocks = Blocks([local_ray.put(df.slice(0, 2).to_arrow()), local_ray.put(df.slice(2, 2).to_arrow())])
    doubled = sh.map(sh.map(blocks, lambda d: d.with_columns(pl.col("v") * 2)), lambda d: d.filter(pl.col("v") > 2))
    got = sh.collect(sh.group(doubled, "k", lambda d: d.group_by("k").agg(pl.col("v").sum())), {"k": pl.Int64, "v": pl.Int64})
    assert got.sort("k").to_dicts() == [{"k": 1, "v": 12}, {"k": 2, "v": 6}]
    assert sh.count(doubled) == 3 and sh.count(sh.group(doubled, "k", lambda d: d.head(0))) == 0
    empty = sh.map(blocks, lambda d: d.head(0))
    joined = sh.co_group(blocks, empty, "k", "k", {"k": pl.Int64, "v": pl.Int64}, {"k": pl.Int64, "w": pl.Int64},
                         lambda a, b: a.join(b, on="k", how="left"))
    out = sh.collect(joined, {"k": pl.Int64, "v": pl.Int64, "w": pl.Int64}).sort("v")
    assert out["v"].to_list() == [1, 2, 3, 4] and out["w"].null_count() == 4
