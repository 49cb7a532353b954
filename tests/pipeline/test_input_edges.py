"""Inputs as users have them: compressed files cut short or corrupt in the middle, file names that
are not UTF-8, directory symlink loops, and JSONL of crawled pages that has html but no text.
Each runs for real, and the ledger must balance (``run`` raises when it does not)."""

from __future__ import annotations

import glob
import gzip
import json
import os
import zlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from tests.conftest import make_recipe, read_output, read_quarantine, run_recipe, write_jsonl
from thresher.pipeline.io.inputs import plan_shards, resolve_inputs
from thresher.pipeline.io.readers import read_shard, text_source_columns


def docs(n: int, prefix: str = "d") -> list[dict]:
    return [{"id": f"{prefix}{i}", "text": f"record {i} " + "words in a line " * (i % 7 + 3)} for i in range(n)]


def jsonl_bytes(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def compress(raw: bytes, fmt: str) -> bytes:
    return gzip.compress(raw) if fmt == "jsonl.gz" else zstandard.ZstdCompressor().compress(raw)


def decodable_prefix(data: bytes, fmt: str) -> bytes:
    """Everything a streaming decoder can get out of a damaged file: the oracle for 'the lines before the cut'."""
    d = zlib.decompressobj(zlib.MAX_WBITS | 16) if fmt == "jsonl.gz" else zstandard.ZstdDecompressor().decompressobj()
    return d.decompress(data)


def read_ledger(out) -> dict:
    return json.loads((out / "ledger.json").read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- damaged compressed files
@pytest.mark.parametrize("fmt", ["jsonl.gz", "jsonl.zst"])
@pytest.mark.parametrize("batch_mb", [16.0, 0.05])  # the damage in Arrow's first read, or after several
def test_truncated_compressed_file_keeps_whole_lines_and_quarantines_the_tail(tmp_path, fmt, batch_mb):
    rows = docs(4000)
    data = compress(jsonl_bytes(rows), fmt)
    src = tmp_path / f"cut.{fmt}"
    src.write_bytes(data[: len(data) * 2 // 3])
    whole = decodable_prefix(src.read_bytes(), fmt).count(b"\n")
    assert 1000 < whole < len(rows)

    out = tmp_path / "out"
    res = run_recipe([src], out, [], executor={"batch_size_mb": batch_mb})
    assert res.output_rows == whole
    assert read_output(out) == rows[:whole]
    (q,) = read_quarantine(out)
    assert q["source"] == src.name and q["line"] == whole + 1
    assert q["reason"].startswith("truncated compressed stream: ")
    assert q["raw"] and json.dumps(rows[whole]).startswith(q["raw"])  # the partial line where the tail starts
    read = read_ledger(out)["ops"]["read"]
    assert read["rows_in"] == whole + 1 and read["quarantined"] == {"truncated compressed stream": 1}


def _corrupt_after(first: bytes, rest: bytes, fmt: str) -> bytes:
    """``first`` compressed and flushed to a block boundary, then ``rest`` whose first block header
    is invalid: bad data in the middle of the stream, with good data after it."""
    if fmt == "jsonl.gz":
        c = zlib.compressobj(wbits=zlib.MAX_WBITS | 16)
        head = c.compress(first) + c.flush(zlib.Z_FULL_FLUSH)
        tail = bytearray(c.compress(rest) + c.flush())
        tail[0] = 0xFF  # block type 3: reserved
    else:
        c = zstandard.ZstdCompressor().compressobj()
        head = c.compress(first) + c.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        tail = bytearray(c.compress(rest) + c.flush())
        tail[0] |= 0x06  # block type 3: reserved
    return head + bytes(tail)


@pytest.mark.parametrize("fmt", ["jsonl.gz", "jsonl.zst"])
def test_corrupt_compressed_stream_in_the_middle(tmp_path, fmt):
    rows = docs(3000)
    good = 1234
    src = tmp_path / f"bad.{fmt}"
    src.write_bytes(_corrupt_after(jsonl_bytes(rows[:good]), jsonl_bytes(rows[good:]), fmt))
    out = tmp_path / "out"
    run_recipe([src], out, [{"text_length_filter": {"min_words": 1}}])
    assert read_output(out) == rows[:good]  # every line before the damage, none after
    (q,) = read_quarantine(out)
    assert (q["source"], q["line"], q["stage"]) == (src.name, good + 1, "read")
    assert q["reason"].startswith("corrupt compressed stream: ")
    assert read_ledger(out)["ops"]["read"]["quarantined"] == {"corrupt compressed stream": 1}


def test_members_after_the_first_are_read_and_a_cut_in_the_second_is_quarantined(tmp_path):
    rows = docs(3000)
    second = gzip.compress(jsonl_bytes(rows[1000:]))[:-2000]
    src = tmp_path / "two.jsonl.gz"
    src.write_bytes(gzip.compress(jsonl_bytes(rows[:1000])) + second)
    whole = 1000 + decodable_prefix(second, "jsonl.gz").count(b"\n")
    got, quarantined = _read([src])
    assert got == rows[:whole] and whole > 1500
    (q,) = quarantined
    assert q["line"] == whole + 1 and q["reason"].startswith("truncated compressed stream")


def test_a_file_cut_inside_its_header_is_read_as_nothing_plus_one_quarantine_record(tmp_path):
    src = tmp_path / "stub.jsonl.gz"
    src.write_bytes(gzip.compress(jsonl_bytes(docs(10)))[:12])
    got, quarantined = _read([src])  # resolve_inputs' header check lets it through
    assert got == []
    assert [(q["line"], q["reason"].split(":")[0]) for q in quarantined] == [(1, "truncated compressed stream")]


def test_lines_pyarrow_refuses_but_python_accepts_are_quarantined_not_fatal(tmp_path):
    """Corrupt data can decode to JSON that Python's parser takes and pyarrow's does not."""
    src = tmp_path / "odd.jsonl"
    src.write_text('{"text": "a"}\n{"text": "b", "text": "c"}\n{"text": "d", "n": 1e400}\n'
                   '{"text": "e\\ud800"}\n{"text": "f"}\n', encoding="utf-8")
    got, quarantined = _read([src])
    assert [r["text"] for r in got] == ["a", "f"]
    assert [(q["line"], q["reason"]) for q in quarantined][0] == (2, "malformed JSON: duplicate key 'text'")
    assert [q["line"] for q in quarantined] == [2, 3, 4]
    assert all(q["reason"].startswith("malformed JSON: ") for q in quarantined)


@pytest.mark.slow
def test_damaged_compressed_files_on_ray(tmp_path, local_ray):
    rows = docs(3000)
    cut = compress(jsonl_bytes(rows), "jsonl.gz")
    (tmp_path / "in").mkdir()
    a = tmp_path / "in" / "a.jsonl.gz"
    a.write_bytes(cut[: len(cut) // 2])
    b = tmp_path / "in" / "b.jsonl.zst"
    b.write_bytes(_corrupt_after(jsonl_bytes(rows[:777]), jsonl_bytes(rows[777:]), "jsonl.zst"))
    whole = decodable_prefix(a.read_bytes(), "jsonl.gz").count(b"\n")
    out = tmp_path / "ray"
    run_recipe([a, b], out, [{"text_length_filter": {"min_words": 1}}], executor={"type": "ray", "workers": 2})
    assert read_output(out) == rows[:whole] + rows[:777]
    got = sorted((q["source"], q["line"], q["reason"].split(":")[0]) for q in read_quarantine(out))
    assert got == [("a.jsonl.gz", whole + 1, "truncated compressed stream"),
                   ("b.jsonl.zst", 778, "corrupt compressed stream")]


def _read(paths):
    rows, quarantined = [], []
    for s in plan_shards(resolve_inputs([str(p) for p in paths]), 64.0):
        for rb in read_shard(s, "text", "id", 1 << 16):
            rows += rb.table.to_pylist()
            quarantined += rb.quarantined
    return [{k: v for k, v in r.items() if k in ("id", "text")} for r in rows], quarantined


# --------------------------------------------------------------------------- file names that are not UTF-8
def _bytes_file(directory, name: bytes, data: bytes) -> None:
    try:
        fd = os.open(os.path.join(os.fsencode(directory), name), os.O_WRONLY | os.O_CREAT, 0o644)
    except OSError as e:  # a file system that insists on UTF-8 names
        pytest.skip(f"cannot create a non-UTF-8 file name here: {e}")
    os.write(fd, data)
    os.close(fd)


def test_non_utf8_file_names_run_to_completion_with_stable_text_names(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    no_ids = [{"text": f"caf\u00e9 row {i} with some words"} for i in range(20)]
    _bytes_file(d, b"caf\xe9.jsonl", jsonl_bytes(no_ids))
    _bytes_file(d, b"gz-\xff.jsonl.gz", gzip.compress(jsonl_bytes(docs(5, "g"))))
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(docs(5, "p")), sink)
    _bytes_file(d, b"pq-\xfe.parquet", sink.getvalue().to_pybytes())
    write_jsonl(d / "plain.jsonl", docs(3, "x"))

    ids = []
    for out in (tmp_path / "o1", tmp_path / "o2"):
        res = run_recipe([d], out, [])
        assert res.output_rows == 33
        rows = read_output(out)
        ids.append([r["id"] for r in rows])
        for f in out.rglob("*.json*"):
            f.read_bytes().decode("utf-8")  # every JSON the run leaves is valid UTF-8
    assert ids[0] == ids[1]  # stable across runs
    assert ids[0][:20] == [f"caf\\xe9.jsonl:{i}" for i in range(1, 21)]
    assert {i for i in ids[0] if not i.startswith("caf")} == {*(f"g{i}" for i in range(5)), *(f"p{i}" for i in range(5)),
                                                               "x0", "x1", "x2"}
    assert all(i.encode("utf-8") for i in ids[0])
    names = [rel for _, rel, _ in resolve_inputs([str(d)])]
    assert names == ["caf\\xe9.jsonl", "gz-\\xff.jsonl.gz", "plain.jsonl", "pq-\\xfe.parquet"]
    assert [rel for _, rel, _ in resolve_inputs([str(d / "*.jsonl")])] == ["caf\\xe9.jsonl", "plain.jsonl"]


def test_non_utf8_file_name_in_quarantine_records(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    _bytes_file(d, b"bad-\xe9.jsonl", jsonl_bytes(docs(30)) + b"{not json\n")
    out = tmp_path / "out"
    run_recipe([d], out, [])
    (q,) = read_quarantine(out)
    assert q["source"] == "bad-\\xe9.jsonl" and q["line"] == 31


# --------------------------------------------------------------------------- symlinks
def _tree_with_loop(tmp_path):
    d = tmp_path / "d"
    write_jsonl(d / "sub" / "a.jsonl", docs(7, "a"))
    os.symlink("..", d / "sub" / "loop")  # d/sub/loop/sub/loop/... is d again
    os.symlink("sub/a.jsonl", d / "link.jsonl")  # the same file by a second name
    os.link(d / "sub" / "a.jsonl", d / "hard.jsonl")  # and a third
    elsewhere = tmp_path / "elsewhere"
    write_jsonl(elsewhere / "b.jsonl", docs(4, "b"))
    os.symlink(elsewhere, d / "more")  # a symlinked directory that is not a loop: still read
    return d


@pytest.mark.parametrize("spec", ["d/**/*.jsonl", "d", "d/**", "d/*/*.jsonl"])
def test_symlink_loops_and_second_names_are_read_once(tmp_path, spec):
    d = _tree_with_loop(tmp_path)
    files = resolve_inputs([str(tmp_path / spec)])
    targets = sorted(os.path.realpath(f) for f, _, _ in files)
    if spec == "d/*/*.jsonl":
        assert targets == sorted([os.path.realpath(d / "sub" / "a.jsonl"), os.path.realpath(tmp_path / "elsewhere" / "b.jsonl")])
    else:
        assert len(files) == 2 and len(set(targets)) == 2
    out = tmp_path / "out"
    run_recipe([tmp_path / spec, d], out, [])  # two inputs reaching the same files
    got = sorted(r["id"] for r in read_output(out))
    assert got == sorted([f"a{i}" for i in range(7)] + [f"b{i}" for i in range(4)])


def test_glob_matches_like_the_standard_glob_on_a_tree_without_links(tmp_path):
    root = tmp_path / "t"
    for name in ("x.jsonl", "a/y.jsonl", "a/b/z.jsonl", "a/b/c/w.jsonl.gz", ".hidden.jsonl", ".h/q.jsonl",
                 "a/.dot.jsonl"):
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(gzip.compress(b'{"text": "x"}\n') if name.endswith(".gz") else b'{"text": "x"}\n')
    for pattern in ("**/*.jsonl", "**/*.jsonl*", "a/**/*.jsonl", "*/*/*.jsonl", "a/b/**", "**/b/*.jsonl", "a/[b]/z.*",
                    ".h/*.jsonl", "**/.*.jsonl"):
        p = str(root / pattern)
        want = sorted(os.path.abspath(m) for m in glob.glob(p, recursive=True) if os.path.isfile(m))
        assert want, pattern
        got = sorted(f for f, _, _ in resolve_inputs([p]))
        assert got == want, pattern


# --------------------------------------------------------------------------- html without text
PAGE = ("<html><head><title>t</title></head><body><nav><a href='/'>home</a></nav><article><h1>Page {i}</h1>"
        "<p>The river runs past the old mill and the library, where the town keeps its letters and maps. "
        "In winter the canal freezes and the festival moves indoors to the museum by the harbour.</p>"
        "<p>Paragraph two of page {i} has more words so that the extractor keeps it as main text.</p>"
        "</article><footer>copyright</footer></body></html>")


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_rows_with_html_and_no_text_are_input_for_html_extract(tmp_path, fmt):
    rows = [{"id": f"p{i}", "html": PAGE.format(i=i)} for i in range(25)]
    if fmt == "jsonl":
        src = write_jsonl(tmp_path / "pages.jsonl", rows)
    else:
        src = tmp_path / "pages.parquet"
        pq.write_table(pa.Table.from_pylist(rows), src)  # no text column at all
    out = tmp_path / "out"
    res = run_recipe([src], out, [{"html_extract": {}}, {"text_length_filter": {"min_words": 10}}])
    got = read_output(out)
    assert res.output_rows == 25 and [r["id"] for r in got] == [f"p{i}" for i in range(25)]
    assert all(f"Page {i}" in r["text"] and "river runs past" in r["text"] for i, r in enumerate(got))
    assert not read_quarantine(out)
    led = read_ledger(out)["ops"]
    assert led["read"]["quarantined"] == {} and led["read"]["rows_out"] == 25
    assert led["html_extract"]["rows_in"] == 25


def test_rows_with_neither_text_nor_html_are_still_quarantined(tmp_path):
    rows = [{"id": f"p{i}", "html": PAGE.format(i=i)} for i in range(20)]
    rows.insert(5, {"id": "empty", "url": "u"})
    rows.append({"id": "t", "text": "a row of plain text that has more than ten words in it, so it stays"})
    src = write_jsonl(tmp_path / "mixed.jsonl", rows)
    out = tmp_path / "out"
    run_recipe([src], out, [{"html_extract": {}}, {"text_length_filter": {"min_words": 10}}])
    assert [r["id"] for r in read_output(out)] == [f"p{i}" for i in range(20)] + ["t"]
    (q,) = read_quarantine(out)
    assert (q["line"], q["reason"]) == (6, "missing or null text field 'text'")


def test_only_ops_before_the_first_text_reader_can_stand_in_for_the_text(tmp_path):
    def first_pass_ops(process):
        return make_recipe([tmp_path / "x.jsonl"], tmp_path / "o", process).build_ops()

    assert text_source_columns(first_pass_ops([{"html_extract": {"html_key": "body"}}])) == ("body",)
    assert text_source_columns(first_pass_ops([{"text_length_filter": {"min_words": 1}}, {"html_extract": {}}])) == ()
    assert text_source_columns(first_pass_ops([{"whitespace_normalize": {}}])) == ()
