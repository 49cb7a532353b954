"""Readers, writers and sharding, on real files in every format."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import read_output, run_recipe, sample_docs, write_jsonl
from thresher.pipeline.errors import InputError
from thresher.pipeline.io.inputs import plan_shards, resolve_inputs
from thresher.pipeline.io.readers import read_shard
from thresher.pipeline.io.writers import ShardWriter

FORMATS = ["jsonl", "jsonl.gz", "jsonl.zst", "parquet"]


def write_input(path, rows, fmt):
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=7)
        return path
    raw = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    if fmt == "jsonl.gz":
        raw = gzip.compress(raw)
    elif fmt == "jsonl.zst":
        raw = zstandard.ZstdCompressor().compress(raw)
    path.write_bytes(raw)
    return path


def read_all(paths, shard_mb=64.0, block=1 << 20):
    rows, quarantined = [], []
    for s in plan_shards(resolve_inputs([str(p) for p in paths]), shard_mb):
        for rb in read_shard(s, "text", "id", block):
            rows += rb.table.to_pylist()
            quarantined += rb.quarantined
    return rows, quarantined


@pytest.mark.parametrize("fmt_in", FORMATS)
@pytest.mark.parametrize("fmt_out", FORMATS)
def test_round_trip_every_format(tmp_path, fmt_in, fmt_out):
    docs = sample_docs(50)
    docs[3]["text"] = "unicode: é ü 中文 🙂 and \"quotes\"\nnew line"
    src = write_input(tmp_path / f"in.{fmt_in}", docs, fmt_in)
    out = tmp_path / "out"
    res = run_recipe([src], out, [], fmt=fmt_out, output={"rows_per_shard": 20})
    assert res.output_rows == 50
    files = sorted((out / "data").iterdir())
    assert len(files) == 3 and all(f.name.endswith(fmt_out) for f in files)  # 20 + 20 + 10 rows
    assert read_output(out) == docs


def test_reader_keeps_ids_and_column_order(tmp_path):
    docs = [{"id": f"x{i}", "url": f"u{i}", "text": f"doc {i}"} for i in range(5)]
    src = write_jsonl(tmp_path / "a.jsonl", docs)
    rows, q = read_all([src])
    assert rows == docs and not q
    assert list(rows[0]) == ["id", "url", "text"]


def test_missing_ids_get_stable_ids_from_file_and_line(tmp_path):
    rows_in = [{"text": "a"}, {"id": "keep-me", "text": "b"}, {"text": "c", "id": None}]
    src = write_jsonl(tmp_path / "dir" / "part.jsonl", rows_in)
    rows, _ = read_all([src])
    assert [r["id"] for r in rows] == ["part.jsonl:1", "keep-me", "part.jsonl:3"]
    again, _ = read_all([src])
    assert again == rows


def test_integer_ids_stay_integers(tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", [{"id": 5, "text": "a"}, {"id": None, "text": "b"}])
    rows, _ = read_all([src])
    assert rows[0]["id"] == 5 and isinstance(rows[1]["id"], int) and rows[1]["id"] != 5


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shard_kb=st.integers(min_value=1, max_value=40), block_kb=st.integers(min_value=1, max_value=16),
       blank_every=st.integers(min_value=0, max_value=7))
def test_byte_range_sharding_reads_each_line_once_with_true_line_numbers(tmp_path, shard_kb, block_kb, blank_every):
    docs = sample_docs(300, seed=shard_kb)
    lines, expected = [], []
    for d in docs:
        if blank_every and len(lines) % blank_every == 0:
            lines.append("")
        lines.append(json.dumps({"text": d["text"]}))
        expected.append(len(lines))  # 1-based line number of this doc
    path = tmp_path / f"big-{shard_kb}-{block_kb}-{blank_every}.jsonl"
    path.write_text("\n".join(lines) + "\n")
    shards = plan_shards(resolve_inputs([str(path)]), shard_kb / 1024)
    if path.stat().st_size > shard_kb * 1024:
        assert len(shards) > 1
    rows, _ = read_all([path], shard_mb=shard_kb / 1024, block=block_kb * 1024)
    assert [r["text"] for r in rows] == [d["text"] for d in docs]
    assert [r["id"] for r in rows] == [f"{path.name}:{n}" for n in expected]


def test_parquet_split_by_row_groups(tmp_path):
    docs = sample_docs(100)
    src = tmp_path / "a.parquet"
    pq.write_table(pa.Table.from_pylist(docs), src, row_group_size=10)
    shards = plan_shards(resolve_inputs([str(src)]), 0.0001)
    assert len(shards) == 10
    rows, _ = read_all([src], shard_mb=0.0001)
    assert rows == docs


def test_directory_and_glob_inputs_sorted(tmp_path):
    for name in ("b.jsonl", "a.jsonl", "sub/c.jsonl.gz"):
        p = tmp_path / "d" / name
        if name.endswith(".gz"):
            write_input(p, [{"text": name}], "jsonl.gz")
        else:
            write_jsonl(p, [{"text": name}])
    files = resolve_inputs([str(tmp_path / "d")])
    assert [rel for _, rel, _ in files] == ["a.jsonl", "b.jsonl", "sub/c.jsonl.gz"]
    files = resolve_inputs([str(tmp_path / "d" / "*.jsonl")])
    assert [rel for _, rel, _ in files] == ["a.jsonl", "b.jsonl"]


def test_input_errors_are_clear(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        resolve_inputs([str(tmp_path / "nope.jsonl")])
    with pytest.raises(InputError, match="matches no files"):
        resolve_inputs([str(tmp_path / "*.parquet")])
    bad_gz = tmp_path / "bad.jsonl.gz"
    bad_gz.write_bytes(b"this is not gzip")
    with pytest.raises(InputError, match="bad.jsonl.gz"):
        resolve_inputs([str(bad_gz)])
    bad_pq = tmp_path / "bad.parquet"
    bad_pq.write_bytes(b"PAR1 nope")
    with pytest.raises(InputError, match="bad.parquet"):
        resolve_inputs([str(bad_pq)])
    odd = tmp_path / "data.xlsx"  # (.csv and .tsv are input formats since issue 15)
    odd.write_text("a,b\n")
    with pytest.raises(InputError, match="unknown format"):
        resolve_inputs([str(odd)])


def test_unreadable_file_is_an_error_before_work(tmp_path):
    import os

    src = write_jsonl(tmp_path / "secret.jsonl", [{"text": "x"}])
    src.chmod(0)
    try:
        if os.access(src, os.R_OK):
            pytest.skip("running as a user that can read anything (root)")
        with pytest.raises(InputError, match="not readable"):
            resolve_inputs([str(src)])
    finally:
        src.chmod(0o644)


def test_writer_is_atomic_until_commit(tmp_path):
    w = ShardWriter(tmp_path, 3, "jsonl", 2)
    w.write(pa.table({"text": ["a", "b", "c"]}))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-00003-000.jsonl.tmp", "part-00003-001.jsonl.tmp"]
    finals = w.commit()
    assert [p.name for p in finals] == ["part-00003-000.jsonl", "part-00003-001.jsonl"]
    assert not list(tmp_path.glob("*.tmp"))
    w2 = ShardWriter(tmp_path, 4, "parquet", 10)
    w2.write(pa.table({"text": ["a"]}))
    w2.abort()
    assert not list(tmp_path.glob("part-00004*"))


def test_thresher_output_dir_is_a_valid_input(tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", sample_docs(10))
    run_recipe([src], tmp_path / "o1", [])
    res = run_recipe([tmp_path / "o1"], tmp_path / "o2", [])
    assert res.output_rows == 10
    assert read_output(tmp_path / "o2") == read_output(tmp_path / "o1")
