"""Exact dedup: normalisation options, 128-bit hashes, keep-first resolution."""

from __future__ import annotations

import json

import polars as pl
import pyarrow as pa
import xxhash
from hypothesis import given
from hypothesis import strategies as st

from thresher.operators.dedup.exact import ExactDedup, hash128
from thresher.pipeline.columns import ROW, SHARD


def dedup_ids(texts, **params):
    op = ExactDedup(ExactDedup.Params(**params))
    fp = op.fingerprint(pa.table({"text": pa.array(texts, pa.string())}))
    fp = fp.append_column(SHARD, pa.array([0] * len(texts), pa.int32()))
    fp = fp.append_column(ROW, pa.array(range(len(texts)), pa.int64()))
    dropped = op.resolve(pl.from_arrow(fp).lazy())
    return sorted(dropped[ROW].to_list())


def test_hash_is_xxh3_128():
    hi, lo = hash128(pa.array(["abc"]))
    d = xxhash.xxh3_128_intdigest(b"abc")
    assert int(hi[0]) == d >> 64 and int(lo[0]) == d & (2**64 - 1)


def test_default_ignores_case_and_whitespace_not_punctuation():
    texts = ["Hello  World", "hello world", "hello world!", "ＨＥＬＬＯ world"]
    assert dedup_ids(texts) == [1, 3]  # NFKC folds the fullwidth letters


def test_options():
    texts = ["Hello World", "hello world", "Hello, World!"]
    assert dedup_ids(texts, lowercase=False) == []
    assert dedup_ids(texts, punctuation=True) == [1, 2]


@given(st.lists(st.sampled_from(["a", "b", "c", "A", "a ", "d"]), max_size=30))
def test_keeps_exactly_one_first_occurrence_per_group(texts):
    dropped = set(dedup_ids(texts))
    kept = [i for i in range(len(texts)) if i not in dropped]
    keys = [t.strip().lower() for t in texts]
    # independent computation: first index of each normalised key
    first = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    assert kept == sorted(first.values())


def test_keep_longest_and_column(tmp_path):
    from tests.conftest import read_output, run_recipe, write_jsonl

    docs = [{"id": "a", "text": "Same text", "n": 1}, {"id": "b", "text": "same  text ", "n": 3},
            {"id": "c", "text": "SAME TEXT", "n": 2}]
    src = write_jsonl(tmp_path / "d.jsonl", docs)
    run_recipe([src], tmp_path / "o1", [{"exact_dedup": {"keep": "longest"}}])
    assert [r["id"] for r in read_output(tmp_path / "o1")] == ["b"]
    run_recipe([src], tmp_path / "o2", [{"exact_dedup": {"keep": "column", "keep_column": "n"}}])
    assert [r["id"] for r in read_output(tmp_path / "o2")] == ["b"]
    run_recipe([src], tmp_path / "o3", [{"exact_dedup": {}}])
    assert [r["id"] for r in read_output(tmp_path / "o3")] == ["a"]


def test_url_normalisation_and_dedup(tmp_path):
    from tests.conftest import read_output, run_recipe, write_jsonl
    from thresher.operators.dedup.exact import normalise_url

    same = ["HTTP://WWW.Example.com:80/a/b/?utm_source=x&b=2&a=1#top", "https://example.com/a/b?a=1&b=2",
            "example.com/a/b?b=2&a=1&fbclid=123"]
    assert len({normalise_url(u) for u in same}) == 1
    assert normalise_url("https://example.com/a?b=1") != normalise_url("https://example.com/a?b=2")
    assert normalise_url("http://example.com:8080/") != normalise_url("http://example.com/")
    docs = [{"id": str(i), "text": f"page {i}", "url": u} for i, u in enumerate(same + ["https://other.org", None, None])]
    src = write_jsonl(tmp_path / "d.jsonl", docs)
    run_recipe([src], tmp_path / "o", [{"url_dedup": {}}])
    assert [r["id"] for r in read_output(tmp_path / "o")] == ["0", "3", "4", "5"]  # rows without URL are left alone


def test_line_and_span_dedup_across_corpus(tmp_path):
    from tests.conftest import read_output, run_recipe, write_jsonl

    shared = "This very same sentence appears in both documents here."
    docs = [{"id": "1", "text": f"First document opening line is unique.\n{shared}"},
            {"id": "2", "text": f"{shared}\nSecond document has its own ending line."},
            {"id": "3", "text": shared}]
    src = write_jsonl(tmp_path / "d.jsonl", docs)
    run_recipe([src], tmp_path / "o", [{"span_dedup": {"unit": "line"}}], workers=2, input={"shard_size_mb": 0.0001})
    rows = {r["id"]: r["text"] for r in read_output(tmp_path / "o")}
    assert rows == {"1": f"First document opening line is unique.\n{shared}", "2": "Second document has its own ending line."}
    led = json.loads((tmp_path / "o" / "ledger.json").read_text())
    assert led["ops"]["span_dedup"]["dropped"] == {"only_duplicate_spans": 1}
    assert led["ops"]["span_dedup"]["counters"]["spans_removed"] == 2

    s = "One sentence here. Two sentence here. Three sentence here."
    docs = [{"id": "a", "text": f"{s} Unique tail sentence one."}, {"id": "b", "text": f"{s} Another tail sentence two."}]
    src = write_jsonl(tmp_path / "s.jsonl", docs)
    run_recipe([src], tmp_path / "o2", [{"span_dedup": {"unit": "sentences", "span": 3}}])
    rows = {r["id"]: r["text"] for r in read_output(tmp_path / "o2")}
    assert rows == {"a": f"{s} Unique tail sentence one.", "b": "Another tail sentence two."}


def test_span_dedup_keep_longest_document(tmp_path):
    from tests.conftest import read_output, run_recipe, write_jsonl

    shared = "This very same sentence appears in both documents here."
    docs = [{"id": "short", "text": shared}, {"id": "long", "text": f"{shared}\nA second, longer line makes this one longer."}]
    src = write_jsonl(tmp_path / "d.jsonl", docs)
    run_recipe([src], tmp_path / "o", [{"span_dedup": {"unit": "line", "keep": "longest"}}])
    rows = {r["id"]: r["text"] for r in read_output(tmp_path / "o")}
    assert rows == {"long": docs[1]["text"]}  # the short document lost its only line to the longer one


def test_hash_reads_arrow_buffers_like_the_python_strings():
    """Chunks, slices, nulls (as ''), large strings and lists all give xxh3-128 of the UTF-8 bytes."""
    vals = ["abc", None, "", "é  x", "long " * 300]
    expect = [xxhash.xxh3_128_intdigest((s or "").encode()) for s in vals]
    for arr in (vals, pa.array(vals), pa.array(vals, pa.large_string()),
                pa.chunked_array([pa.array(vals[:2]), pa.array(vals[2:])]), pa.array(["pad", *vals]).slice(1)):
        hi, lo = hash128(arr)
        assert [(int(h) << 64) | int(low) for h, low in zip(hi, lo, strict=True)] == expect


def test_fast_normalisation_matches_the_reference_definition():
    """NFKC of non-ASCII rows only and the folded whitespace regex equal NFKC + lower + \\s+ -> ' ' + trim."""
    import pyarrow.compute as pc

    from thresher.operators.dedup.exact import normalise

    texts = [" A\t\tb  c\n", "ﬁ  X\u00a0 y", "x\x0by", "a \r\n\f b", None, "", "  ", "Ｆｕｌｌ　ｗｉｄｔｈ", "plain text"]
    ref = pc.utf8_trim_whitespace(pc.replace_substring_regex(
        pc.utf8_lower(pc.utf8_normalize(pa.array(texts), form="NFKC")), r"\s+", " "))
    got = normalise(pa.chunked_array([pa.array(texts[:4]), pa.array(texts[4:])]), True, True, False, True)
    assert got.to_pylist() == ref.to_pylist()
