"""The README's first command: `thresher run quickstart` on the built-in demo corpus."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import read_output, read_quarantine
from thresher.pipeline.demo import make_demo_records

ROOT = Path(__file__).resolve().parents[2]


def test_demo_corpus_is_deterministic_and_varied():
    a, b = make_demo_records(), make_demo_records()
    assert a == b
    docs = [json.loads(x) for x in a if x.startswith("{") and x.endswith("}")]
    kinds = {d.get("kind") for d in docs}
    assert {"article", "spam", "short", "exact-copy", "near-copy", "lang-de", "lang-fr", "lang-es"} <= kinds
    assert any("cookies" in (d.get("text") or "") for d in docs)  # boilerplate lines


def test_quickstart_shows_a_real_funnel(tmp_path):
    out = tmp_path / "qs"
    res = subprocess.run([sys.executable, "-m", "thresher", "run", "quickstart", "--output", str(out)],
                         cwd=ROOT, capture_output=True, text=True, env={**__import__("os").environ, "COLUMNS": "160"})
    assert res.returncode == 0, res.stderr
    assert "ledger" in res.stdout and "exact_dedup" in res.stdout
    led = json.loads((out / "ledger.json").read_text())
    assert led["balanced"]
    ops = led["ops"]
    assert ops["read"]["rows_in"] == 2003 and sum(ops["read"]["quarantined"].values()) == 3
    assert ops["text_length_filter"]["dropped"]["too_few_words"] > 0
    assert ops["exact_dedup"]["dropped"]["exact_duplicate"] > 0
    rows = read_output(out)
    assert len(rows) == led["totals"]["output"]
    assert all(r["id"].startswith("demo-") for r in rows)  # input ids kept
    assert {r["reason"].split(":")[0] for r in read_quarantine(out)} == {"malformed JSON", "missing or null text field 'text'"}
    assert (out / "trace" / "03-exact_dedup.jsonl").exists()


def test_validate_prints_the_plan():
    res = subprocess.run([sys.executable, "-m", "thresher", "validate", "quickstart"], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "pass 0: unicode_normalize + whitespace_normalize + text_length_filter -> fingerprint[exact_dedup]" in res.stdout


def test_cli_errors_are_one_line_not_a_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: {paths: [x.jsonl]}\noutput: {path: o}\nprocess:\n  - text_length_filtr: {}\n")
    res = subprocess.run([sys.executable, "-m", "thresher", "run", str(bad)], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr and "text_length_filter" in res.stderr
