"""Bad input goes to quarantine with file, line and reason; the run goes on and balances."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import ACCEPT_BAD_ROWS, read_output, read_quarantine, run_recipe

GOOD = "good"
BAD_KINDS = {
    "malformed": (lambda i: b'{"id": "m%d", "text": "unterminated' % i, "malformed JSON"),
    "utf8": (lambda i: b'{"id": "u%d", "text": "bad \xff\xfe bytes"}' % i, "invalid UTF-8"),
    "null_text": (lambda i: json.dumps({"id": f"n{i}", "text": None}).encode(), "missing or null text field"),
    "no_text": (lambda i: json.dumps({"id": f"t{i}", "body": "x"}).encode(), "missing or null text field"),
    "text_type": (lambda i: json.dumps({"id": f"y{i}", "text": 12}).encode(), "field 'text': expected string"),
    "field_type": (lambda i: json.dumps({"id": f"f{i}", "text": "fine", "n": "not a number"}).encode(),
                   "field 'n': expected number"),
    "array": (lambda i: b"[1, 2, 3]", "not a JSON object"),
}

line_kinds = st.lists(st.sampled_from([GOOD] * 4 + sorted(BAD_KINDS) + ["blank"]), min_size=1, max_size=60)


def build(kinds: list[str]) -> tuple[bytes, list[dict], dict[int, str]]:
    """File bytes, the good rows expected out, and {line number: expected reason} for bad lines."""
    lines, good, bad = [], [], {}
    for i, kind in enumerate(["good"] + kinds):  # the first line is good: it sets the file's types
        if kind == "blank":
            lines.append(b"   ")
            continue
        if kind == GOOD:
            row = {"id": f"g{i}", "text": f"document number {i}", "n": i}
            lines.append(json.dumps(row).encode())
            good.append(row)
        else:
            make, reason = BAD_KINDS[kind]
            lines.append(make(i))
            bad[len(lines)] = reason
    return b"\n".join(lines) + b"\n", good, bad


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds=line_kinds, block_kb=st.sampled_from([1, 4, 1024]))
@example(kinds=["good", "field_type", "field_type", "field_type"], block_kb=1)  # conflicts outnumber the typed rows
def test_bad_lines_quarantined_good_rows_kept_ledger_balanced(tmp_path_factory, kinds, block_kb):
    tmp = tmp_path_factory.mktemp("q")
    data, good, bad = build(kinds)
    src = tmp / "input.jsonl"
    src.write_bytes(data)
    res = run_recipe([src], tmp / "out", [], executor={"batch_size_mb": block_kb / 1024}, policy=ACCEPT_BAD_ROWS)
    # good rows come out unchanged, in order
    assert read_output(tmp / "out") == good
    # every bad line is in quarantine with its file, line and reason
    q = read_quarantine(tmp / "out")
    got = {r["line"]: r for r in q}
    assert sorted(got) == sorted(bad), (got, bad)
    for line, reason in bad.items():
        assert got[line]["source"] == "input.jsonl"
        assert got[line]["reason"].startswith(reason) or reason in got[line]["reason"], (got[line], reason)
    # the ledger balances: rows in = out + quarantined (no op drops anything here)
    ledger = json.loads((tmp / "out" / "ledger.json").read_text())
    assert ledger["balanced"] is True
    assert ledger["totals"]["input"] == len(good) + len(bad)
    assert ledger["totals"]["quarantined"] == len(bad)
    assert res.output_rows == len(good)


def test_parquet_null_text_goes_to_quarantine(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = tmp_path / "a.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": ["x", None, "z"]}), src)
    res = run_recipe([src], tmp_path / "out", [], policy=ACCEPT_BAD_ROWS)
    assert res.output_rows == 2
    q = read_quarantine(tmp_path / "out")
    assert [(r["line"], r["reason"]) for r in q] == [(2, "missing or null text field 'text'")]


def test_quarantine_keeps_the_raw_record(tmp_path):
    src = tmp_path / "a.jsonl"
    src.write_text('{"text": "ok"}\n{"text": "broken\n')
    run_recipe([src], tmp_path / "out", [], policy=ACCEPT_BAD_ROWS)
    (rec,) = read_quarantine(tmp_path / "out")
    assert rec["raw"] == '{"text": "broken' and rec["line"] == 2 and rec["stage"] == "read"
