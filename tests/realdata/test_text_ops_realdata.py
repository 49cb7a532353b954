"""Text operators on the real data in ../shared/data: drop rates per rule on the web sets,
language-ID accuracy on UDHR and the fortunes, PII on the SpamAssassin mails."""

from __future__ import annotations

import collections
import gzip
import json
import random
import re

import pyarrow as pa
import pytest

from tests.conftest import run_recipe
from thresher.operators.clean.pii import PiiRedact
from thresher.operators.filter.langid import LanguageId

FINEWEB_RULES = [{"gopher_repetition_filter": {}}, {"gopher_quality_filter": {}},
                 {"c4_line_filter": {"filter_no_terminal_punct": False}}, {"c4_quality_filter": {}},
                 {"fineweb_quality_filter": {}}]


def read_gz(path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(x) for x in f]


def drop_rates(shared, tmp_path, name, paths, process):
    res = run_recipe(paths, tmp_path / name, process, workers=2)
    led = json.loads((tmp_path / name / "ledger.json").read_text())
    assert led["balanced"]
    total = led["ops"]["read"]["rows_out"]
    rates = {f"{k}:{r}": n / total for k, v in led["ops"].items() for r, n in v["dropped"].items()}
    return rates, res.output_rows / total


def test_rule_drop_rates_on_web_sets(shared_data, tmp_path):
    c4 = [shared_data / "llamafactory_c4_wiki_demo" / "c4_demo.jsonl"]
    spam = [shared_data / "spamassassin_public_corpus" / "spamassassin.jsonl.gz"]
    traf = [shared_data / "trafilatura_eval_web_pages" / "extracted_text.trafilatura.jsonl.gz"]
    c4_rates, c4_kept = drop_rates(shared_data, tmp_path, "c4", c4, FINEWEB_RULES)
    spam_rates, spam_kept = drop_rates(shared_data, tmp_path, "spam", spam, FINEWEB_RULES)
    traf_rates, traf_kept = drop_rates(shared_data, tmp_path, "traf", traf, FINEWEB_RULES)
    print("\nC4 demo", round(c4_kept, 3), {k: round(v, 3) for k, v in sorted(c4_rates.items())})
    print("SpamAssassin", round(spam_kept, 3), {k: round(v, 3) for k, v in sorted(spam_rates.items())})
    print("trafilatura pages", round(traf_kept, 3), {k: round(v, 3) for k, v in sorted(traf_rates.items())})
    # C4 documents already passed C4's own page rules (5+ sentences, no braces): few fail them here
    assert sum(v for k, v in c4_rates.items() if k.startswith("c4_quality_filter")) < 0.15
    # raw e-mails (headers, quoting, signatures) fare far worse than curated C4 pages
    assert spam_kept < c4_kept - 0.2
    assert c4_kept > 0.5


@pytest.mark.network
def test_language_id_accuracy_udhr(shared_data):
    op = LanguageId(LanguageId.Params(tag_only=True))
    op.prepare()
    op.setup()
    rows = read_gz(shared_data / "udhr_multilingual" / "udhr_texts.jsonl.gz")
    major = {"en", "de", "fr", "es", "it", "pt", "nl", "sv", "pl", "ru", "uk", "tr", "ar", "fa", "hi", "bn", "ja",
             "ko", "el", "he", "vi", "id", "th", "cs", "fi", "hu", "ro", "da"}
    sel = [r for r in rows if r["bcp47"] in major and r["text"]]
    stats = op.compute_stats(pa.table({"text": [r["text"] for r in sel]}))
    correct = [p == r["bcp47"] for p, r in zip(stats["lang"].to_pylist(), sel, strict=True)]
    acc = sum(correct) / len(sel)
    print(f"\nUDHR, {len(sel)} documents in {len({r['bcp47'] for r in sel})} major languages: accuracy {acc:.3f}")
    assert len(sel) >= 20 and acc >= 0.95


@pytest.mark.network
def test_language_id_accuracy_fortunes(shared_data):
    op = LanguageId(LanguageId.Params(tag_only=True))
    op.prepare()
    op.setup()
    rows = read_gz(shared_data / "fortunes_multilingual" / "fortunes.jsonl.gz")
    rng = random.Random(0)
    by = collections.defaultdict(list)
    for r in rows:
        by[r["lang"]].append(r)
    sample = [x for k in sorted(by) for x in rng.sample(by[k], min(200, len(by[k])))]
    stats = op.compute_stats(pa.table({"text": [r["text"] for r in sample]}))
    acc = collections.defaultdict(list)
    for p, r in zip(stats["lang"].to_pylist(), sample, strict=True):
        acc[r["lang"]].append(p == r["lang"])
    per = {k: sum(v) / len(v) for k, v in acc.items()}
    overall = sum(sum(v) for v in acc.values()) / len(sample)
    print("\nfortunes (short texts):", {k: round(v, 3) for k, v in sorted(per.items())}, f"overall {overall:.3f}")
    assert overall >= 0.9
    assert all(v >= 0.85 for k, v in per.items() if len(by[k]) >= 1000)


def test_pii_counts_on_spamassassin(shared_data):
    rows = read_gz(shared_data / "spamassassin_public_corpus" / "spamassassin.jsonl.gz")
    texts = [r["text"] for r in rows[:1500]]
    op = PiiRedact()
    out = op.process(pa.table({"text": texts}))["text"].to_pylist()
    counts = op.take_counters()
    print("\nPII redacted in 1,500 SpamAssassin mails:", counts)
    assert counts["EMAIL"] > 1500  # every mail has addresses in its headers
    assert counts.get("IP_ADDRESS", 0) > 100  # Received: headers carry IPs
    simple_email = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]*[a-zA-Z]{2,}")
    left = sum(len(simple_email.findall(t)) for t in out)
    before = sum(len(simple_email.findall(t)) for t in texts)
    assert left <= 0.01 * before  # what a plain address regex finds is (almost) all gone


@pytest.mark.slow
def test_shipped_quality_training_config_on_shared_data(shared_data, tmp_path, monkeypatch):
    """recipes/training/shared-data.yaml: Wikipedia + SOTU + LIMA vs spam + raw CC text."""
    import subprocess
    import sys
    from pathlib import Path

    monkeypatch.setenv("THRESHER_REAL_DATA", str(shared_data))
    out = tmp_path / "quality.bin"
    res = subprocess.run([sys.executable, "-m", "thresher", "train-quality", "--config", "shared-data",
                          "--output", str(out)], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert res.returncode == 0, res.stderr
    report = json.loads(out.with_suffix(".json").read_text())
    print("\nquality classifier on shared data:", report)
    assert report["auc"] >= 0.97 and report["test_examples"]["positive"] >= 100
