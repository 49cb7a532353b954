"""The Ray Data shuffle primitives global ops resolve with: hash groups, co-groups (a partitioned
join) and distributed connected components, checked against single-process references."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from operators.dedup.clusters import components

pytest.importorskip("ray")


@pytest.fixture(scope="module")
def shuffle(local_ray):
    from pipeline.executors.ray_shuffle import RayShuffle, configure_data_context

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


def _ray_components(shuffle, s, d) -> pl.DataFrame:
    edges = _ds(pl.DataFrame({"s": np.asarray(s, np.int64), "d": np.asarray(d, np.int64)}))
    return shuffle.collect(shuffle.components(edges), {"gid": pl.Int64, "root": pl.Int64}).sort("gid")


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


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), min_size=1, max_size=120))
def test_components_equal_union_find(shuffle, edges):
    s, d = zip(*edges, strict=True)
    assert _ray_components(shuffle, s, d).equals(_reference(s, d))
