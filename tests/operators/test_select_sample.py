"""random_sample (issue 15, item 2): a seeded sample decided by a hash of each row's id, so the same
rows are kept for any workers, executor or split of the input; a fraction (Bernoulli, monotone in
the fraction), exactly n rows, or n per stratum."""

from __future__ import annotations

import json
import math
from collections import Counter

import pyarrow as pa
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import make_recipe, read_output, run_recipe, write_jsonl
from thresher.operators.common.hashing import unit_interval, xxh64
from thresher.operators.select.sample import largest_remainder
from thresher.pipeline.errors import RecipeError
from thresher.testing import check_op, run_op


def test_keeps_the_op_contract():
    check_op("random_sample")


@settings(max_examples=80)
@given(values=st.lists(st.text(max_size=80) | st.integers(-(2**62), 2**62).map(str), max_size=30),
       seed=st.integers(-(2**63), 2**64 - 1))
def test_xxh64_is_the_reference_xxhash(values, seed):
    """The numba kernel gives xxhash's XXH64 exactly, at every length (the 32-byte stripes, the 8-
    and 4-byte tails), so samples never change with the library that computes them."""
    values = [v.encode("utf-8", "surrogatepass").decode("utf-8", "replace") for v in values]
    assert xxh64(pa.array(values, pa.string()), seed).tolist() == [
        xxhash.xxh64_intdigest(v.encode(), seed & (2**64 - 1)) for v in values]


def test_integer_and_text_ids_hash_alike():
    assert xxh64(pa.array([7, 42]), 3).tolist() == xxh64(pa.array(["7", "42"]), 3).tolist()
    assert xxh64(pa.array(["a", None])).tolist()[1] == xxhash.xxh64_intdigest(b"")


def table(n, strata=("en", "de", "fr", None), skew=True):
    def stratum(i):
        return strata[0] if skew and i % 7 == 0 else strata[i % len(strata)]
    return pa.table({"id": [f"doc-{i}" for i in range(n)], "text": ["t"] * n,
                     "lang": pa.array([stratum(i) for i in range(n)], pa.string())})


def kept_ids(run):
    return {r["id"] for r in run.kept}


@settings(max_examples=40)
@given(n=st.integers(0, 300), f=st.floats(0, 1), g=st.floats(0, 1), seed=st.integers(0, 2**32))
def test_a_larger_fraction_keeps_a_superset(n, f, g, seed):
    lo, hi = min(f, g), max(f, g)
    t = table(n)
    small, large = run_op("random_sample", t, fraction=lo, seed=seed), run_op("random_sample", t, fraction=hi, seed=seed)
    assert kept_ids(small) <= kept_ids(large)
    assert all(why == "not_sampled" for _, why in small.dropped)
    keys = dict(zip(t["id"].to_pylist(), small.stats.get("sample_key", []), strict=True))
    assert kept_ids(small) == {i for i, u in keys.items() if u < lo}  # the documented rule, exactly


def test_the_share_kept_is_within_binomial_noise():
    n, f = 20000, 0.1
    for seed in range(3):
        k = len(run_op("random_sample", table(n), fraction=f, seed=seed).kept)
        assert abs(k - n * f) <= 4 * math.sqrt(n * f * (1 - f)), (seed, k)
    u = unit_interval(xxh64(pa.array([f"doc-{i}" for i in range(n)]), 5))
    deciles = Counter((u * 10).astype(int).tolist())
    assert all(abs(c - n / 10) <= 4 * math.sqrt(n * 0.09) for c in deciles.values())  # uniform


@settings(max_examples=40)
@given(n_rows=st.integers(0, 200), n=st.integers(0, 250), seed=st.integers(0, 1000))
def test_exactly_n_rows_the_first_n_of_the_same_order(n_rows, n, seed):
    t = table(n_rows)
    run = run_op("random_sample", t, n=n, seed=seed)
    assert len(run.kept) == min(n, n_rows)
    keys = dict(zip(t["id"].to_pylist(), run.stats.get("sample_key", []), strict=True))
    assert kept_ids(run) == set(sorted(keys, key=lambda i: (keys[i], i))[:n])
    assert run.ledger["random_sample.exact"]["dropped"] == ({"not_sampled": n_rows - n} if n < n_rows else {})
    fewer = run_op("random_sample", t, n=n // 2, seed=seed)
    assert kept_ids(fewer) <= kept_ids(run)


@settings(max_examples=40)
@given(n_rows=st.integers(1, 300), n=st.integers(0, 300), strata=st.integers(1, 6), skew=st.booleans())
def test_stratified_n_is_proportional_within_one_per_stratum(n_rows, n, strata, skew):
    t = table(n_rows, strata=tuple(f"s{j}" for j in range(strata - 1)) + (None,), skew=skew)
    run = run_op("random_sample", t, n=n, stratify_by="lang", seed=1)
    sizes = Counter(t["lang"].to_pylist())
    got = Counter(r["lang"] for r in run.kept)
    assert sum(got.values()) == min(n, n_rows)
    for s, size in sizes.items():
        assert abs(got[s] - min(n, n_rows) * size / n_rows) < 1, (s, got[s], size)
    assert run.ledger["random_sample.exact"]["counters"] == {"strata": len(sizes)}


def test_per_stratum_and_stratified_fraction():
    t = table(100)
    sizes = Counter(t["lang"].to_pylist())
    run = run_op("random_sample", t, per_stratum=20, stratify_by="lang")
    assert Counter(r["lang"] for r in run.kept) == {s: min(20, c) for s, c in sizes.items()}
    run = run_op("random_sample", t, fraction=0.3, stratify_by="lang")
    assert Counter(r["lang"] for r in run.kept) == {s: math.floor(0.3 * c + 0.5) for s, c in sizes.items()}
    bigger = run_op("random_sample", t, fraction=0.5, stratify_by="lang")
    assert kept_ids(run) <= kept_ids(bigger)


def test_largest_remainder():
    assert largest_remainder(10, [5, 3, 2]) == [5, 3, 2]
    assert largest_remainder(4, [5, 3, 2]) == [2, 1, 1]  # 2.0, 1.2, 0.8: the .8 gets the last row
    assert largest_remainder(3, [1, 1, 1, 1]) == [1, 1, 1, 0]  # ties to the earlier stratum
    assert largest_remainder(10**12, [10**12, 10**12, 1]) == [5 * 10**11, 5 * 10**11, 0]  # exact: no overflow


def test_a_key_keeps_or_drops_groups_whole_and_the_seed_changes_the_sample():
    rows = [{"id": i, "url": f"https://site/{i // 4}", "text": "t"} for i in range(400)]
    run = run_op("random_sample", rows, fraction=0.3, key="url", seed=9)
    pages = Counter(r["url"] for r in run.kept)
    assert set(pages.values()) == {4}
    other = run_op("random_sample", rows, fraction=0.3, key="url", seed=10)
    assert set(pages) != {r["url"] for r in other.kept}
    exact = run_op("random_sample", rows, n=10, key="url", seed=9)  # the boundary page is cut by id
    assert len(exact.kept) == 10


def test_params_are_checked(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "text": "x"}])
    for params, match in (({}, "exactly one of fraction, n and per_stratum"),
                          ({"fraction": 0.1, "n": 3}, "exactly one"),
                          ({"per_stratum": 3}, "per_stratum needs stratify_by"),
                          ({"fraction": 1.5}, "less than or equal to 1")):
        with pytest.raises(RecipeError, match=match):
            make_recipe([src], tmp_path / "out", [{"random_sample": params}])


def corpus(tmp_path, n=900):
    docs = [{"id": f"d{i:04d}", "text": f"doc {i}", "lang": ["en", "de", "en", "fr", "en"][i % 5]} for i in range(n)]
    return [write_jsonl(tmp_path / "in" / f"p{k}.jsonl", docs[k::4]) for k in range(4)], docs


# every mode in one recipe: a fraction, then an exact stratified n, then an exact n of what is left
SAMPLES = [{"random_sample": {"fraction": 0.6, "seed": 3}}, {"random_sample": {"n": 120, "stratify_by": "lang"}},
           {"random_sample": {"n": 50}}]


def test_the_same_rows_for_one_and_two_workers_and_any_split(tmp_path):
    paths, docs = corpus(tmp_path)
    runs = []
    for name, extra in (("w1", {"workers": 1}), ("w2", {"workers": 2}),
                        ("small_shards", {"workers": 1, "input": {"shard_size_mb": 0.002}})):
        run_recipe(paths, tmp_path / name, SAMPLES, **extra)
        runs.append(sorted(r["id"] for r in read_output(tmp_path / name)))
    assert runs[0] == runs[1] == runs[2] and len(runs[0]) == 50
    ledger = json.loads((tmp_path / "w1" / "ledger.json").read_text())["ops"]
    assert ledger["random_sample_2.exact"]["rows_out"] == 120
    assert ledger["random_sample_2.exact"]["counters"] == {"strata": 3}
    assert sum(sum(v["dropped"].values()) for v in ledger.values()) == len(docs) - 50
    assert all(set(v["dropped"]) <= {"not_sampled"} for v in ledger.values())


@pytest.mark.slow
def test_the_same_rows_on_ray(tmp_path, local_ray):
    paths, _ = corpus(tmp_path)
    process = [{"field_filter": {"condition": "lang <> 'fr'"}}, *SAMPLES]  # its compiled condition travels too
    run_recipe(paths, tmp_path / "local", process, workers=2)
    run_recipe(paths, tmp_path / "ray", process, executor={"type": "ray", "workers": 2})
    local = sorted(r["id"] for r in read_output(tmp_path / "local"))
    assert local == sorted(r["id"] for r in read_output(tmp_path / "ray")) and len(local) == 50
