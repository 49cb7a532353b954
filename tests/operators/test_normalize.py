"""Cleaning mappers: unicode and whitespace normalisation."""

from __future__ import annotations

import unicodedata

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from thresher.operators.clean.normalize import UnicodeNormalize, WhitespaceNormalize


def run(op, texts):
    return op.process(pa.table({"text": pa.array(texts, pa.string())}))["text"].to_pylist()


@pytest.mark.parametrize("form", ["NFC", "NFKC", "NFD", "NFKD"])
def test_unicode_forms_match_python(form):
    texts = ["e\u0301cole", "ﬁne ½ Ⅻ", "Ｆｕｌｌｗｉｄｔｈ", "plain"]
    op = UnicodeNormalize(UnicodeNormalize.Params(form=form))
    assert run(op, texts) == [unicodedata.normalize(form, t) for t in texts]


@given(st.lists(st.text(), max_size=20))
def test_unicode_normalize_is_idempotent_and_keeps_row_count(texts):
    op = UnicodeNormalize(UnicodeNormalize.Params(form="NFKC"))
    once = run(op, texts)
    assert len(once) == len(texts)
    assert run(op, once) == once


def test_whitespace_rules():
    op = WhitespaceNormalize()
    text = "  Title\r\n\r\n\r\n\r\nline\u00a0one \t with   spaces  \rline\u200b two\x07\n\n\n\nend  "
    assert run(op, [text]) == ["Title\n\nline one with spaces\nline two\n\nend"]


def test_whitespace_options_can_be_turned_off():
    op = WhitespaceNormalize(WhitespaceNormalize.Params(collapse_spaces=False, strip=False, remove_control=False,
                                                        max_blank_lines=0))
    assert run(op, ["a  b\x07\r\n\n\nc "]) == ["a  b\x07\nc "]


@given(st.lists(st.text(alphabet=st.characters(codec="utf-8")), max_size=20))
def test_whitespace_normalize_properties(texts):
    out = run(WhitespaceNormalize(), texts)
    assert len(out) == len(texts)
    for t in out:
        assert "\r" not in t and "  " not in t and "\n\n\n" not in t
        assert t == t.strip() or t.strip() == ""
    assert run(WhitespaceNormalize(), out) == out  # idempotent
