"""The quickstart-style recipe over the real web sets in ../shared/data: the ledger balances."""

from __future__ import annotations

import gzip
import json

import pytest

from tests.conftest import read_output, run_recipe

PROCESS = [{"unicode_normalize": {"form": "NFKC"}}, {"whitespace_normalize": {}},
           {"text_length_filter": {"min_words": 50, "max_words": 100000}}, {"exact_dedup": {}}]


def count_lines(path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


@pytest.mark.slow
def test_quickstart_recipe_over_web_sets(shared_data, tmp_path):
    inputs = [
        shared_data / "llamafactory_c4_wiki_demo" / "c4_demo.jsonl",
        *sorted((shared_data / "dolma_test_cc_and_warc").glob("*.jsonl")),
        shared_data / "trafilatura_eval_web_pages" / "extracted_text.trafilatura.jsonl.gz",
        shared_data / "spamassassin_public_corpus" / "spamassassin.jsonl.gz",
    ]
    expected_in = sum(count_lines(p) for p in inputs)
    res = run_recipe(inputs, tmp_path / "out", PROCESS, workers=2, input={"shard_size_mb": 4})
    led = json.loads((tmp_path / "out" / "ledger.json").read_text())
    assert led["balanced"] and led["totals"]["input"] == expected_in
    ops = led["ops"]
    assert ops["text_length_filter"]["dropped"].get("too_few_words", 0) > 0
    rows = read_output(tmp_path / "out")
    assert len(rows) == res.output_rows > 1000
    # ids from the inputs are kept unchanged (dolma and spamassassin rows carry their own)
    with gzip.open(inputs[-1], "rt") as f:
        spam_ids = {json.loads(x)["id"] for x in f}
    assert any(r["id"] in spam_ids for r in rows)
    # and exact duplicates really are gone
    norm = [" ".join(r["text"].lower().split()) for r in rows]
    assert len(norm) == len(set(norm))
