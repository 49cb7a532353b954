"""Gopher quality and repetition rules: documents just inside and just outside each threshold
(the paper's defaults), and the compiled repetition stats against a plain-Python reference."""

from __future__ import annotations

import re
import string
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thresher.operators.common.tokenize import token_strings
from thresher.operators.filter.gopher import GopherQualityFilter, GopherRepetitionFilter
from thresher.pipeline.ops import first_failing


def first_reason(op, text: str):
    stats = op.compute_stats(pa.table({"text": pa.array([text], pa.string())}))
    masks = op.drop_reasons(stats)
    _, reason = first_failing(masks, 1)
    return list(masks)[reason[0]] if reason[0] >= 0 else None


def words(n: int, word: str = "apple") -> list[str]:
    return ["the", "and"] + [word] * (n - 2)


Q = GopherQualityFilter()


@pytest.mark.parametrize("inside,outside,reason", [
    (" ".join(words(50)), " ".join(words(49)), "gopher_short_doc"),
    (" ".join(words(100_000)), " ".join(words(100_001)), "gopher_long_doc"),
    # mean word length exactly 3 is kept; one 2-letter word pulls it below
    (" ".join(["the", "and"] + ["cat"] * 58), " ".join(["the", "and"] + ["cat"] * 57 + ["at"]), "gopher_below_avg_word_length"),
    # 50 words, mean exactly 10 (25 of 17 letters, 25 of 3) kept; one more long word pushes it over
    (" ".join(["the", "and"] + ["abcdefghijklmnopq"] * 25 + ["cat"] * 23),
     " ".join(["the", "and"] + ["abcdefghijklmnopq"] * 26 + ["cat"] * 22), "gopher_above_avg_word_length"),
    # '#' per token (the '#' tokens count too): 6 of 60 tokens = 0.1 kept; 7 of 61 dropped
    (" ".join(words(54)) + " #" * 6, " ".join(words(54)) + " #" * 7, "gopher_too_many_hashes"),
    # ellipses per token: 6 of 60 kept; 7 of 61 dropped (an ellipsis is a token, not a word)
    (" ".join(words(53) + ["…"] * 6 + ["end"]), " ".join(words(53) + ["…"] * 7 + ["end"]), "gopher_too_many_ellipsis"),
    # 9 of 10 lines start with a bullet = 0.9 kept; 10 of 10 dropped
    ("\n".join(["• " + " ".join(words(6))] * 9 + [" ".join(words(10))]), "\n".join(["• " + " ".join(words(6))] * 10),
     "gopher_too_many_bullet_lines"),
    ("\n".join([" ".join(words(8)) + "..."] * 3 + [" ".join(words(8))] * 7),
     "\n".join([" ".join(words(8)) + "..."] * 4 + [" ".join(words(8))] * 6), "gopher_too_many_end_ellipsis"),
    # tokens with a letter / all tokens: 40 of 50 = 0.8 kept; 40 of 50 words plus one comma = 0.784 dropped
    (" ".join(words(40) + ["123"] * 10), " ".join(words(40) + ["123"] * 10) + " ,", "gopher_below_alpha_words_ratio"),
    # two different stop words kept; one stop word twice is still one
    (" ".join(["the", "and"] + ["apple"] * 48), " ".join(["the", "the"] + ["apple"] * 48), "gopher_too_few_stop_words"),
])
def test_quality_rule_boundaries(inside, outside, reason):
    assert first_reason(Q, inside) is None
    assert first_reason(Q, outside) == reason


def test_quality_stats_on_prose():
    text = "The cat sat on the mat, and the dog barked. It's 3 o'clock!"
    stats = Q.compute_stats(pa.table({"text": [text]}))
    toks = token_strings(text)
    ws = [w for w in toks if any(c not in string.punctuation for c in w)]
    assert stats["num_words"][0].as_py() == len(ws)
    assert stats["mean_word_length"][0].as_py() == pytest.approx(np.mean([len(w) for w in ws]))
    assert stats["stop_words"][0].as_py() == len({"the", "and"} & set(toks))  # distinct, case-sensitive
    assert stats["alpha_words_ratio"][0].as_py() == pytest.approx(sum(any(c.isalpha() for c in w) for w in toks) / len(toks))


def test_thresholds_can_be_switched_off():
    op = GopherQualityFilter(GopherQualityFilter.Params(min_doc_words=None, min_stop_words=None))
    assert first_reason(op, "short text here") is None


# ----------------------------------------------------------------------------- repetition
def ref_repetition(text: str) -> dict[str, float]:
    """Gopher repetition stats in plain Python, from the paper's definitions (datatrove's reading)."""
    def dups(items):
        seen, n, chars = set(), 0, 0
        for x in items:
            if x in seen:
                n += 1
                chars += len(x)
            else:
                seen.add(x)
        return n, chars

    out = {}
    paras = re.split(r"\n{2,}", text.strip())
    n, c = dups(paras)
    out["dup_para_frac"], out["dup_para_char_frac"] = n / len(paras), c / len(text)
    lines = re.split(r"\n+", text)
    n, c = dups(lines)
    out["dup_line_frac"] = n / len(lines)
    out["dup_line_char_frac"] = c / len(text)
    ws = token_strings(text)
    for n in (2, 3, 4):
        grams = [" ".join(ws[i:i + n]) for i in range(len(ws) - n + 1)]
        if grams:
            g, cnt = Counter(grams).most_common(1)[0]
            out[f"top_{n}_gram_char_frac"] = len(g) * cnt / len(text)
        else:
            out[f"top_{n}_gram_char_frac"] = 0.0
    for n in range(5, 11):
        seen, chars, i = set(), 0, 0
        while i < len(ws) - n + 1:
            g = "".join(ws[i:i + n])
            if g in seen:
                chars += len(g)
                i += n
            else:
                seen.add(g)
                i += 1
        out[f"dup_{n}_gram_char_frac"] = chars / len(text)
    return out


vocab = st.sampled_from(["the", "cat", "sat", "on", "mat", "dog", ",", ".", "a", "big", "red"])
doc = st.lists(st.lists(vocab, min_size=1, max_size=12).map(" ".join), min_size=1, max_size=12).map(
    lambda lines: "\n".join(lines))


@settings(max_examples=150)
@given(st.lists(doc, min_size=1, max_size=5))
def test_repetition_stats_match_reference(docs):
    docs = [d for d in docs if d.strip()] or ["a cat"]
    stats = GopherRepetitionFilter().compute_stats(pa.table({"text": pa.array(docs, pa.string())}))
    for i, d in enumerate(docs):
        ref = ref_repetition(d)
        for k, v in ref.items():
            assert stats[k][i].as_py() == pytest.approx(v), (k, d)


@pytest.mark.parametrize("stat,thr,reason", [
    ("dup_para_frac", 0.30, "dup_para_frac"), ("dup_para_char_frac", 0.20, "dup_para_char_frac"),
    ("dup_line_frac", 0.30, "dup_line_frac"), ("dup_line_char_frac", 0.20, "dup_line_char_frac"),
    ("top_2_gram_char_frac", 0.20, "top_2_gram"), ("top_3_gram_char_frac", 0.18, "top_3_gram"),
    ("top_4_gram_char_frac", 0.16, "top_4_gram"), ("dup_5_gram_char_frac", 0.15, "duplicated_5_n_grams"),
    ("dup_6_gram_char_frac", 0.14, "duplicated_6_n_grams"), ("dup_7_gram_char_frac", 0.13, "duplicated_7_n_grams"),
    ("dup_8_gram_char_frac", 0.12, "duplicated_8_n_grams"), ("dup_9_gram_char_frac", 0.11, "duplicated_9_n_grams"),
    ("dup_10_gram_char_frac", 0.10, "duplicated_10_n_grams"),
])
def test_repetition_thresholds_are_table_a1(stat, thr, reason):
    op = GopherRepetitionFilter()
    names = list(GopherRepetitionFilter.stats)
    stats = {k: pa.array([0.0, 0.0]) for k in names}
    stats["empty"] = pa.array([False, False])
    stats[stat] = pa.array([thr, thr + 1e-9])  # exactly at the threshold is kept, just above is dropped
    masks = op.drop_reasons(stats)
    assert not masks[reason][0] and masks[reason][1]
    assert sum(m[1] for m in masks.values()) == 1


def test_repeated_lines_document_is_dropped_and_prose_kept():
    prose = ("The committee met on Tuesday to discuss the budget. Members raised concerns about the cost of "
             "repairs to the bridge, and the chair promised a report before the next meeting.")
    spam = "\n".join(["Buy cheap watches online today"] * 6 + ["Contact us"])
    op = GopherRepetitionFilter()
    assert first_reason(op, prose) is None
    assert first_reason(op, spam) == "dup_line_frac"
