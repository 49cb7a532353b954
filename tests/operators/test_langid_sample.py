"""Language ID's fast path (issue 19 item 5): the sample of each long document (pieces from its start
to its end, cut on whitespace, valid UTF-8), and the whole-document recheck where the sample is not
confident. Agreement with whole-document lid.176 on real data: tests/realdata/test_langid_realdata.py."""

from __future__ import annotations

import pyarrow as pa
import pytest

from thresher.operators.filter import langid as langid_module
from thresher.operators.filter.langid import LanguageId, classify, load_fasttext, sample_text
from thresher.pipeline.assets import LID176, asset_path

EN = ("The committee will publish its report on the state of the railways next week, and the minister "
      "has promised to answer every question that the members of parliament put to her. ")
DE = "Die Kommission wird ihren Bericht über den Zustand der Eisenbahnen nächste Woche veröffentlichen. "


def test_short_rows_stay_whole_and_long_rows_are_sampled_from_start_to_end():
    words = [f"w{i:04d}" for i in range(2000)]
    long = " ".join(words)
    arr = pa.array(["short text", None, "", long])
    sample, sampled = sample_text(arr, 300, 3)
    out = sample.to_pylist()
    assert sampled.tolist() == [False, False, False, True]
    assert out[:3] == ["short text", "", ""]
    got = out[3].split()
    assert got[0] == "w0000" and got[-1] == "w1999"  # the start and the end of the document
    assert all(w in words for w in got)  # cut on whitespace: whole words only
    assert 250 <= len(out[3].encode()) <= 300 + 3 * 32 + 3
    middle = [int(w[1:]) for w in got]
    assert any(900 <= i <= 1100 for i in middle)  # and a piece from the middle


@pytest.mark.parametrize("kind", [pa.string(), pa.large_string()])
def test_samples_are_valid_utf8_without_spaces_and_respect_slices(kind):
    cjk = "委员会将于下周发布关于铁路状况的报告" * 40  # no whitespace: cut on character boundaries
    arr = pa.array(["x", cjk, EN * 10, "y"], kind).slice(1, 2)
    sample, sampled = sample_text(pa.chunked_array([arr]), 200, 4)
    out = sample.to_pylist()  # decoding checks the UTF-8
    assert sampled.tolist() == [True, True]
    assert out[0].replace(" ", "") and set(out[0].replace(" ", "")) <= set(cjk)
    assert out[1].startswith("The committee") and out[1].rstrip().endswith("put to her.")


class Spy:
    """The real model, recording what it was asked to classify."""

    def __init__(self, model):
        self.model, self.seen = model, []
        self.f = self

    def multilinePredict(self, texts, *args):  # noqa: N802 - fastText's name
        self.seen.append(list(texts))
        return self.model.f.multilinePredict(texts, *args)


@pytest.fixture(scope="module")
def lid():
    op = LanguageId(LanguageId.Params(languages=["en"]))
    op.prepare()
    op.setup()
    return op


@pytest.mark.network  # the lid.176 model
def test_only_unconfident_samples_are_classified_again_whole(lid):
    mixed = EN * 12 + DE * 3  # the sample: half English, half German (not confident); the whole: English
    texts = [EN * 20, mixed, "short English text about the railways", DE * 20]
    spy = Spy(load_fasttext(str(asset_path(LID176))))  # the binding reads strings: what it was given
    labels, score = classify(spy, pa.array(texts), sample_bytes=400, pieces=2, recheck_below=0.9)
    whole, _ = classify(lid._model, pa.array(texts))
    assert labels.tolist() == whole.tolist() == ["__label__en", "__label__en", "__label__en", "__label__de"]
    first, again = spy.seen
    assert len(first) == 4 and all(len(s.encode()) < 600 for s in first)  # samples, one call
    assert again == [mixed.replace("\n", " ")]  # only the row whose sample was not confident


@pytest.mark.network
def test_compiled_path_rechecks_only_unconfident_rows_in_place(lid, monkeypatch):
    mixed = EN * 12 + DE * 3
    texts = [EN * 20, mixed, "short English text about the railways", DE * 20]
    calls = []
    real = langid_module.fasttext_predict

    def spy(model, data, lo, hi, row_seg):
        calls.append([data[a:b].tobytes().decode() for a, b in zip(lo, hi, strict=True)])
        return real(model, data, lo, hi, row_seg)

    monkeypatch.setattr(langid_module, "fasttext_predict", spy)
    labels, _ = classify(lid._model, pa.array(texts), sample_bytes=400, pieces=2, recheck_below=0.9)
    assert labels.tolist() == ["__label__en", "__label__en", "__label__en", "__label__de"]
    first, again = calls
    assert len(first) == 8 and all(len(s.encode()) < 300 for s in first)  # two pieces per row, one call
    assert again == [mixed]  # only the unconfident row, whole, as a range of the column's buffer


@pytest.mark.network
def test_op_default_is_the_fast_path_and_null_keeps_whole_documents(lid):
    assert lid.params.sample_bytes and lid.recheck_below == pytest.approx(0.9)
    assert LanguageId(LanguageId.Params(min_score=0.9)).recheck_below == pytest.approx(1.15)  # always whole
    assert LanguageId(LanguageId.Params(tag_only=True, min_score=0.2)).recheck_below == 0.9
    batch = pa.table({"text": [EN * 20, DE * 20, None]})
    whole = LanguageId(LanguageId.Params(languages=["en"], sample_bytes=None))
    whole.setup()
    fast, full = lid.compute_stats(batch), whole.compute_stats(pa.table({"text": [EN * 20, DE * 20, ""]}))
    assert fast["lang"].to_pylist() == full["lang"].to_pylist() == ["en", "de", ""]
    assert lid.keep(fast).tolist() == whole.keep(full).tolist() == [True, False, False]
