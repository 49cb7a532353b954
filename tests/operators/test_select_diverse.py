"""Diversity selection: k-center greedy over MinHash signatures picks one row per cluster first."""

from __future__ import annotations

import random

import numpy as np

from tests.conftest import read_output, run_recipe, write_jsonl
from thresher.operators.select.diverse import k_center

TOPICS = {
    "sea": "waves tides salt harbour boats fish coral reef ocean current shore",
    "space": "planets orbit comet galaxy telescope star nebula rocket moon crater",
    "food": "bread butter flour oven dough yeast bake crust slice recipe",
    "music": "guitar chord melody rhythm drum singer concert tempo scale note",
}


def test_k_center_picks_one_row_from_each_cluster(tmp_path):
    rng = random.Random(3)
    rows = []
    for topic, words in TOPICS.items():
        w = words.split()
        for j in range(10):
            rows.append({"id": f"{topic}-{j}", "text": " ".join(rng.choice(w) for _ in range(30)), "topic": topic})
    rng.shuffle(rows)
    src = write_jsonl(tmp_path / "docs.jsonl", rows)
    res = run_recipe([src], tmp_path / "out", [{"diverse_select": {"k": 4, "ngram": 1}}])
    out = read_output(tmp_path / "out")
    assert sorted(r["topic"] for r in out) == sorted(TOPICS)  # one per cluster
    assert res.ledger["diverse_select"].dropped == {"not_most_diverse": 36}
    again = run_recipe([src], tmp_path / "again", [{"diverse_select": {"k": 4, "ngram": 1}}])
    assert [r["id"] for r in read_output(tmp_path / "again")] == [r["id"] for r in out] and again


def test_k_center_kernel_on_points():
    sig = np.array([[1, 1, 1, 1], [1, 1, 1, 2], [5, 6, 7, 8], [5, 6, 7, 9], [1, 6, 3, 8]], dtype=np.uint32)
    chosen = list(k_center(sig, 3, 0))
    assert chosen[0] == 0 and chosen[1] in (2, 3) and len(set(chosen)) == 3
