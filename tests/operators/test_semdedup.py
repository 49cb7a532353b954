"""semantic_dedup (SemDeDup) with the real MiniLM model: paraphrases and reformatted copies that
MinHash misses are removed, distinct documents stay, and the result is the same for any worker
count and on Ray."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import read_output, run_recipe, write_jsonl
from thresher.api import apply_op, apply_op_report
from thresher.operators.common.kmeans import minibatch_kmeans, sampled
from thresher.operators.semantic.semdedup import greedy_duplicates

ORIGINALS = [
    "The river burst its banks after three days of heavy rain, and hundreds of families in the old town had to "
    "leave their homes while volunteers filled sandbags along the quay.",
    "Our library will open an exhibition of medieval maps next month. Guided tours run every afternoon, and "
    "entry is free for students and pensioners.",
    "To reset your password, open the account settings page, choose 'Security', and follow the link we send "
    "to your registered e-mail address.",
    "The new vaccine reduced hospital admissions by sixty percent in the trial. The researchers followed "
    "twelve thousand volunteers for two years.",
]
PARAPHRASES = [
    "After three days of heavy rain the river overflowed, and hundreds of families in the old town were forced "
    "out of their homes as volunteers piled sandbags along the quay.",
    "Next month the library opens an exhibition of maps from the Middle Ages. There are guided tours each "
    "afternoon, and students and pensioners get in free.",
    "If you want to reset your password, go to the account settings, pick 'Security' and then follow the link "
    "sent to the e-mail address you registered.",
    "In the trial the new vaccine cut hospital admissions by 60%, say researchers who tracked 12,000 "
    "volunteers over two years.",
]
DISTINCT = [
    "Photosynthesis converts light energy into chemical energy stored in glucose inside the chloroplasts.",
    "The stock market fell sharply on Monday after the central bank unexpectedly raised interest rates.",
    "Preheat the oven to 200 degrees, then roast the vegetables with olive oil and rosemary for forty minutes.",
    "The striker scored twice in the second half to give the home team a comfortable three-nil victory.",
    "Medieval castles were built with thick stone walls, moats and narrow windows for archers.",
    "Install the package with pip, then import it and call the main function with your configuration file.",
    "Whales communicate over long distances using low-frequency songs that travel through the ocean.",
    "The committee will vote on the new zoning rules for the harbour district at its meeting in March.",
]


def reordered(text: str) -> str:
    """The same sentences in reverse order, upper-cased, with doubled spaces: a reformatted copy."""
    parts = [s.strip() for s in text.replace(", and", ". And").split(". ") if s.strip()]
    return "  ".join(p.rstrip(".") + "." for p in reversed(parts)).upper()


def corpus():
    rows = [{"id": f"orig-{i}", "text": t} for i, t in enumerate(ORIGINALS)]
    rows += [{"id": f"dist-{i}", "text": t} for i, t in enumerate(DISTINCT)]
    rows += [{"id": f"para-{i}", "text": t} for i, t in enumerate(PARAPHRASES)]
    rows += [{"id": f"refmt-{i}", "text": reordered(t)} for i, t in enumerate(ORIGINALS)]
    return rows


@pytest.mark.network
def test_paraphrases_and_reformatted_copies_that_minhash_misses_are_removed():
    rows = corpus()
    minhash_kept = set(apply_op("minhash_dedup", rows, threshold=0.8)["id"].to_pylist())
    assert minhash_kept == {r["id"] for r in rows}, "MinHash sees none of these copies"
    report = apply_op_report("semantic_dedup", rows, threshold=0.8)  # these paraphrases score 0.84-0.97
    kept = set(report.table["id"].to_pylist())
    assert kept == {r["id"] for r in rows if r["id"].startswith(("orig", "dist"))}
    assert report.ledger_entry["dropped"] == {"semantic_duplicate": 8}
    assert report.ledger_entry["counters"]["duplicate_groups"] == 4


@pytest.mark.network
def test_distinct_documents_stay_even_at_a_low_threshold():
    rows = [{"id": str(i), "text": t} for i, t in enumerate(DISTINCT)]
    assert apply_op("semantic_dedup", rows, threshold=0.5).num_rows == len(DISTINCT)


@pytest.mark.network
def test_keep_policies_and_mark_mode():
    rows = [{"id": "short", "text": ORIGINALS[0][:120]}, {"id": "long", "text": ORIGINALS[0]},
            {"id": "other", "text": DISTINCT[0]}]
    assert apply_op("semantic_dedup", rows, threshold=0.8)["id"].to_pylist() == ["short", "other"]
    assert apply_op("semantic_dedup", rows, threshold=0.8, keep="longest")["id"].to_pylist() == ["long", "other"]
    marked = apply_op("semantic_dedup", rows, threshold=0.8, mode="mark", keep="longest").to_pylist()
    assert [r["is_semantic_duplicate"] for r in marked] == [True, False, False]
    assert marked[0]["semantic_similarity"] >= 0.8 and marked[1]["semantic_similarity"] is None
    assert {r["semantic_cluster"] for r in marked} == {0}
    closest = set(apply_op("semantic_dedup", rows, threshold=0.8, keep="closest")["id"].to_pylist())
    farthest = set(apply_op("semantic_dedup", rows, threshold=0.8, keep="farthest")["id"].to_pylist())
    assert closest != farthest and len(closest & {"short", "long"}) == len(farthest & {"short", "long"}) == 1


@pytest.mark.network
def test_embeddings_from_an_embed_column_float32_or_int8_decide_alike():
    rows = corpus()
    direct = apply_op("semantic_dedup", rows, threshold=0.8)["id"].to_pylist()
    for dtype in ("float32", "int8"):
        embedded = apply_op("embed", rows, dtype=dtype)
        assert apply_op("semantic_dedup", embedded, threshold=0.8)["id"].to_pylist() == direct


def test_greedy_keeps_a_chain_ends_only_compared_with_kept_rows():
    # a ~ b (0.96), b ~ c (0.96), a !~ c: b goes (a keeps it), c stays (b was not kept)
    a = np.array([1.0, 0.0])
    b = np.array([np.cos(0.28), np.sin(0.28)])
    c = np.array([np.cos(0.56), np.sin(0.56)])
    keeper, sim = greedy_duplicates(np.stack([a, b, c]).astype(np.float32), 0.95)
    assert keeper.tolist() == [-1, 0, -1] and sim[1] == pytest.approx(np.cos(0.28), abs=1e-6)


def test_kmeans_is_seeded_and_finds_separated_groups():
    rng = np.random.default_rng(0)
    centers = np.eye(8, 16, dtype=np.float32)
    x = centers[rng.integers(8, size=4000)] + 0.05 * rng.standard_normal((4000, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    c1, c2 = minibatch_kmeans(x, 8, seed=3), minibatch_kmeans(x, 8, seed=3)
    assert np.array_equal(c1, c2)
    assert (np.max(c1 @ centers.T, axis=0) > 0.98).all()  # every true centre found


def test_the_kmeans_sample_depends_only_on_ids_and_seed():
    ids = np.arange(100_000, dtype=np.int64)
    whole = sampled(ids, 0.1, 7)
    assert 9_000 < whole.sum() < 11_000
    assert np.array_equal(np.concatenate([sampled(ids[:300], 0.1, 7), sampled(ids[300:], 0.1, 7)]), whole)
    assert not np.array_equal(sampled(ids, 0.1, 8), whole)


def _many(n_copies: int = 3):
    """Several shards' worth: the test corpus, with more distinct filler (numbered notices)."""
    rows = corpus()
    rows += [{"id": f"fill-{i}", "text": f"Notice {i}: the {w} committee meets on day {i % 28 + 1} to discuss item {i * 7}."}
             for i, w in enumerate(["water", "roads", "schools", "parks", "budget", "housing"] * 10)]
    return rows


@pytest.mark.network
def test_same_output_for_any_worker_count(tmp_path):
    rows = _many()
    paths = [write_jsonl(tmp_path / "in" / f"p{i}.jsonl", rows[i::3]) for i in range(3)]
    process = [{"embed": {}}, {"semantic_dedup": {"threshold": 0.8, "clusters": 3}}]
    run_recipe(paths, tmp_path / "one", process, workers=1)
    run_recipe(paths, tmp_path / "two", process, workers=2)
    one, two = read_output(tmp_path / "one"), read_output(tmp_path / "two")
    assert one == two
    dropped = {r["id"] for r in rows} - {r["id"] for r in one}
    groups = [{f"orig-{i}", f"para-{i}", f"refmt-{i}"} for i in range(4)]  # the first in input order stays
    assert sum(len(g & dropped) for g in groups) >= 6 and all(g - dropped for g in groups)
    assert not {d for d in dropped if d.startswith("dist")}
    assert len(one[0]["embedding"]) == 384


@pytest.mark.network
@pytest.mark.slow
def test_ray_gives_the_local_result(tmp_path, local_ray):
    rows = _many()
    paths = [write_jsonl(tmp_path / "in" / f"p{i}.jsonl", rows[i::3]) for i in range(3)]
    for name, process in (("embed", [{"embed": {}}, {"semantic_dedup": {"threshold": 0.8, "clusters": 3}}]),
                          ("mark", [{"semantic_dedup": {"threshold": 0.8, "clusters": 3, "mode": "mark",
                                                        "keep": "farthest"}}])):
        run_recipe(paths, tmp_path / f"{name}-local", process, workers=2)
        run_recipe(paths, tmp_path / f"{name}-ray", process, executor={"type": "ray", "workers": 2})
        local, ray_rows = read_output(tmp_path / f"{name}-local"), read_output(tmp_path / f"{name}-ray")
        assert local == ray_rows and local
        led = [json.loads((tmp_path / f"{name}-{x}" / "ledger.json").read_text())["ops"]["semantic_dedup"]
               for x in ("local", "ray")]
        assert led[0]["counters"] == led[1]["counters"] and led[0]["dropped"] == led[1]["dropped"]
    assert sum(r["is_semantic_duplicate"] for r in local) >= 6
