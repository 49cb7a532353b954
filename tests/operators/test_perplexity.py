"""perplexity_filter: a tiny bigram ARPA model written here, perplexities checked against a hand
computation (Data-Juicer's formula, 10 ** (-log10 p / (words + 1)), KenLM's back-off), the
tokenizers and per-line pooling, a real recipe run, and the one-line error when ``kenlm`` is not
installed."""

from __future__ import annotations

import json
import sys

import pyarrow as pa
import pytest

from tests.conftest import read_output, run_recipe, write_jsonl
from thresher.operators.filter.perplexity import PerplexityFilter, perplexities
from thresher.pipeline.errors import ThresherError
from thresher.testing import check_op

# log10 probabilities and back-offs of a bigram model over "the", "cat", "sat"
ARPA = """\\data\\
ngram 1=6
ngram 2=4

\\1-grams:
-1.0\t<unk>\t0
-99\t<s>\t-0.3
-0.5\tthe\t-0.2
-0.8\tcat\t-0.1
-0.9\tsat\t-0.25
-0.7\t</s>\t0

\\2-grams:
-0.2\t<s> the
-0.3\tthe cat
-0.15\tcat sat
-0.4\tsat </s>

\\end\\
"""


def ppl(log10p: float, words: int) -> float:
    return 10 ** (-log10p / (words + 1))


# hand computation with the table above (a missing bigram backs off: b(prev) + p(word))
THE_CAT_SAT = -0.2 - 0.3 - 0.15 - 0.4  # <s> the, the cat, cat sat, sat </s>
SAT_THE = (-0.3 - 0.9) + (-0.25 - 0.5) + (-0.2 - 0.7)  # sat|<s> backs off, the|sat backs off, </s>|the backs off
DOG = (-0.3 - 1.0) + (0 - 0.7)  # <unk>|<s> backs off, </s>|<unk>
CAT = (-0.3 - 0.8) + (-0.1 - 0.7)


@pytest.fixture(scope="module")
def arpa(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("lm") / "tiny.arpa"
    path.write_text(ARPA)
    return str(path)


@pytest.fixture(scope="module")
def model(arpa):
    pytest.importorskip("kenlm")
    from thresher.operators.filter.perplexity import load_kenlm

    return load_kenlm(arpa)


def test_perplexity_matches_a_hand_computation(model):
    texts = ["the cat sat", "The  Cat\tSAT", "sat the", "dog", "", None, "the cat sat\ncat"]
    got = perplexities(model, pa.array(texts, pa.string()))
    assert got.tolist() == pytest.approx([
        ppl(THE_CAT_SAT, 3), ppl(THE_CAT_SAT, 3), ppl(SAT_THE, 2), ppl(DOG, 1), 0.0, 0.0,
        # one sentence: "the cat sat cat": cat|sat backs off, </s>|cat backs off
        ppl(-0.2 - 0.3 - 0.15 + (-0.25 - 0.8) + (-0.1 - 0.7), 4)], rel=1e-6)


def test_per_line_pools_the_lines(model):
    got = perplexities(model, pa.array(["the cat sat\n\ncat", "dog\r\nthe cat sat"]), per_line=True)
    assert got.tolist() == pytest.approx([10 ** (-(THE_CAT_SAT + CAT) / (4 + 2)),
                                          10 ** (-(DOG + THE_CAT_SAT) / (2 + 4))], rel=1e-6)


def test_tokenizers_and_case(model):
    text = pa.array(["The cat sat."])
    # whitespace: "sat." is one unknown word; words: "sat" "." (an unknown ".")
    ws = perplexities(model, text)[0]
    words = perplexities(model, text, tokenizer="words")[0]
    assert ws == pytest.approx(ppl(-0.2 - 0.3 + (-0.1 - 1.0) + (0 - 0.7), 3), rel=1e-6)
    assert words == pytest.approx(ppl(-0.2 - 0.3 - 0.15 + (-0.25 - 1.0) + (0 - 0.7), 4), rel=1e-6)
    # without lower-casing, "The" is unknown
    assert perplexities(model, pa.array(["The cat sat"]), lowercase=False)[0] == pytest.approx(
        ppl((-0.3 - 1.0) + (0 - 0.8) + -0.15 - 0.4, 3), rel=1e-6)


def test_drop_rule_is_inclusive():
    op = PerplexityFilter(PerplexityFilter.Params(model_path="x.arpa", max_ppl=10.0))
    assert op.drop_reasons({"perplexity": pa.array([9.9, 10.0, 10.1, 0.0])})["perplexity_too_high"].tolist() == \
        [False, False, True, False]


def test_contract():
    check_op(PerplexityFilter)


def test_recipe_run(tmp_path, arpa, model):
    rows = [{"id": i, "text": t} for i, t in enumerate(["the cat sat", "dog dog dog dog", "sat the", ""])]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    run_recipe([src], tmp_path / "out", [{"perplexity_filter": {"model_path": arpa, "max_ppl": 9.0}}],
               output={"keep_stats": True})
    kept = read_output(tmp_path / "out")
    # perplexities: 2.0, 10 ** (5.0 / 5) = 10 (four unknown words), 10 ** (2.85 / 3) = 8.9, 0
    assert [r["id"] for r in kept] == [0, 2, 3]
    assert [r["__stats__"]["perplexity_filter"]["perplexity"] for r in kept] == pytest.approx(
        [ppl(THE_CAT_SAT, 3), ppl(SAT_THE, 2), 0.0])
    led = json.loads((tmp_path / "out" / "ledger.json").read_text())
    assert led["balanced"] and led["ops"]["perplexity_filter"]["dropped"] == {"perplexity_too_high": 1}


def test_missing_model_file_stops_before_reading(tmp_path):
    pytest.importorskip("kenlm")
    op = PerplexityFilter(PerplexityFilter.Params(model_path=str(tmp_path / "nope.arpa")))
    with pytest.raises(ThresherError, match="does not exist"):
        op.prepare()


def test_without_kenlm_the_error_says_how_to_install(monkeypatch, arpa):
    monkeypatch.setitem(sys.modules, "kenlm", None)  # import kenlm -> ImportError
    op = PerplexityFilter(PerplexityFilter.Params(model_path=arpa))
    with pytest.raises(ThresherError) as e:
        op.prepare()
    assert str(e.value) == "perplexity_filter needs the kenlm package, an optional dependency: " \
                           "pip install 'thresher[kenlm]'"
