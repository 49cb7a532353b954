"""MinHash-LSH: parameters, signatures, accuracy against brute-force Jaccard and against
datasketch's MinHashLSH (both measured here), keep policies, mark mode, incremental index."""

from __future__ import annotations

import json
import random

import numpy as np
import pyarrow as pa
import pytest
from datasketch import MinHash, MinHashLSH
from datasketch.lsh import _optimal_param
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import read_output, run_recipe, write_jsonl
from thresher.operators.common.minhash import (
    jaccard_sorted,
    optimal_params,
    permutations,
    shingle_sets,
    signatures,
)


@pytest.mark.parametrize("threshold,num_perm", [(0.5, 128), (0.7, 112), (0.8, 128), (0.9, 256), (0.6, 64)])
def test_optimal_params_match_datasketch(threshold, num_perm):
    assert optimal_params(threshold, num_perm) == _optimal_param(threshold, num_perm, 0.5, 0.5)


def words5(text):
    w = text.lower().split()
    return {" ".join(w[i:i + 5]) for i in range(max(len(w) - 4, 1))}


def true_jaccard(a, b):
    x, y = words5(a), words5(b)
    return len(x & y) / len(x | y)


@settings(max_examples=30)
@given(st.integers(0, 10_000))
def test_exact_shingle_jaccard_matches_python(seed):
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(30)]
    a = " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 40)))
    b = " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 40)))
    sa, sb = shingle_sets(pa.array([a, b]), 5)
    assert jaccard_sorted(sa, sb) == pytest.approx(true_jaccard(a, b))


def test_signatures_are_seeded_and_estimate_jaccard():
    rng = random.Random(1)
    vocab = [f"word{i}" for i in range(3000)]
    base = [" ".join(rng.choice(vocab) for _ in range(200)) for _ in range(50)]
    pairs = []
    for text in base:
        w = text.split()
        for i in range(len(w)):
            if rng.random() < 0.05:
                w[i] = rng.choice(vocab)
        pairs.append((text, " ".join(w)))
    a, b = permutations(256, 7)
    s1 = signatures(pa.array([p[0] for p in pairs]), 5, a, b)
    s2 = signatures(pa.array([p[1] for p in pairs]), 5, a, b)
    assert np.array_equal(s1, signatures(pa.array([p[0] for p in pairs]), 5, a, b))  # reproducible
    est = (s1 == s2).mean(axis=1)
    true = np.array([true_jaccard(x, y) for x, y in pairs])
    assert abs((est - true).mean()) < 0.02 and np.abs(est - true).max() < 0.12  # unbiased, ~1/sqrt(256) noise


def planted_corpus(n_base=400, seed=3):
    """Documents with planted near-copies at controlled edit rates (0-20% of words replaced)."""
    rng = random.Random(seed)
    vocab = [f"{rng.choice('bcdfgklmnprst')}{rng.choice('aeiou')}{rng.choice('bcdfgklmnprst')}{i}" for i in range(5000)]
    docs = []
    for i in range(n_base):
        docs.append({"id": f"b{i}", "text": " ".join(rng.choice(vocab) for _ in range(rng.randint(80, 250)))})
    for i in range(n_base // 2):
        src = rng.choice(docs[:n_base])
        rate = rng.choice([0.0, 0.01, 0.02, 0.04, 0.06, 0.1, 0.2])
        w = src["text"].split()
        for k in range(len(w)):
            if rng.random() < rate:
                w[k] = rng.choice(vocab)
        docs.append({"id": f"n{i}", "text": " ".join(w)})
    rng.shuffle(docs)
    return docs


def brute_force_pairs(docs, threshold):
    sets = [words5(d["text"]) for d in docs]
    out = {}
    for i in range(len(docs)):
        for j in range(i + 1, len(docs)):
            inter = len(sets[i] & sets[j])
            if inter:
                jac = inter / len(sets[i] | sets[j])
                if jac >= threshold - 0.2:
                    out[(docs[i]["id"], docs[j]["id"])] = jac
    return out


def clusters_from_mark(rows):
    by = {}
    for r in rows:
        if r["dup_cluster"] is not None:
            by.setdefault(r["dup_cluster"], set()).add(r["id"])
    same = {}
    for members in by.values():
        for m in members:
            same[m] = members
    return same


@pytest.mark.slow
@pytest.mark.parametrize("verify", ["signature", "exact"])
def test_accuracy_vs_brute_force_and_datasketch(tmp_path, verify):
    """Recall: pairs with Jaccard >= threshold + 0.05 end in one cluster. Precision: every document
    marked duplicate has a true near-duplicate (Jaccard >= threshold) in its cluster."""
    thr = 0.8
    docs = planted_corpus()
    text = {d["id"]: d["text"] for d in docs}
    src = write_jsonl(tmp_path / "docs.jsonl", docs)
    run_recipe([src], tmp_path / "out", [{"minhash_dedup": {"threshold": thr, "mode": "mark", "verify": verify}}],
               workers=2, input={"shard_size_mb": 0.05})
    rows = read_output(tmp_path / "out")
    same = clusters_from_mark(rows)
    truth = brute_force_pairs(docs, thr)

    def together(a, b):
        return a in same and b in same[a]

    strong = [p for p, j in truth.items() if j >= thr + 0.05]
    assert len(strong) > 50
    recall = sum(together(*p) for p in strong) / len(strong)
    marked = [r["id"] for r in rows if r["is_duplicate"]]
    precision = sum(max(true_jaccard(text[m], text[o]) for o in same[m] if o != m) >= thr for m in marked) / len(marked)

    # datasketch MinHashLSH with the same parameters, measured on the same corpus
    lsh = MinHashLSH(threshold=thr, num_perm=128)
    mhs = {}
    for d in docs:
        m = MinHash(num_perm=128, seed=1)
        m.update_batch([s.encode() for s in words5(d["text"])])
        mhs[d["id"]] = m
        lsh.insert(d["id"], m)
    ds_recall = sum(b in lsh.query(mhs[a]) for a, b in strong) / len(strong)
    print(f"\nthresher: recall {recall:.3f} precision {precision:.3f}; datasketch recall {ds_recall:.3f}")
    assert recall >= 0.95
    # exact verification removes every false positive; signature verification lets a few pairs
    # just under the threshold through (128 values estimate Jaccard to about +-0.035)
    assert precision >= (0.99 if verify == "exact" else 0.95)
    assert recall >= ds_recall - 0.01


@pytest.mark.slow
def test_remove_keeps_first_and_is_deterministic_across_workers(tmp_path):
    docs = planted_corpus(150, seed=5)
    src = write_jsonl(tmp_path / "d.jsonl", docs)
    proc = [{"minhash_dedup": {"threshold": 0.7, "verify": "exact"}}]
    run_recipe([src], tmp_path / "w1", proc, workers=1, input={"shard_size_mb": 0.03})
    run_recipe([src], tmp_path / "w2", proc, workers=2, input={"shard_size_mb": 0.03})
    a, b = read_output(tmp_path / "w1"), read_output(tmp_path / "w2")
    assert a == b and len(a) < len(docs)
    led = json.loads((tmp_path / "w1" / "ledger.json").read_text())
    mh = led["ops"]["minhash_dedup"]
    assert led["balanced"] and mh["dropped"]["near_duplicate"] == len(docs) - len(a)
    assert any(k.startswith("clusters_size_") for k in mh["counters"])
    # every dropped document has a near-duplicate in the corpus, and no two kept ones are near-duplicates
    kept = {r["id"] for r in a}
    for d in docs:
        if d["id"] not in kept:
            assert any(true_jaccard(d["text"], o["text"]) >= 0.7 for o in docs if o is not d)
    for i, x in enumerate(a):
        assert all(true_jaccard(x["text"], y["text"]) < 0.8 for y in a[i + 1:])


def test_mark_mode_keeps_the_earliest_of_each_cluster(tmp_path):
    docs = planted_corpus(150, seed=5)
    src = write_jsonl(tmp_path / "d.jsonl", docs)
    res = run_recipe([src], tmp_path / "o", [{"minhash_dedup": {"threshold": 0.7, "mode": "mark"}}])
    rows = read_output(tmp_path / "o")
    assert res.output_rows == len(docs)
    order = {d["id"]: i for i, d in enumerate(docs)}
    clusters = {}
    for r in rows:
        if r["dup_cluster"] is not None:
            clusters.setdefault(r["dup_cluster"], []).append(r)
    assert clusters
    for members in clusters.values():
        first = min(members, key=lambda r: order[r["id"]])
        assert [r["id"] for r in members if not r["is_duplicate"]] == [first["id"]]


def test_keep_longest_and_keep_column(tmp_path):
    base = " ".join(f"token{i}" for i in range(120))
    docs = [{"id": "short", "text": base, "score": 5}, {"id": "long", "text": base + " extra words at the end", "score": 1},
            {"id": "other", "text": " ".join(f"other{i}" for i in range(100)), "score": 0}]
    src = write_jsonl(tmp_path / "d.jsonl", docs)
    run_recipe([src], tmp_path / "o1", [{"minhash_dedup": {"threshold": 0.7, "keep": "longest"}}])
    assert sorted(r["id"] for r in read_output(tmp_path / "o1")) == ["long", "other"]
    run_recipe([src], tmp_path / "o2", [{"minhash_dedup": {"threshold": 0.7, "keep": "column", "keep_column": "score"}}])
    assert sorted(r["id"] for r in read_output(tmp_path / "o2")) == ["other", "short"]


def test_incremental_index(tmp_path):
    docs = planted_corpus(100, seed=9)
    old, new = docs[:120], docs[120:]
    index = tmp_path / "index"
    run_recipe([write_jsonl(tmp_path / "old.jsonl", old)], tmp_path / "o1",
               [{"minhash_dedup": {"threshold": 0.7, "index_path": str(index)}}])
    kept_old = read_output(tmp_path / "o1")
    run_recipe([write_jsonl(tmp_path / "new.jsonl", new)], tmp_path / "o2",
               [{"minhash_dedup": {"threshold": 0.7, "index_path": str(index)}}])
    kept_new = read_output(tmp_path / "o2")
    # no new document is a near-duplicate of a kept old one, or of another kept new one
    for d in kept_new:
        assert all(true_jaccard(d["text"], o["text"]) < 0.85 for o in kept_old)
    led = json.loads((tmp_path / "o2" / "ledger.json").read_text())
    assert led["ops"]["minhash_dedup"]["dropped"].get("near_duplicate_of_index", 0) > 0
    # the index grew by this run's kept rows
    import polars as pl

    assert pl.read_parquet(index / "bands.parquet")["gid"].n_unique() == len(kept_old) + len(kept_new)


def test_empty_documents_are_never_duplicates(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", [{"id": str(i), "text": "   "} for i in range(3)] + [{"id": "x", "text": "a b c"}])
    res = run_recipe([src], tmp_path / "o", [{"minhash_dedup": {}}])
    assert res.output_rows == 4


def test_bad_band_params_are_recipe_errors():
    from thresher.pipeline.errors import RecipeError
    from thresher.pipeline.recipe import parse_recipe

    with pytest.raises(RecipeError, match="exceeds num_perm"):
        parse_recipe("input: {paths: [a]}\noutput: {path: o}\nprocess:\n  - minhash_dedup: {bands: 20, rows: 10}\n")
