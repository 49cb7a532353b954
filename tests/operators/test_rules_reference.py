"""The compiled passes of the rule filters (Gopher, C4, FineWeb) against straightforward reference
definitions: plain Python per document, or the pyarrow/polars expressions the ops used before they
were compiled (issue 19 item 5). Texts are drawn to hit the edges (CR/LF mixes, runs of newlines,
Unicode whitespace, citation marks, case-folding characters such as U+0130 and the Kelvin sign),
and one test runs every op on real paragraphs (shared/data) when they are there."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thresher.operators.clean.c4_lines import CITATION, POLICY_SUBSTRINGS, C4LineFilter
from thresher.operators.common import words as words_mod
from thresher.operators.common.segments import line_marks, segment_dup_counts
from thresher.operators.common.tokenize import (
    FLAG_LETTER,
    FLAG_SYMBOL,
    fnv1a,
    token_counts,
    token_strings,
    tokenize,
)
from thresher.operators.common.words import Tokens
from thresher.operators.filter.c4 import SENTENCE_END, C4QualityFilter, page_marks, sentence_counts
from thresher.operators.filter.fineweb import STOP_CHARS, FineWebQualityFilter
from thresher.operators.filter.gopher import GOPHER_STOP_WORDS, GopherQualityFilter, GopherRepetitionFilter
from thresher.pipeline.ops import first_failing

from .test_gopher import ref_repetition

PIECES = ["the", "Cat", "sat", "on", "a", "mat", "JavaScript", "java script", "Lorem Ipsum", "LOREM İPSUM",
          "cookie policy", "COOKİE POLİCY", "\u212aelvin", "Terms of Use", "uses cookies", "[1]", "[12]", "[]",
          "[edit]", "[citation needed]", "[x]", "{", "#", "##", "...", "....", "…", "•", "- ", "e.g.", "U.S.",
          "don't", "3.5%", "http://x.org/a", "é", "über", "naïve", "—", "”", "’", ".", "!", "?", "?!", ".\"", ".)",
          "'", "\"", ",", " ", "  ", "\t", "\x0b", "\x0c", "\x1c", "\x1f", "\u00a0", "\u2003", "\u3000", "\u2028",
          "\n", "\n\n", "\n\n\n", "\r", "\r\n", "\n \n", " \n"]
text_st = st.lists(st.sampled_from(PIECES), max_size=40).map("".join)
texts_st = st.lists(text_st, min_size=1, max_size=6)


def column(texts):
    return pa.array(texts, pa.string())


# -- tokens --------------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(text_st)
def test_token_facts_match_their_definitions(text):
    """Each token's hash is FNV-1a of its bytes, its length its code points; ASCII tokens' flags
    say whether they hold a letter and whether they are punctuation only; counting alone gives the
    same number of tokens."""
    hashes, lens, flags, counts = tokenize(column([text]))
    toks = token_strings(text)
    assert counts.tolist() == [len(toks)] == token_counts(column([text])).tolist()
    assert hashes.tolist() == [fnv1a(t) for t in toks]
    assert lens.tolist() == [len(t) for t in toks]
    for t, f in zip(toks, flags.tolist(), strict=True):
        if t.isascii():
            assert bool(f & FLAG_LETTER) == any(c.isalpha() for c in t)
            assert bool(f & FLAG_SYMBOL) == (not any(c.isalnum() for c in t))


@settings(max_examples=100, deadline=None)
@given(texts_st, st.lists(st.booleans(), min_size=6, max_size=6))
def test_shared_tokens_are_the_tokens(texts, keep):
    """A filtered copy of the last column tokenized takes its tokens from it: the same as
    tokenizing it afresh; a column that is not one is tokenized."""
    col = column(texts)
    Tokens(col)  # remembered
    sub = col.filter(pa.array(keep[:len(texts)]))
    got = Tokens(sub)
    words_mod._LAST = None
    fresh = tokenize(sub)
    assert np.array_equal(got.hashes, fresh[0]) and np.array_equal(got.lens, fresh[1])
    assert np.array_equal(got.flags, fresh[2]) and np.array_equal(got.counts, fresh[3])
    other = column([t + " tail" for t in texts])  # not a filtered copy
    Tokens(col)
    assert np.array_equal(Tokens(other).counts, tokenize(other)[3])


# -- Gopher --------------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(texts_st)
def test_segment_duplicates_match_python(texts):
    def dups(items):
        seen, n, chars = set(), 0, 0
        for x in items:
            if x in seen:
                n, chars = n + 1, chars + len(x)
            seen.add(x)
        return len(items), n, chars

    col = column(texts + [None])
    paras = np.stack(segment_dup_counts(col, min_run=2, trim=True), 1).tolist()
    lines = np.stack(segment_dup_counts(col, min_run=1), 1).tolist()
    nonblank = np.stack(segment_dup_counts(col, min_run=1, skip_blank=True), 1).tolist()
    for i, t in enumerate(texts):
        assert paras[i] == list(dups(re.split(r"\n{2,}", t.strip())))
        assert lines[i] == list(dups(re.split(r"\n+", t)))
        assert nonblank[i] == list(dups([x for x in t.split("\n") if x.strip()]))
    assert paras[-1] == lines[-1] == nonblank[-1] == [0, 0, 0]


@settings(max_examples=200, deadline=None)
@given(texts_st)
def test_line_marks_match_the_polars_expressions(texts):
    col = column(texts + [None])
    t = pc.replace_substring_regex(col, r"(\r\n|\r|\n)$", "")
    lines = pl.from_arrow(pc.split_pattern_regex(t, r"\r\n|\r|\n"))
    bullets = lines.list.eval(pl.element().str.strip_chars_start().str.contains(r"^[•\-]")).list.sum().to_list()
    ells = lines.list.eval(pl.element().str.strip_chars_end().str.contains(r"(\.\.\.|…)$")).list.sum().to_list()
    got = line_marks(col)
    for i in range(len(texts)):
        assert got[i].tolist() == [len(lines[i]), bullets[i], ells[i], texts[i].count("#"),
                                   texts[i].count("...") + texts[i].count("…")]
    assert got[-1].tolist() == [1, 0, 0, 0, 0]  # a null document reads as '' (its ratios are 0)


def ref_quality(text: str) -> dict:
    """Gopher quality stats from the tokens (hash, length, flags) by plain Python, lines by str."""
    hashes, lens, flags, _ = tokenize(column([text]))
    stop = {fnv1a(w) for w in GOPHER_STOP_WORDS}
    words = [n for n, f in zip(lens.tolist(), flags.tolist(), strict=True) if not f & FLAG_SYMBOL]
    n_tok = len(lens)
    body = text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith(("\r", "\n")) else text
    lines = re.split(r"\r\n|\r|\n", body)
    ws = " \t\n\x0b\x0c\r\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
         "\u2028\u2029\u202f\u205f\u3000"  # Rust's char::is_whitespace (polars' strip_chars)
    ratio = lambda a, b: a / b if b else 0.0  # noqa: E731
    return {
        "num_words": len(words), "mean_word_length": ratio(sum(words), len(words)),
        "hash_ratio": ratio(text.count("#"), n_tok), "ellipsis_ratio": ratio(text.count("...") + text.count("…"), n_tok),
        "bullet_lines_ratio": ratio(sum(x.lstrip(ws)[:1] in ("•", "-") for x in lines), len(lines)),
        "ellipsis_lines_ratio": ratio(sum(x.rstrip(ws).endswith(("...", "…")) for x in lines), len(lines)),
        "alpha_words_ratio": ratio(sum(bool(f & FLAG_LETTER) for f in flags.tolist()), n_tok),
        "stop_words": len(stop & set(hashes.tolist())),
    }


@settings(max_examples=150, deadline=None)
@given(texts_st)
def test_gopher_quality_stats_match_reference(texts):
    stats = GopherQualityFilter().compute_stats(pa.table({"text": column(texts)}))
    for i, t in enumerate(texts):
        for k, v in ref_quality(t).items():
            assert stats[k][i].as_py() == v, (k, t)


@settings(max_examples=150, deadline=None)
@given(texts_st)
def test_gopher_repetition_stats_match_reference(texts):
    stats = GopherRepetitionFilter().compute_stats(pa.table({"text": column(texts)}))
    for i, t in enumerate(texts):
        for k, v in ref_repetition(t).items() if t else ():
            assert stats[k][i].as_py() == pytest.approx(v, rel=1e-12, abs=0), (k, t)
        assert stats["empty"][i].as_py() == (t == "")


# -- C4 ------------------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(texts_st)
def test_c4_page_stats_match_the_arrow_expressions(texts):
    col = column(texts + [None])
    flat = pc.list_flatten(pc.split_pattern(col, "\n"))
    parent = pc.list_parent_indices(pc.split_pattern(col, "\n")).to_numpy()
    ends = pc.count_substring_regex(flat, SENTENCE_END).to_numpy(zero_copy_only=False)
    nonempty = pc.utf8_length(pc.utf8_trim_whitespace(flat)).to_numpy(zero_copy_only=False) > 0
    ref = np.bincount(parent, weights=np.where(nonempty, np.maximum(ends, 1), 0), minlength=len(col))
    assert sentence_counts(col).tolist() == ref.astype(np.int64).tolist()
    lorem, curly = page_marks(col)
    assert lorem.equals(pc.match_substring(pc.utf8_lower(col), "lorem ipsum"))
    assert curly.equals(pc.match_substring(col, "{"))


def test_lower_case_folding_into_ascii_is_as_arrow():
    """The compiled lower-casing knows every character Arrow's utf8_lower turns into ASCII."""
    cps = [c for c in range(128, 0x110000) if not 0xD800 <= c <= 0xDFFF]
    low = pc.utf8_lower(pa.array([chr(c) for c in cps])).to_pylist()
    assert sorted(c for c, x in zip(cps, low, strict=True) if any(ord(ch) < 128 for ch in x)) == [0x130, 0x212A]


def ref_c4_lines(text: str | None, max_word=1000, citations=True, terminal=True, min_words=3) -> tuple[str, Counter]:
    """C4's line rules one line at a time (lower-casing by Arrow's utf8_lower, as the op)."""
    removed: Counter = Counter()
    kept = []
    for raw in ([] if text is None else text.split("\n")):
        line = raw.strip()
        ws = line.split()
        longest = max((len(w) for w in ws), default=0)
        if citations:
            line = re.sub(CITATION, "", line, flags=re.ASCII)  # RE2: \d is ASCII
        low = pc.utf8_lower(pa.array([line])).to_pylist()[0]
        if max_word is not None and longest > max_word:
            removed["lines_removed_too_long_word"] += 1
        elif terminal and not (line.endswith((".", "?", "!", '"', "'")) and not line.endswith("...")):
            removed["lines_removed_no_terminal_punct"] += 1
        elif min_words is not None and len(ws) < min_words:
            removed["lines_removed_too_few_words"] += 1
        elif "javascript" in low:
            removed["lines_removed_javascript"] += 1
        elif any(p in low for p in POLICY_SUBSTRINGS):
            removed["lines_removed_policy"] += 1
        else:
            kept.append(line)
    removed["lines_kept"] += len(kept)
    return "\n".join(kept).strip(), +removed


@settings(max_examples=200, deadline=None)
@given(texts_st, st.booleans(), st.sampled_from([None, 2, 1000]), st.sampled_from([None, 3]))
def test_c4_line_filter_matches_reference(texts, terminal, max_word, min_words):
    texts = texts + [None]
    op = C4LineFilter(C4LineFilter.Params(filter_no_terminal_punct=terminal, max_word_length=max_word,
                                          min_words_per_line=min_words))
    out = op.process(pa.table({"text": column(texts)}))["text"]
    counters: Counter = Counter()
    for i, t in enumerate(texts):
        ref, c = ref_c4_lines(t, max_word=max_word, terminal=terminal, min_words=min_words)
        counters.update(c)
        assert out[i].as_py() == ref, t
    assert op.take_counters() == dict(counters)
    assert out.type == pa.string()


# -- FineWeb -------------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(texts_st)
def test_fineweb_stats_match_reference(texts):
    stats = FineWebQualityFilter().compute_stats(pa.table({"text": column(texts)}))
    for i, t in enumerate(texts):
        lines = [x for x in t.split("\n") if x.strip()]
        seen, dup_chars = set(), 0
        for x in lines:
            dup_chars += len(x) if x in seen else 0
            seen.add(x)
        n_words = len(token_strings(t))
        ratio = lambda a, b: a / b if b else 0.0  # noqa: E731
        assert stats["non_blank_lines"][i].as_py() == len(lines)
        assert stats["line_punct_ratio"][i].as_py() == ratio(sum(x.endswith(STOP_CHARS) for x in lines), len(lines))
        assert stats["short_line_ratio"][i].as_py() == ratio(sum(len(x) <= 30 for x in lines), len(lines))
        assert stats["char_dup_ratio"][i].as_py() == ratio(dup_chars, len(t) - t.count("\n"))
        assert stats["list_ratio"][i].as_py() == ratio(t.count("\n"), n_words)


# -- every op on real paragraphs ------------------------------------------------------------------
MAKE_CORPUS = Path(__file__).resolve().parents[3] / "shared" / "tools" / "make_corpus.py"


@pytest.fixture(scope="module")
def real_docs(tmp_path_factory) -> list[str]:
    if not MAKE_CORPUS.is_file():
        pytest.skip(f"{MAKE_CORPUS} not found")
    out = tmp_path_factory.mktemp("corpus") / "c.jsonl"
    subprocess.run([sys.executable, str(MAKE_CORPUS), "--n", "400", "--out", str(out)], check=True,
                   capture_output=True)
    return pl.read_ndjson(out)["text"].to_list()


def test_every_rule_op_matches_reference_on_real_paragraphs(real_docs):
    col = column(real_docs)
    table = pa.table({"text": col})
    rep = GopherRepetitionFilter().compute_stats(table)
    qual = GopherQualityFilter().compute_stats(table.filter(pa.array([i % 3 != 0 for i in range(len(col))])))
    for i, t in enumerate(real_docs):
        for k, v in ref_repetition(t).items():
            assert rep[k][i].as_py() == pytest.approx(v, rel=1e-12, abs=0), (k, i)
    for j, t in enumerate(t for i, t in enumerate(real_docs) if i % 3 != 0):
        assert {k: qual[k][j].as_py() for k in qual} == ref_quality(t)
    op = C4LineFilter(C4LineFilter.Params(filter_no_terminal_punct=False))
    cleaned = op.process(table)["text"]
    refs = [ref_c4_lines(t, terminal=False) for t in real_docs]
    assert cleaned.to_pylist() == [r[0] for r in refs]
    assert op.take_counters() == dict(sum((r[1] for r in refs), Counter()))
    c4 = C4QualityFilter()
    reasons = c4.drop_reasons(c4.compute_stats(pa.table({"text": cleaned})))
    keep, _ = first_failing(reasons, len(cleaned))
    ref_keep = [("lorem ipsum" not in pc.utf8_lower(pa.array([t])).to_pylist()[0]) and "{" not in t
                and sum(max(len(re.findall(r"[.!?]+[\"'”’)\]]*(?:[\t\n\f\r ]|$)", x)), 1) for x in t.split("\n")
                        if x.strip()) >= 5 for t in cleaned.to_pylist()]
    assert keep.tolist() == ref_keep
