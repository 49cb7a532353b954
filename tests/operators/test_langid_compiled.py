"""The compiled lid.176 inference (operators/filter/fasttext_infer.py) against fastText's own binding:
the same labels and bit-identical probabilities, on edge cases of fastText's tokenizer and on
arbitrary text (hypothesis); the decoded input rows equal the binding's ``get_input_vector``."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thresher.operators.filter.fasttext_infer import FtzModel, load_ftz
from thresher.operators.filter.langid import classify, load_fasttext, load_lid
from thresher.pipeline.assets import LID176, asset_path

EN = "The committee will publish its report on the state of the railways next week. "
DE = "Die Kommission wird ihren Bericht über den Zustand der Eisenbahnen nächste Woche veröffentlichen. "


@pytest.fixture(scope="module")
def models():
    path = str(asset_path(LID176))
    compiled = load_lid(path)
    assert isinstance(compiled, FtzModel)
    return compiled, load_fasttext(path)


def same_as_binding(models, texts, **kw):
    compiled, binding = models
    a_lab, a_score = classify(compiled, pa.array(texts, pa.large_string()), **kw)  # a null reads as ""
    b_lab, b_score = classify(binding, pa.array([t or "" for t in texts], pa.large_string()), **kw)
    assert a_lab.tolist() == b_lab.tolist()
    assert np.array_equal(a_score, b_score), np.abs(a_score - b_score).max()
    return a_lab


@pytest.mark.network
def test_decoded_rows_are_the_bindings(models):
    compiled, binding = models
    rows = np.r_[0:compiled.nwords:37, compiled.nwords:len(compiled.matrix):211, len(compiled.matrix) - 1]
    for i in rows:
        assert np.array_equal(compiled.matrix[i], np.asarray(binding.get_input_vector(int(i)), np.float32)), i
    assert compiled.labels == binding.get_labels()


@pytest.mark.network
def test_tokenizer_edge_cases_match_the_binding(models):
    texts = [
        "", None, "   \t  ", "a", EN, DE, EN * 30,
        "__label__en " + DE,  # a label token is skipped
        "__label__xx " + DE, "x__label__en " + DE,  # an unknown label is skipped too; not a prefix: a word
        "</s> " + DE, DE + " </s> " + EN * 5, "x</s>y " + EN,  # "</s>" ends the line
        EN + "\u2028" + DE + "\u2029x", EN + "\r\n" + DE + "\x0b\x0c\x00" + EN,
        "委员会将于下周发布关于铁路状况的报告" * 20, "😀🎉 " * 50 + DE, "ab" * 3000,
        "Ünïcödé wörds ünd Ümlaute " * 10, "\u00a0".join(EN.split()),  # NBSP is no separator
    ]
    same_as_binding(models, texts)
    same_as_binding(models, texts, sample_bytes=200, pieces=3, recheck_below=0.9)


@pytest.mark.network
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(alphabet=st.one_of(st.sampled_from(" \t\n\r\x0b\x0c\x00\u2028<>_</s>label"),
                                             st.characters()), max_size=300), min_size=1, max_size=8))
def test_any_text_matches_the_binding(models, texts):
    same_as_binding(models, texts)
    same_as_binding(models, texts, sample_bytes=64, pieces=2, recheck_below=0.95)


def test_other_layouts_are_refused(tmp_path):
    bad = tmp_path / "x.bin"
    bad.write_bytes(b"\0" * 64)
    with pytest.raises(ValueError):
        load_ftz(str(bad))


@pytest.mark.network
def test_batches_past_one_sampler_slice_match_the_binding(models):
    """The compiled fast path samples 4096 rows at a time on zero-copy slices (offsets into the
    column's buffers): rows after the first slice, in a chunked column, classify as the binding does."""
    rows = [EN * (1 + i % 7) if i % 3 else DE * (1 + i % 5) for i in range(5000)]
    compiled, binding = models
    arr = pa.chunked_array([pa.array(rows[:1234], pa.large_string()), pa.array(rows[1234:], pa.large_string())])
    a_lab, a_score = classify(compiled, arr.slice(17), sample_bytes=300, pieces=3, recheck_below=0.9)
    b_lab, b_score = classify(binding, arr.slice(17), sample_bytes=300, pieces=3, recheck_below=0.9)
    assert a_lab.tolist() == b_lab.tolist() and np.array_equal(a_score, b_score)
