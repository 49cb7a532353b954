"""CSV/TSV input (issue 15): streamed with pyarrow, malformed rows to quarantine with file and row,
stable ids, one shard per file, header problems as input errors, a clean exit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ACCEPT_BAD_ROWS, read_output, read_quarantine, run_recipe
from thresher.pipeline.errors import InputError

CSV_TEXT = (
    'id,text,source\n'
    'a1,"Hello, world",web\n'
    ',"A value\nthat spans lines",book\n'
    'a3,too,many,fields\n'
    'a4,"He said ""hi""",web\n'
    'a5,,web\n'
    'a6,last,forum\n'
)


def test_csv_and_tsv_input(tmp_path):
    csv_file = tmp_path / "docs.csv"
    csv_file.write_bytes(b"\xef\xbb\xbf" + CSV_TEXT.encode())  # with a byte-order mark, as Excel writes
    tsv_file = tmp_path / "more.tsv"
    tsv_file.write_bytes(b"text\tlabel\nfirst\t1\n\xff\xfebroken\t2\nthird\t3\n")
    res = run_recipe([csv_file, tsv_file], tmp_path / "out", [], policy=ACCEPT_BAD_ROWS)
    out = read_output(tmp_path / "out")
    assert [(r["id"], r["text"]) for r in out] == [
        ("a1", "Hello, world"), ("docs.csv:3", "A value\nthat spans lines"), ("a4", 'He said "hi"'),
        ("a6", "last"), ("more.tsv:2", "first"), ("more.tsv:4", "third")]
    assert out[0]["source"] == "web" and out[-1]["label"] == "3"  # every column is text
    bad = {(q["source"], q["line"]): q["reason"] for q in read_quarantine(tmp_path / "out")}
    assert bad == {("docs.csv", 4): "malformed CSV row: expected 3 fields, got 4",
                   ("docs.csv", 6): "missing or null text field 'text'",
                   ("more.tsv", 3): "invalid UTF-8 in column 'text' at byte 0"}
    assert res.ledger.input_rows == 9

    again = tmp_path / "again"  # ids are stable from run to run
    run_recipe([csv_file, tsv_file], again, [], policy=ACCEPT_BAD_ROWS)
    assert [r["id"] for r in read_output(again)] == [r["id"] for r in out]

    declared = tmp_path / "export.txt"
    declared.write_text(CSV_TEXT, encoding="utf-8")  # input.format names the format of any file
    run_recipe([declared], tmp_path / "declared", [], input={"format": "csv"}, policy=ACCEPT_BAD_ROWS)
    assert len(read_output(tmp_path / "declared")) == 4


def test_csv_reading_is_streamed_and_ids_do_not_depend_on_bad_rows(tmp_path):
    """Many batches for a big file with a small batch size; a malformed row late in the file
    (read from there on by the fallback) changes no other row's id."""
    from thresher.pipeline.io.inputs import plan_shards, resolve_inputs
    from thresher.pipeline.io.readers import read_shard

    lines = ["text,n"] + [f'"row {i}, with a comma",{i}' for i in range(20000)]
    clean = tmp_path / "clean.csv"
    clean.write_text("\n".join(lines) + "\n", encoding="utf-8")
    lines[15000] = "bad,row,here"
    dirty = tmp_path / "dirty.csv"
    dirty.write_text("\n".join(lines) + "\n", encoding="utf-8")
    got = {}
    for path in (clean, dirty):
        (shard,) = plan_shards(resolve_inputs([str(path)]), 0.01)  # one shard per file, whatever its size
        batches = list(read_shard(shard, "text", "id", 64 << 10))
        assert len(batches) > 5
        got[path.name] = ({r["id"].split(":")[1]: r["n"] for b in batches for r in b.table.to_pylist()},
                          [q for b in batches for q in b.quarantined])
    clean_ids, _ = got["clean.csv"]
    dirty_ids, (bad,) = got["dirty.csv"]
    assert bad["line"] == 15001 and bad["raw"] == "bad,row,here"
    assert dirty_ids == {k: v for k, v in clean_ids.items() if k != "15001"}


def test_csv_header_problems_are_input_errors(tmp_path):
    dup = tmp_path / "dup.csv"
    dup.write_text("text,text\na,b\n")
    with pytest.raises(InputError, match="names column 'text' twice"):
        run_recipe([dup], tmp_path / "o", [])
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    res = run_recipe([empty], tmp_path / "o2", [])
    assert res.output_rows == 0


def test_csv_run_through_the_cli_exits_cleanly(tmp_path):
    """A whole run in a fresh process (malformed row included) ends with status 0: the CSV reader
    leaves nothing behind that fails at interpreter exit."""
    src = tmp_path / "docs.csv"
    src.write_text(CSV_TEXT, encoding="utf-8")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({"input": {"paths": [str(src)]}, "output": {"path": str(tmp_path / "out")},
                                  "policy": {"max_quarantine_fraction": 1.0},
                                  "executor": {"type": "local", "workers": 1}, "process": []}))
    for attempt in range(3):
        proc = subprocess.run([str(Path(sys.executable).parent / "thresher"), "run", str(recipe), "-q", "--overwrite"],
                              capture_output=True, text=True)
        assert proc.returncode == 0, (attempt, proc.stderr[-2000:])
    assert len(read_output(tmp_path / "out")) == 4
