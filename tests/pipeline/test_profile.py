"""The profile's sketch: mergeable (any split gives the same sketch), ~1% relative accuracy."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from thresher.pipeline.profile import GAMMA, Profile, Sketch

values = st.lists(st.one_of(st.floats(-1e6, 1e6, allow_nan=False), st.integers(-1000, 100_000), st.just(0.0)),
                  min_size=1, max_size=400)


@given(values=values, cut=st.integers(0, 400))
def test_a_sketch_of_parts_merges_into_the_sketch_of_the_whole(values, cut):
    whole = Sketch().add(np.array(values, dtype=float))
    a = Sketch().add(np.array(values[:cut], dtype=float))
    b = Sketch().add(np.array(values[cut:], dtype=float))
    merged = Sketch.from_dict(a.to_dict()).merge(Sketch.from_dict(b.to_dict()))  # through JSON, as markers go
    assert merged.pos == whole.pos and merged.neg == whole.neg and merged.zeros == whole.zeros
    assert merged.n == whole.n == len(values)
    assert merged.lo == min(values) and merged.hi == max(values)


@given(values=st.lists(st.floats(1e-6, 1e9, allow_nan=False), min_size=5, max_size=500),
       q=st.floats(0.0, 1.0))
def test_quantiles_are_within_the_bucket_accuracy(values, q):
    s = Sketch().add(np.array(values))
    got = s.quantile(q)
    exact = np.sort(values)[int(q * (len(values) - 1))]
    assert exact / GAMMA <= got * (1 + 1e-9) and got <= exact * GAMMA * (1 + 1e-9)


def test_nulls_and_booleans():
    s = Sketch().add(pa.array([1.0, None, float("nan"), 2.0]))
    assert s.n == 2 and s.nulls == 2
    b = Sketch().add(pa.array([True, False, True]))
    assert b.n == 3 and b.zeros == 1 and abs(b.mean - 2 / 3) < 1e-12


def test_histogram_counts_every_value_once():
    rng = np.random.default_rng(0)
    v = rng.lognormal(3, 1.5, 100_000)
    edges, counts, log = Sketch().add(v).histogram(bins=40)
    assert counts.sum() == len(v) and len(edges) == 41 and log  # positive over >2 decades: log scale


def test_profile_merges_across_shards_like_one():
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 500, 1000), rng.integers(0, 500, 700)
    one, p1, p2 = Profile(), Profile(), Profile()
    one.add_stats("op", {"x": pa.array(np.concatenate([a, b])), "lang": pa.array(["en"] * 1700)})
    p1.add_stats("op", {"x": pa.array(a), "lang": pa.array(["en"] * 1000)})
    p2.add_stats("op", {"x": pa.array(b), "lang": pa.array(["en"] * 700)})
    merged = Profile(p1.to_dict()).merge(p2.to_dict())
    assert merged.to_dict() == one.to_dict()
