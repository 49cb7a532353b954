"""LSH buckets -> candidate edges (``minhash.bucket_edges``, a sort over (band, key, gid)) against
a reference written from the definition: in every bucket of two or more rows, a star from its
earliest row, plus (with verification) every pair in buckets of at most ALL_PAIRS_MAX rows."""

from __future__ import annotations

import shutil
from collections import defaultdict
from itertools import combinations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import read_output, run_recipe, write_jsonl
from thresher.operators.dedup import minhash
from thresher.operators.dedup.minhash import ALL_PAIRS_MAX, bucket_edges


def reference(gids, bands, keys, all_pairs: bool) -> set[tuple[int, int]]:
    buckets = defaultdict(list)
    for g, b, k in zip(gids, bands, keys, strict=True):
        buckets[(b, k)].append(g)
    edges = set()
    for members in buckets.values():
        members = sorted(members)
        edges |= {(members[0], m) for m in members[1:]}
        if all_pairs and len(members) <= ALL_PAIRS_MAX:
            edges |= set(combinations(members, 2))
    return edges


@settings(max_examples=80, deadline=None)
@given(n=st.integers(0, 300), bands=st.integers(1, 4), keys=st.integers(1, 60), all_pairs=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_bucket_edges_match_the_definition(n, bands, keys, all_pairs, seed):
    rng = np.random.default_rng(seed)
    gids = rng.permutation(n * 3)[:n].astype(np.int64) - 40  # negative gids: rows of a saved index
    band = rng.integers(0, bands, n).astype(np.int32)
    key = (rng.integers(0, keys, n).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))  # the whole uint64 range
    df = pl.DataFrame({"gid": gids, "band": band, "key": key})
    out = bucket_edges(df, all_pairs)
    assert out.schema == pl.Schema({"s": pl.Int64, "d": pl.Int64})
    got = list(zip(out["s"].to_list(), out["d"].to_list(), strict=True))
    assert len(got) == len(set(got))
    assert set(got) == reference(gids.tolist(), band.tolist(), key.tolist(), all_pairs)


@pytest.mark.parametrize("with_index", [False, True])
def test_spilled_partitions_decide_as_one_band_at_a_time(tmp_path, monkeypatch, with_index):
    """Below ROWS_PER_PARTITION the band keys stay in memory, one band at a time; above it they
    are spilled to hash partitions. Both find the same candidate edges, so the same output."""
    from tests.operators.test_minhash import planted_corpus

    docs = planted_corpus(100, seed=9)
    proc = {"threshold": 0.7}
    if with_index:
        run_recipe([write_jsonl(tmp_path / "old.jsonl", docs[:120])], tmp_path / "o0",
                   [{"minhash_dedup": {**proc, "index_path": str(tmp_path / "index")}}], workers=1)
        (tmp_path / "index").rename(tmp_path / "index-a")
        shutil.copytree(tmp_path / "index-a", tmp_path / "index-b")
    src = write_jsonl(tmp_path / "d.jsonl", docs[120:] if with_index else docs)
    outs = []
    for name, rows in (("a", minhash.ROWS_PER_PARTITION), ("b", 50)):
        monkeypatch.setattr(minhash, "ROWS_PER_PARTITION", rows)
        extra = {"index_path": str(tmp_path / f"index-{name}")} if with_index else {}
        run_recipe([src], tmp_path / name, [{"minhash_dedup": {**proc, **extra}}], workers=1)
        outs.append(read_output(tmp_path / name))
    assert outs[0] == outs[1] and len(outs[0]) < len(docs[120:] if with_index else docs)
