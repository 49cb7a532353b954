"""Length filter: rows just inside and just outside each bound."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from thresher.operators.filter.length import TextLengthFilter
from thresher.pipeline.ops import first_failing


def decide(params, texts):
    op = TextLengthFilter(TextLengthFilter.Params(**params))
    stats = op.compute_stats(pa.table({"text": pa.array(texts, pa.string())}))
    reasons = op.drop_reasons(stats)
    _, first = first_failing(reasons, len(texts))
    return stats, [list(reasons)[j] if j >= 0 else None for j in first]


def test_stats_count_code_points_and_words():
    stats, _ = decide({}, ["héllo  wörld\n", "", "一二三 four"])
    assert stats["num_chars"].to_pylist() == [13, 0, 8]
    assert stats["num_words"].to_pylist() == [2, 0, 2]


@pytest.mark.parametrize("bound,inside,outside,reason", [
    ({"min_words": 3}, "a b c", "a b", "too_few_words"),
    ({"max_words": 3}, "a b c", "a b c d", "too_many_words"),
    ({"min_chars": 5}, "abcde", "abcd", "too_few_chars"),
    ({"max_chars": 5}, "abcde", "abcdef", "too_many_chars"),
])
def test_just_inside_and_just_outside(bound, inside, outside, reason):
    _, first = decide(bound, [inside, outside])
    assert first == [None, reason]


def test_first_failing_rule_is_the_reason():
    _, first = decide({"min_chars": 100, "min_words": 100}, ["short"])
    assert first == ["too_few_chars"]


def test_keep_is_the_complement_of_any_reason():
    op = TextLengthFilter(TextLengthFilter.Params(min_words=2, max_chars=10))
    stats = op.compute_stats(pa.table({"text": ["a", "a b", "a b c d e f"]}))
    assert np.array_equal(op.keep(stats), [False, True, False])


def test_bounds_validated():
    with pytest.raises(ValidationError):
        TextLengthFilter.Params(min_chars=-1)
    with pytest.raises(ValidationError):
        TextLengthFilter.Params(min_words=5, max_words=4)
