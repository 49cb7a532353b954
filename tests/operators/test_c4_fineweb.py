"""C4 line and page rules, FineWeb rules: just inside and just outside each threshold."""

from __future__ import annotations

import pyarrow as pa
import pytest

from thresher.operators.clean.c4_lines import C4LineFilter
from thresher.operators.filter.c4 import C4QualityFilter, sentence_counts
from thresher.operators.filter.fineweb import FineWebQualityFilter
from thresher.pipeline.ops import first_failing


def clean_lines(text: str, **params) -> tuple[str, dict]:
    op = C4LineFilter(C4LineFilter.Params(**params))
    out = op.process(pa.table({"text": [text]}))["text"][0].as_py()
    return out, op.take_counters()


def reasons(op, texts):
    stats = op.compute_stats(pa.table({"text": pa.array(texts, pa.string())}))
    masks = op.drop_reasons(stats)
    _, first = first_failing(masks, len(texts))
    return [list(masks)[j] if j >= 0 else None for j in first], stats


@pytest.mark.parametrize("line,kept", [
    ("This line has enough words.", True),
    ("Two words.", False),                       # fewer than 3 words
    ("Three whole words.", True),                # exactly 3 words
    ("No terminal punctuation here", False),
    ("Ends with a quote \"", True),
    ("Trails off into an ellipsis...", False),
    ("Please enable JavaScript to view this page.", False),
    ("This site uses cookies to improve your experience.", False),
    ("Read our Privacy Policy for more details.", False),
    ("A line with a " + "x" * 1000 + " word.", True),   # a 1000-character word is allowed
    ("A line with a " + "x" * 1001 + " word.", False),  # a 1001-character word is not
])
def test_c4_line_rules(line, kept):
    out, _ = clean_lines(line)
    assert (out == line.strip()) is kept


def test_c4_lines_citations_and_counters():
    text = "Paris is the capital of France.[1]\nMenu\nIt is on the Seine.[citation needed]\nCookies: this site uses cookies."
    out, counters = clean_lines(text)
    assert out == "Paris is the capital of France.\nIt is on the Seine."
    assert counters["lines_removed_no_terminal_punct"] == 1 and counters["lines_removed_policy"] == 1
    assert counters["lines_kept"] == 2


def test_c4_terminal_punct_rule_can_be_off():
    out, _ = clean_lines("Home page of the club\nA real sentence here.", filter_no_terminal_punct=False)
    assert out == "Home page of the club\nA real sentence here."


def test_sentence_counts():
    counts = sentence_counts(pa.array(["One. Two! Three?", "No end mark\nSecond line.", "", "Dr. Who said \"hi.\" Then left."]))
    assert counts.tolist() == [3, 2, 0, 3]


def test_c4_page_rules_boundaries():
    five = "One is here. Two is here. Three is here. Four is here. Five is here."
    four = "One is here. Two is here. Three is here. Four is here."
    got, _ = reasons(C4QualityFilter(), [five, four, five + " Lorem ipsum dolor.", five + " x = {1}."])
    assert got == [None, "too_few_sentences", "lorem_ipsum", "curly_bracket"]


def fw(texts, **params):
    return reasons(FineWebQualityFilter(FineWebQualityFilter.Params(**params)), texts)


def test_fineweb_line_punct_ratio():
    # 1 of 8 lines ends in punctuation = 0.125 > 0.12 kept; 1 of 9 = 0.111 dropped
    lines = ["a line without a stop that is long enough"]
    keep = "\n".join(["The first line ends here."] + lines * 7)
    drop = "\n".join(["The first line ends here."] + lines * 8)
    got, _ = fw([keep, drop], char_duplicates_ratio=None, short_line_thr=None, new_line_ratio=None)
    assert got == [None, "line_punct_ratio"]


def test_fineweb_short_line_ratio():
    long = "This is a long line that has well over thirty characters."
    short = "Short line."
    # 2 of 3 short = 0.667 < 0.67 kept; 3 of 4 = 0.75 dropped
    got, _ = fw(["\n".join([long, short, short]), "\n".join([long, short, short, short])], char_duplicates_ratio=None,
                new_line_ratio=None)
    assert got == [None, "short_line_ratio"]


def test_fineweb_char_dup_ratio():
    dup = "Same line."  # 10 characters, repeated once: 10 duplicated characters
    inside = "b" * 980 + "\n\n" + dup + "\n" + dup  # 10 / 1000 = 0.01: kept (datatrove 0.10 drops above)
    outside = "b" * 979 + "\n" + dup + "\n" + dup  # 10 / 999 > 0.01: dropped
    got, stats = fw([inside, outside], new_line_ratio=None, line_punct_thr=None, short_line_thr=None)
    assert got == [None, "char_dup_ratio"]
    assert stats["char_dup_ratio"].to_pylist() == pytest.approx([0.01, 10 / 999])


def test_fineweb_blank_lines_do_not_count_and_empty_pages_drop():
    text = "A sentence that ends well.\n\n\n   \nAnother one that also ends."
    got, stats = fw([text, "   \n  "], new_line_ratio=None, short_line_thr=None)
    assert got == [None, "empty"]
    assert stats["line_punct_ratio"][0].as_py() == 1.0 and stats["non_blank_lines"][0].as_py() == 2


def test_fineweb_list_ratio():
    # newlines per word (words are tokens, punctuation included, as datatrove counts them):
    # 3 newlines / 10 words = 0.3 kept; 4 / 10 = 0.4 dropped
    keep = "one two three\nfour five six\nseven eight\nnine ten"
    drop = "one two three\nfour five\nsix seven\neight nine\nten"
    got, _ = fw([keep, drop], short_line_thr=None, char_duplicates_ratio=None, line_punct_thr=None)
    assert got == [None, "list_ratio"]
