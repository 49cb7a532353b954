"""The compiled tokenizer: spaCy-like rules on examples, and invariants on arbitrary text."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from thresher.operators.common.tokenize import (
    char_class_counts,
    fnv1a,
    string_hashes,
    token_strings,
    tokenize,
    whitespace_word_counts,
    word_counts_and_longest,
)


@pytest.mark.parametrize("text,tokens", [  # what spaCy's blank-English tokenizer gives
    ("Hello, world!", ["Hello", ",", "world", "!"]),
    ("It's don't I'll cannot", ["It", "'s", "do", "n't", "I", "'ll", "can", "not"]),
    ("an e-mail from the U.S. today", ["an", "e", "-", "mail", "from", "the", "U.S.", "today"]),
    ("costs $1,000.50 (about 3.5%)", ["costs", "$", "1,000.50", "(", "about", "3.5", "%", ")"]),
    ("see https://example.com/a?b=1 now", ["see", "https://example.com/a?b=1", "now"]),
    ("wait... what… end.Next", ["wait", "...", "what", "…", "end", ".", "Next"]),
    ("example.com and e.g. that", ["example.com", "and", "e.g.", "that"]),
    ("Mr. Smith left at 5. OK.", ["Mr.", "Smith", "left", "at", "5", ".", "OK", "."]),
    ("----- /usr 2010-2020 a_b", ["-----", "/usr", "2010", "-", "2020", "a_b"]),
    ('border="0" said: "go."', ["border=\"0", '"', "said", ":", '"', "go", ".", '"']),
    ("Café naïve 中文 🙂🙂", ["Café", "naïve", "中文", "🙂", "🙂"]),
    ("  \n\t ", []),
])
def test_tokens(text, tokens):
    assert token_strings(text) == tokens


def test_flags_and_hashes():
    h, lens, flags, counts = tokenize(pa.array(["a , é 123 ..."]))
    assert counts.tolist() == [5] and lens.tolist() == [1, 1, 1, 3, 3]
    assert (flags & 1).tolist() == [0, 1, 0, 0, 1]  # ',' and '...' are made of punctuation only
    assert ((flags & 2) > 0).tolist() == [True, False, True, False, False]  # has a letter
    assert int(h[0]) == fnv1a("a") and int(h[2]) == fnv1a("é")


@given(st.lists(st.text(), max_size=8))
def test_tokens_cover_all_non_space_text(texts):
    arr = pa.array(texts, pa.string())
    _h, lens, _f, counts = tokenize(arr)
    assert len(counts) == len(texts) and counts.sum() == len(lens)
    # tokens never overlap and never include whitespace: their lengths add up to the non-space chars
    cc = char_class_counts(arr)
    assert lens.sum() <= (cc["total"] - cc["space"]).sum()


@given(st.lists(st.text(alphabet=st.characters(codec="utf-8")), max_size=10))
def test_whitespace_words_match_python_split(texts):
    arr = pa.array(texts, pa.string())
    ours = whitespace_word_counts(arr)
    assert ours.tolist() == [len(t.split()) for t in texts]
    counts, longest = word_counts_and_longest(arr)
    assert np.array_equal(counts, ours)
    assert longest.tolist() == [max((len(w) for w in t.split()), default=0) for t in texts]


def test_string_hashes_are_fnv1a_of_utf8():
    assert string_hashes(pa.array(["", "abc", "é"])).tolist() == [fnv1a(""), fnv1a("abc"), fnv1a("é")]


def test_char_classes():
    c = char_class_counts(pa.array(["ab 12, é!"]))
    assert (c["letter"][0], c["digit"][0], c["space"][0], c["punct"][0], c["total"][0]) == (3, 2, 2, 2, 9)
