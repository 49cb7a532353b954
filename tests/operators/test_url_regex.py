"""url_filter (blocklists of domains, URLs and URL words, as datatrove's URLFilter), regex_filter and
regex_replace (RE2: linear time) and specific_chars_remove."""

from __future__ import annotations

import gzip
import json
import re
import time

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import read_output, run_recipe, write_jsonl
from thresher.operators.clean.replace import DJ_SPECIFIC_CHARS, RegexReplace, SpecificCharsRemove
from thresher.operators.filter.regex import RegexFilter
from thresher.operators.filter.url import (
    EXAMPLE_BLOCKLIST,
    StringSet,
    UrlFilter,
    domain_hosts,
    read_list,
    url_hosts,
    url_parts,
)
from thresher.pipeline.errors import RecipeError, ThresherError
from thresher.pipeline.ops import first_failing
from thresher.pipeline.recipe import parse_recipe
from thresher.testing import check_op, run_op


def decide(op, rows: dict) -> list[str | None]:
    """Each row's drop reason (None: kept), through the decision the runner makes."""
    op.ensure_setup()
    table = pa.table(rows)
    stats = {k: pa.array(v) if not isinstance(v, (pa.Array, pa.ChunkedArray)) else v
             for k, v in op.compute_stats(table).items()}
    masks = op.drop_reasons(stats)
    _, first = first_failing(masks, table.num_rows)
    return [list(masks)[j] if j >= 0 else None for j in first]


def url_op(**params) -> UrlFilter:
    return UrlFilter(UrlFilter.Params(**params))


def recipe_error(body: str) -> str:
    with pytest.raises(RecipeError) as e:
        parse_recipe("input: {paths: [a.jsonl]}\noutput: {path: o}\nprocess:\n  - " + body + "\n")
    return str(e.value)


@pytest.mark.parametrize("op", [UrlFilter, RegexFilter, RegexReplace, SpecificCharsRemove])
def test_keeps_the_op_contract(op):
    check_op(op)
    if op is not UrlFilter:  # (url_filter's example names UT1 files that are not here)
        check_op(op, [{"text": "◆ Lorem ipsum [1]"}, {"text": "please enable JavaScript"}, {"text": None}])


# ----------------------------------------------------------------------------- url_filter
def test_url_parts_normalise_host_and_url():
    urls = pa.array(["https://user:pw@WWW.Example.COM:8080/a/B/?q=1#top", "example.com/a/", "//x.Y.org.",
                     "ftp://www.example.net", None, "", "  http://spaced.org/p  "])
    host, key = url_parts(urls)
    assert host.to_pylist() == ["example.com", "example.com", "x.y.org", "example.net", None, "", "spaced.org"]
    assert key.to_pylist() == ["example.com/a/B/?q=1", "example.com/a", "x.y.org", "example.net", None, "", "spaced.org/p"]
    assert url_hosts(urls).to_pylist() == host.to_pylist()


def test_domain_entries_are_normalised_like_hosts():
    entries = pa.array(["Example.COM", "*.example.net", ".example.org.", "www.shop.example", "https://u@Site.org:8/x",
                        "  spaced.test  ", "*.", "", None])
    assert domain_hosts(entries).to_pylist() == ["example.com", "example.net", "example.org", "shop.example",
                                                 "site.org", "spaced.test"]


def test_banned_domain_bans_its_subdomains_only():
    op = url_op(banned_domains=["Example.com", "*.shop.test", "adult.example.org."])
    urls = ["http://example.com", "https://a.b.EXAMPLE.com:443/x", "http://user@www.example.com/",
            "http://notexample.com", "http://example.com.evil.org/", "http://example.org", "http://adult.example.org/x",
            "http://x.adult.example.org", "http://shop.test", "http://cart.shop.test", "http://test"]
    assert decide(op, {"url": urls}) == ["banned_domain"] * 3 + [None, None, None] + ["banned_domain"] * 4 + [None]


def test_banned_url_is_matched_after_normalising():
    op = url_op(banned_urls=["site.org/bad/page", "https://other.org/x?id=1"])
    urls = ["https://www.site.org/bad/page/", "http://SITE.org:80/bad/page#frag", "https://site.org/bad/page2",
            "https://site.org/BAD/page", "http://other.org/x?id=1", "http://other.org/x?id=2"]
    assert decide(op, {"url": urls}) == ["banned_url", "banned_url", None, None, "banned_url", None]


def test_hard_soft_and_sub_words():
    op = url_op(banned_words=["porn", "free-cams"], soft_banned_words=["hot", "girls", "live"],
                banned_subwords=["casino"])
    urls = ["http://free-PORN.net/", "http://pornography.net", "http://freecams.net", "http://x.net/free-cams",
            "http://hot-girls.net", "http://hot.net/hot/hot", "http://live.net/girls?hot=1", "http://bestcasinos.net",
            "http://example.net/best-cas-ino"]
    assert decide(op, {"url": urls}) == [
        "banned_word", None, "banned_word", None,  # words are whole tokens; "free-cams" is normalised to "freecams"
        "soft_banned_words", None, "soft_banned_words",  # distinct soft words: "hot" three times counts once
        "banned_subword", "banned_subword",  # subwords: on the URL with everything but letters and digits removed
    ]


def test_soft_word_threshold_boundary():
    urls = ["http://hot.net", "http://hot-girls.net", "http://hot-girls-live.net"]
    stats = url_op(soft_banned_words=["hot", "girls", "live"]).compute_stats(pa.table({"url": urls}))
    assert list(stats["soft_banned_words"]) == [1, 2, 3]
    for threshold, want in ((1, [True] * 3), (2, [False, True, True]), (3, [False, False, True])):
        got = decide(url_op(soft_banned_words=["hot", "girls", "live"], soft_word_threshold=threshold), {"url": urls})
        assert [g == "soft_banned_words" for g in got] == want


def test_rows_without_a_url_are_kept_or_dropped():
    rows = {"url": ["http://example.com", None, "", "   ", "http://ok.org"]}
    assert decide(url_op(banned_domains=["example.com"]), rows) == ["banned_domain", None, None, None, None]
    got = decide(url_op(banned_domains=["example.com"], missing_url="drop"), rows)
    assert got == ["banned_domain", "missing_url", "missing_url", "missing_url", None]
    # a batch without the column: every row lacks a URL
    assert decide(url_op(banned_domains=["example.com"]), {"text": ["a", "b"]}) == [None, None]
    assert decide(url_op(missing_url="drop", url_key="link"), {"url": ["http://a.org"]}) == ["missing_url"]


def test_nothing_is_banned_by_default():
    urls = ["http://porn.example.com", "http://casino.net", "http://xxx.org"]
    assert decide(url_op(), {"url": urls}) == [None, None, None]


def test_lists_from_files_with_comments_and_gzip(tmp_path):
    domains = tmp_path / "domains"
    domains.write_text("# a comment\n\nexample.com\n  spaced.org  \n#notbanned.org\n")
    urls = tmp_path / "urls.gz"
    urls.write_bytes(gzip.compress(b"# UT1-style entries\nsite.org/bad\n"))
    words = tmp_path / "words.txt"
    words.write_text("porn\n")
    assert read_list([str(domains)], ["given.net"]).to_pylist() == ["given.net", "example.com", "spaced.org"]
    op = url_op(banned_domains_files=[str(domains)], banned_domains=["extra.net"], banned_urls_files=[str(urls)],
                soft_banned_words_files=[str(words)], soft_banned_words=["hot"])
    got = decide(op, {"url": ["http://a.example.com", "http://spaced.org", "http://notbanned.org", "http://extra.net",
                              "http://site.org/bad/", "http://hot-porn.net", "http://porn.net"]})
    assert got == ["banned_domain", "banned_domain", None, "banned_domain", "banned_url", "soft_banned_words", None]


def test_a_missing_list_file_stops_the_run_before_any_data(tmp_path):
    op = url_op(banned_domains_files=[str(tmp_path / "nope.txt")])
    with pytest.raises(ThresherError, match="banned_domains_files: '.*nope.txt' does not exist"):
        op.prepare()
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "text": "x", "url": "http://a.org"}])
    with pytest.raises(ThresherError, match="does not exist"):
        run_recipe([src], tmp_path / "out", [{"url_filter": {"banned_urls_files": [str(tmp_path / "gone")]}}])
    assert not (tmp_path / "out" / "data").exists()


def test_the_shipped_example_list(tmp_path):
    from pathlib import Path

    text = EXAMPLE_BLOCKLIST.read_text(encoding="utf-8")
    assert "SOURCE:" in text and "RFC 2606" in text and "UT1" in text
    hosts = domain_hosts(read_list([str(EXAMPLE_BLOCKLIST)])).to_pylist()
    assert hosts == ["example.com", "example.net", "adult.example.org", "shop.example", "invalid"]
    # only names reserved for documentation (RFC 2606 / RFC 6761) are listed
    reserved = ("example.com", "example.net", "example.org", "test", "example", "invalid", "localhost")
    assert all(any(h == r or h.endswith("." + r) for r in reserved) for h in hosts)
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert '"thresher.operators.filter" = ["data/*.txt"]' in pyproject  # shipped in the wheel
    op = url_op(banned_domains_files=[str(EXAMPLE_BLOCKLIST)])
    got = decide(op, {"url": ["https://www.example.com/x", "http://a.b.example.net", "http://example.org",
                              "http://adult.example.org/p", "http://shop.example", "http://x.invalid", "http://wikipedia.org"]})
    assert got == ["banned_domain", "banned_domain", None, "banned_domain", "banned_domain", "banned_domain", None]


def test_url_filter_in_a_recipe(tmp_path):
    domains = tmp_path / "domains.txt"
    domains.write_text("# test list\nbad.example\n")
    rows = [{"id": 1, "text": "a", "url": "https://news.good.example/story"},
            {"id": 2, "text": "b", "url": "http://cdn.bad.example/x"},
            {"id": 3, "text": "c", "url": "http://good.example/porn-videos"},
            {"id": 4, "text": "d", "url": "http://hot-live.good.example/"},
            {"id": 5, "text": "e"},
            {"id": 6, "text": "f", "url": "http://good.example/page"}]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    res = run_recipe([src], tmp_path / "out", [{"url_filter": {
        "banned_domains_files": [str(domains)], "banned_words": ["porn"], "soft_banned_words": ["hot", "live"]}}])
    assert [r["id"] for r in read_output(tmp_path / "out")] == [1, 5, 6]
    assert res.output_rows == 3
    led = json.loads((tmp_path / "out" / "ledger.json").read_text())
    assert led["ops"]["url_filter"]["dropped"] == {"banned_domain": 1, "banned_word": 1, "soft_banned_words": 1}
    assert led["balanced"]


LABEL = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=6).filter(lambda s: s != "www")


def _mixed_case(data, s: str) -> str:
    flips = data.draw(st.lists(st.booleans(), min_size=len(s), max_size=len(s)))
    return "".join(c.upper() if f else c for c, f in zip(s, flips, strict=True))


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_property_a_url_is_dropped_iff_its_host_or_a_parent_is_banned(data):
    pool = data.draw(st.lists(LABEL, min_size=2, max_size=5, unique=True))
    hosts = data.draw(st.lists(st.lists(st.sampled_from(pool), min_size=1, max_size=4), min_size=1, max_size=12))
    banned = data.draw(st.lists(st.lists(st.sampled_from(pool), min_size=1, max_size=3), max_size=4))
    entries = [data.draw(st.sampled_from(["", "*.", "www.", "."])) + _mixed_case(data, ".".join(b))
               + data.draw(st.sampled_from(["", "."])) for b in banned]
    urls = []
    for labels in hosts:
        urls.append(data.draw(st.sampled_from(["http://", "https://", "//", "", "HTTP://"]))
                    + data.draw(st.sampled_from(["", "user@", "u:p@"]))
                    + data.draw(st.sampled_from(["", "www.", "WWW."]))
                    + _mixed_case(data, ".".join(labels)) + data.draw(st.sampled_from(["", "."]))
                    + data.draw(st.sampled_from(["", ":8080"]))
                    + data.draw(st.sampled_from(["", "/", "/path/Page.html", "/?q=a.b#frag"])))
    banned_set = {".".join(b) for b in banned}
    want = ["banned_domain" if any(".".join(labels[i:]) in banned_set for i in range(len(labels))) else None
            for labels in hosts]
    assert decide(url_op(banned_domains=entries), {"url": urls}) == want


@settings(max_examples=100, deadline=None)
@given(members=st.lists(st.text(max_size=8), max_size=30),
       others=st.lists(st.text(max_size=8), max_size=30), nulls=st.integers(0, 3))
def test_property_string_set_is_set_membership(members, others, nulls):
    s = StringSet(members)
    queries = members + others + [None] * nulls
    assert s.contains(pa.array(queries, pa.string())).tolist() == [q is not None and q in set(members) for q in queries]
    chunked = pa.chunked_array([pa.array(queries[:3], pa.string()), pa.array(queries[3:], pa.large_string()).cast(pa.string())])
    assert s.contains(chunked).tolist() == [q is not None and q in set(members) for q in queries]


# ----------------------------------------------------------------------------- regex_filter
def test_regex_filter_drop_and_keep_modes():
    texts = ["Lorem ipsum dolor", "please enable JavaScript", "fine text", None]
    assert decide(RegexFilter(RegexFilter.Params(patterns=["(?i)lorem", "javascript"])), {"text": texts}) == \
        ["regex_match", None, None, None]
    op = RegexFilter(RegexFilter.Params(patterns=["lorem", "javascript"], ignore_case=True))
    assert decide(op, {"text": texts}) == ["regex_match", "regex_match", None, None]
    op = RegexFilter(RegexFilter.Params(patterns=["(?i)lorem", "(?i)javascript"], mode="keep"))
    assert decide(op, {"text": texts}) == [None, None, "regex_no_match", "regex_no_match"]


def test_regex_filter_named_patterns_record_the_first_match():
    op = RegexFilter(RegexFilter.Params(patterns={"lorem_ipsum": "(?i)lorem ipsum", "javascript_notice": "(?i)javascript",
                                                  "anything": "."}))
    texts = ["Lorem ipsum and JavaScript", "enable javascript", "ok", ""]
    assert decide(op, {"text": texts}) == ["lorem_ipsum", "javascript_notice", "anything", None]
    stats = op.compute_stats(pa.table({"text": texts}))
    assert list(stats["matched_patterns"]) == [3, 2, 1, 0] and list(stats["first_match"]) == [0, 1, 2, -1]


def test_regex_filter_on_another_column_and_anchors():
    op = RegexFilter(RegexFilter.Params(patterns=[r"^\d{3}$", r"(?m)^TODO"], field="code"))
    got = decide(op, {"text": ["a", "b", "c", "d"], "code": ["123", "1234", "x\nTODO: y", "xTODO"]})
    assert got == ["regex_match", None, "regex_match", None]


def test_regex_filter_runs_in_linear_time_on_a_catastrophic_pattern():
    # With Python's re, (a+)+$ on "a"*n + "b" backtracks through ~2**n ways to split the a's:
    # re.search(r"(a+)+$", "a" * 30 + "b") already takes minutes. RE2 answers in one linear pass.
    texts = ["a" * 200_000 + "b", "a" * 50 + "b" + "a" * 10, "aaaa", "b"]
    t0 = time.perf_counter()
    got = decide(RegexFilter(RegexFilter.Params(patterns=["(a+)+$"])), {"text": texts})
    assert got == [None, "regex_match", "regex_match", None]
    assert time.perf_counter() - t0 < 60  # a guard against a hang, not a benchmark


@pytest.mark.parametrize(("pattern", "why"), [
    (r"(a)\1", "invalid escape sequence"), ("a(?=b)", "invalid perl operator"), ("(?<=a)b", "invalid perl operator"),
    ("(?!x)y", "invalid perl operator"), ("a++", "bad repetition operator"), ("[ab", "missing ]"), ("(ab", "missing )"),
])
def test_regex_filter_refuses_patterns_re2_cannot_run(pattern, why):
    msg = recipe_error(f"regex_filter: {{patterns: [{json.dumps(pattern)}]}}")
    assert len(msg.splitlines()) == 1
    assert f"pattern '{pattern}' is not valid RE2 ({why}" in msg and "no backreferences, lookahead/lookbehind" in msg
    assert "'regex_filter'" in msg and "parameter 'patterns'" in msg


def test_regex_filter_parameter_errors():
    assert "snake_case" in recipe_error("regex_filter: {patterns: {Bad Name: x}}")
    assert "at least one pattern" in recipe_error("regex_filter: {patterns: []}")
    assert "parameter 'patterns' is required" in recipe_error("regex_filter: {}")
    assert "mode" in recipe_error("regex_filter: {patterns: [x], mode: drop_all}")


# ----------------------------------------------------------------------------- regex_replace
def test_regex_replace_applies_in_order_with_groups_and_counts():
    run = run_op("regex_replace", [{"text": "see [1] and [22]. Click HERE now"}, {"text": None}, {"text": "plain"}],
                 replacements=[{"pattern": r"\[(\d+)\]", "replacement": r"(\1)"},
                               {"pattern": "click here", "replacement": "", "ignore_case": True},
                               {"pattern": r"\((\d+)\)", "replacement": r"<\1>"},  # sees the first one's output
                               {"pattern": r"\s+now$", "replacement": r"\\0"}])
    assert [r["text"] for r in run.kept] == ["see <1> and <22>.\\0", None, "plain"]
    assert run.ledger_entry["counters"] == {"replacements": 6, "rows_changed": 1}


def test_regex_replace_on_another_column_leaves_text():
    run = run_op("regex_replace", [{"text": "a-b", "title": "a-b"}], replacements=[{"pattern": "-", "replacement": "+"}],
                 field="title")
    assert run.kept == [{"text": "a-b", "title": "a+b"}]


def test_regex_replace_parameter_errors():
    msg = recipe_error(r"regex_replace: {replacements: [{pattern: '(a)', replacement: '\2'}]}")
    assert "replacement '\\2' for pattern '(a)' is not a valid RE2 rewrite" in msg and len(msg.splitlines()) == 1
    assert "refer to groups as" in recipe_error(r"regex_replace: {replacements: [{pattern: a, replacement: '\g<0>'}]}")
    msg = recipe_error(r"regex_replace: {replacements: [{pattern: 'a(?=b)'}]}")
    assert "pattern 'a(?=b)' is not valid RE2" in msg and "replacements.0.pattern" in msg
    assert "at least one replacement" in recipe_error("regex_replace: {replacements: []}")
    assert "not valid" in recipe_error("regex_replace: {replacements: [{pattern: a, repl: b}]}")


# simple patterns that mean the same in RE2 and Python's re and never match the empty string
# (re.sub and RE2 differ on empty matches next to a previous match)
REWRITES = [("a", "-"), ("ab", ""), ("[a-c]+", "X"), ("b|cd", "[]"), ("a.b", "_"), ("(a)(b)", r"\2\1"),
            ("x+y?", "Z"), ("[^a ]+", "."), (r"\.", "!"), ("c{2}", "cc"), ("é+", "e"), ("(d)", r"<\1\1>")]


@settings(max_examples=150, deadline=None)
@given(texts=st.lists(st.text("abcdxy .\né☃", max_size=30) | st.none(), min_size=1, max_size=8),
       rewrites=st.lists(st.sampled_from(REWRITES), min_size=1, max_size=3))
def test_property_regex_replace_equals_python_re_sub(texts, rewrites):
    run = run_op("regex_replace", [{"text": t} for t in texts],
                 replacements=[{"pattern": p, "replacement": r} for p, r in rewrites])
    want, count = [], 0
    for t in texts:
        for p, r in rewrites:
            if t is not None:
                count += len(re.findall(p, t))
                t = re.sub(p, r, t)
        want.append(t)
    assert [r["text"] for r in run.kept] == want
    assert run.ledger_entry["counters"].get("replacements", 0) == count


# ----------------------------------------------------------------------------- specific_chars_remove
def test_specific_chars_remove_default_is_data_juicers():
    assert DJ_SPECIFIC_CHARS == "◆●■►▼▲▴∆▻▷❖♡□"
    run = run_op("specific_chars_remove", [{"text": "◆ item ●one■\n▼ two ☆"}, {"text": None}])
    assert [r["text"] for r in run.kept] == [" item one\n two ☆", None]
    assert run.ledger_entry["counters"] == {"chars_removed": 4}


@settings(max_examples=150, deadline=None)
@given(texts=st.lists(st.text(st.characters(blacklist_categories=("Cs",)), max_size=30), min_size=1, max_size=6),
       chars=st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=6))
def test_property_specific_chars_remove_equals_python(texts, chars):
    texts = [t + chars[: len(t) % 3] for t in texts]  # make sure some of the chars occur
    run = run_op("specific_chars_remove", [{"text": t} for t in texts], chars=chars)
    table = {ord(c): None for c in chars}
    got = [r["text"] for r in run.kept]
    assert got == [t.translate(table) for t in texts]
    assert not any(c in g for g in got for c in chars)
    assert run.ledger_entry["counters"].get("chars_removed", 0) == sum(len(t) for t in texts) - sum(len(g) for g in got)


def test_specific_chars_remove_metacharacters():
    run = run_op("specific_chars_remove", [{"text": r"a]b^c-d\e[f.g*h"}], chars="]^-\\[.*")
    assert run.kept == [{"text": "abcdefgh"}]


# ----------------------------------------------------------------------------- a recipe with all of them
def test_regex_ops_in_a_recipe(tmp_path):
    rows = [{"id": 1, "text": "◆ Intro [1]. Lorem ipsum"},
            {"id": 2, "text": "● Real text [2] ■"},
            {"id": 3, "text": "Please enable JavaScript"},
            {"id": 4, "text": "Another [3] one ►"}]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    res = run_recipe([src], tmp_path / "out", [
        {"specific_chars_remove": {}},
        {"regex_replace": {"replacements": [{"pattern": r"\s*\[\d+\]", "replacement": ""},
                                            {"pattern": r"^\s+|\s+$", "replacement": ""}]}},
        {"regex_filter": {"patterns": {"lorem_ipsum": "(?i)lorem ipsum", "javascript_notice": "(?i)enable javascript"}}},
    ])
    assert [r["text"] for r in read_output(tmp_path / "out")] == ["Real text", "Another one"]
    assert res.output_rows == 2
    led = json.loads((tmp_path / "out" / "ledger.json").read_text())
    assert led["ops"]["specific_chars_remove"]["counters"] == {"chars_removed": 4}
    assert led["ops"]["regex_replace"]["counters"]["replacements"] == 3 + 4
    assert led["ops"]["regex_filter"]["dropped"] == {"lorem_ipsum": 1, "javascript_notice": 1}
    assert led["balanced"]


def test_a_batch_whose_text_is_all_null():
    rows = [{"text": None}, {"text": None}]  # an all-null column has Arrow's null type, not string
    assert run_op("regex_replace", rows, replacements=[{"pattern": "a"}]).kept == rows
    assert run_op("specific_chars_remove", rows).kept == rows
    assert run_op("regex_filter", rows, patterns=["a"]).kept == rows
    assert [r for _, r in run_op("regex_filter", rows, patterns=["a"], mode="keep").dropped] == ["regex_no_match"] * 2
    assert [r for _, r in run_op("url_filter", [{"text": "x", "url": None}], missing_url="drop").dropped] == ["missing_url"]
