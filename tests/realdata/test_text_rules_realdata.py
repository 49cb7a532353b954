"""The text rules ported from Data-Juicer and datatrove (issue 15) against plain-Python copies of
their definitions (tests/operators/text_rule_refs.py) on real text: web pages (C4, trafilatura
extractions, DCLM), clean prose (State of the Union) and the UDHR in ~450 languages and scripts."""

from __future__ import annotations

import gzip
import json
import random

import numpy as np
import pyarrow as pa
import pytest

from tests.operators import text_rule_refs as ref
from thresher.operators.clean.sentences import ABBREVIATIONS
from thresher.operators.filter.lines import C4ParagraphFilter, LineLengthFilter
from thresher.operators.filter.repetition import CharacterRepetitionFilter, WordRepetitionFilter
from thresher.testing import run_op


def _read(path) -> list[dict]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(x) for x in f if x.strip()]


@pytest.fixture(scope="module")
def texts(shared_data) -> list[str]:
    rng = random.Random(15)
    out = []
    for rel, key, n in (("llamafactory_c4_wiki_demo/c4_demo.jsonl", "text", 150),
                        ("trafilatura_eval_web_pages/extracted_text.trafilatura.jsonl.gz", "text", 150),
                        ("dclm_human_quality_dev/dev.jsonl", "text", 100),
                        ("us_state_of_the_union_addresses/sotu.jsonl.gz", "text", 15),
                        ("udhr_multilingual/udhr_texts.jsonl.gz", "text", 120)):
        path = shared_data / rel
        if not path.exists():
            continue
        rows = [r[key] for r in _read(path) if isinstance(r.get(key), str)]
        out += rng.sample(rows, min(n, len(rows)))
    if len(out) < 100:
        pytest.skip("too little real text found")
    return out


def _stats(op, texts):
    return {k: np.asarray(v) for k, v in op.compute_stats(pa.table({"text": texts})).items()}


def _mapped(name, texts, **params):
    run = run_op(name, [{"text": t} for t in texts], **params)
    return [r["text"] for r in run.kept]


def test_filters_match_their_sources(texts):
    s = _stats(LineLengthFilter(), texts)
    assert s["avg_line_length"].tolist() == [ref.dj_avg_line_length(t) for t in texts]
    assert s["max_line_length"].tolist() == [ref.dj_max_line_length(t) for t in texts]
    op = C4ParagraphFilter()
    keep = ~np.asarray(op.drop_reasons(op.compute_stats(pa.table({"text": texts})))["too_few_paragraphs"])
    assert keep.tolist() == [ref.c4_paragraph_keep(t) for t in texts]
    short = [t[:20_000] for t in texts]  # the Python references are slow on long pages
    np.testing.assert_allclose(_stats(CharacterRepetitionFilter(), short)["char_rep_ratio"],
                               [ref.dj_char_rep_ratio(t) for t in short], rtol=0, atol=1e-12)
    np.testing.assert_allclose(_stats(WordRepetitionFilter(), texts)["word_rep_ratio"],
                               [ref.dj_word_rep_ratio(t) for t in texts], rtol=0, atol=1e-12)


def test_mappers_match_their_sources(texts):
    assert _mapped("symbol_lines_remove", texts) == [ref.datatrove_symbol_lines(t) for t in texts]
    assert _mapped("punctuation_normalize", texts) == [ref.dj_punctuation(t) for t in texts]
    assert _mapped("long_words_remove", texts, max_len=20) == [ref.dj_remove_long_words(t, 1, 20) for t in texts]
    assert _mapped("repeated_sentences_remove", texts) == [ref.dj_remove_repeat_sentences(t) for t in texts]
    assert _mapped("repeated_sentences_remove", texts, lowercase=True, ignore_special_character=False) == \
        [ref.dj_remove_repeat_sentences(t, lowercase=True, ignore_special_character=False) for t in texts]
    pytest.importorskip("regex")
    assert _mapped("sentence_split", texts) == [ref.sentence_split_ref(t, ABBREVIATIONS) for t in texts]


@pytest.mark.parametrize("params", [{"max_len": 1000}, {"max_len": 500, "split_pattern": r"\n", "overlap_len": 50},
                                    {"max_len": 300, "split_pattern": r"[.!?。][ \n]*"}, {"max_len": None},
                                    {"max_len": 700, "split_pattern": None, "overlap_len": 100}], ids=str)
def test_chunks_match_data_juicer(texts, params):
    run = run_op("text_chunk", [{"id": f"d{i}", "text": t} for i, t in enumerate(texts)], **params)
    by: dict[str, list[str]] = {}
    for row in run.kept:
        by.setdefault(row["parent_id"], []).append(row["text"])
    assert [by.get(f"d{i}", []) for i in range(len(texts))] == [ref.dj_text_chunks(t, **params) for t in texts]
