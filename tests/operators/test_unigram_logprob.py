"""unigram_logprob_filter: the vectorised score against datatrove's definition written out in plain
Python (tokens, ``word.lower()``, wordfreq frequencies, 1e-9 for unknown words, mean of natural
logs), the lower-cased token spans it rests on, the strict threshold, per-row languages, and a real
recipe run."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest
import wordfreq
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import read_output, run_recipe, write_jsonl
from thresher.operators.common.token_spans import LowerTokens
from thresher.operators.common.tokenize import fnv1a, string_hashes, token_strings
from thresher.operators.filter.unigram import UnigramLogProbFilter, _add_logprobs, unigram_table
from thresher.testing import check_op, run_op

EN = wordfreq.get_frequency_dict("en", "best")
PROSE = ("The committee said on Tuesday that the new bridge, which has been under construction for three years, "
         "will open to traffic next month. Officials expect it to reduce congestion in the city centre.")
GIBBERISH = "Qzxv plorkt wubnaz frelq, zimbo krattle vozzik plimf snorbax quillop."


def datatrove_score(text: str, freqs=EN, unknown=1e-9) -> float:
    """datatrove's UnigramLogProbFilter.get_logprob, with wordfreq's frequencies."""
    words = token_strings(text) if text.strip() else []
    if not words:
        return 0.0
    return sum(math.log(freqs.get(w.lower(), unknown)) for w in words) / len(words)


ALPHABET = st.sampled_from(list("abcXYZ .,!?'\n-()") + ["the ", "Cat ", "don't ", "Mr. ", "U.S. ", "É", "ß", "日本", "…"])
TEXT = st.lists(ALPHABET, max_size=30).map("".join)


@settings(max_examples=80)
@given(texts=st.lists(TEXT, min_size=1, max_size=8))
def test_lower_token_spans_are_the_tokens_lower_cased(texts):
    tok = LowerTokens(pa.array(texts))
    expected = [[w.lower() for w in token_strings(t)] if t.strip() else [] for t in texts]
    assert tok.counts.tolist() == [len(e) for e in expected]
    assert tok.hashes().tolist() == [fnv1a(w) for e in expected for w in e]
    assert tok.joined().to_pylist() == [" ".join(e) for e in expected]


@settings(max_examples=60)
@given(texts=st.lists(TEXT, min_size=1, max_size=8))
def test_score_is_datatrove_s_definition(texts):
    op = UnigramLogProbFilter()
    op.ensure_setup()
    got = op.compute_stats(pa.table({"text": texts}))["unigram_logprob"].to_numpy()
    assert got == pytest.approx([datatrove_score(t) for t in texts], abs=1e-9)


def test_hash_table_holds_every_word_of_the_list():
    """Every word of wordfreq's English list reads back its own log-frequency; words it lacks read
    as unknown."""
    table = unigram_table("en")
    words = list(EN) + ["qzxvplorkt", "", "."]
    hashes = string_hashes(pa.array(words))
    sums = np.zeros(len(words))
    _add_logprobs(hashes, np.arange(len(words) + 1), np.zeros(len(words), np.int64), 0, table.keys, table.values,
                  table.bits, -99.0, sums)
    assert table.words == len(EN) and len(table.keys) >= 2 * len(EN)
    assert np.array_equal(sums[:len(EN)], np.log(np.fromiter(EN.values(), float)))
    assert sums[len(EN):].tolist() == [-99.0] * 3


def test_scores_on_prose_and_gibberish():
    op = UnigramLogProbFilter()
    op.ensure_setup()
    texts = [PROSE, GIBBERISH, "", None]
    score = op.compute_stats(pa.table({"text": pa.array(texts, pa.string())}))["unigram_logprob"].to_numpy()
    assert score[0] == pytest.approx(datatrove_score(PROSE)) and -10 < score[0] < -7
    assert score[1] < -15  # unknown words (1e-9 -> ln = -20.7) and two punctuation marks
    assert score[2] == score[3] == 0.0  # no words: datatrove's 0, kept


def test_threshold_is_strict():
    """datatrove keeps a document when its score is *above* the threshold."""
    op = UnigramLogProbFilter(UnigramLogProbFilter.Params(min_logprob=-9.0))
    stats = {"unigram_logprob": pa.array([-9.0, -8.999, -9.001, float("nan")])}
    assert op.drop_reasons(stats)["unigram_logprob_too_low"].tolist() == [True, False, True, False]


def test_per_row_languages():
    de_text = "Der Fluss fließt ruhig durch das alte Dorf und die Kinder spielen am Ufer."
    rows = [{"text": de_text, "lang": "de"}, {"text": de_text, "lang": "en"}, {"text": de_text, "lang": "xx"},
            {"text": PROSE, "lang": "en-GB"}, {"text": PROSE, "lang": None}]
    run = run_op("unigram_logprob_filter", rows, language="auto")
    s = run.stats["unigram_logprob"]
    de = wordfreq.get_frequency_dict("de", "best")
    assert s[0] == pytest.approx(datatrove_score(de_text, de)) and s[0] > s[1]
    assert s[1] == pytest.approx(datatrove_score(de_text))
    assert s[3] == pytest.approx(datatrove_score(PROSE))
    assert np.isnan(s[2]) and np.isnan(s[4])  # no list for the language: not scored, kept
    assert [(row["lang"], reason) for row, reason in run.dropped] == [("en", "unigram_logprob_too_low")]  # German read as English


def test_unknown_language_is_a_recipe_error():
    from thresher.pipeline.errors import RecipeError
    from thresher.pipeline.recipe import parse_recipe

    with pytest.raises(RecipeError, match="no 'best' word list for 'xx'"):
        parse_recipe("input: {paths: [a]}\noutput: {path: o}\nprocess:\n  - unigram_logprob_filter: {language: xx}\n")


def test_contract():
    check_op(UnigramLogProbFilter, [{"text": PROSE}, {"text": GIBBERISH}])


def test_recipe_run(tmp_path):
    rows = [{"id": i, "text": t} for i, t in enumerate([PROSE, GIBBERISH, PROSE.upper(), "", PROSE + " Qzxv plorkt."])]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    run_recipe([src], tmp_path / "out", [{"unigram_logprob_filter": {}}], output={"keep_stats": True})
    kept = read_output(tmp_path / "out")
    assert [r["id"] for r in kept] == [0, 2, 3, 4]
    led = json.loads((tmp_path / "out" / "ledger.json").read_text())
    assert led["balanced"] and led["ops"]["unigram_logprob_filter"]["dropped"] == {"unigram_logprob_too_low": 1}
