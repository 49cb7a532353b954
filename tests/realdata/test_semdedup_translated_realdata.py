"""semantic_dedup on translated and reformatted copies built from ../shared/data
(tests/realdata/semdedup_planted.py): UDHR articles in four European languages planted beside their
English originals and real C4 / Wikipedia paragraphs with reformatted copies. MinHash finds no
translation and neither does the English-only default model; ``model: multilingual-e5-small`` finds
most of them. The full 24-language figures are bench/semdedup_planted.py's (docs/benchmarks.md)."""

from __future__ import annotations

import json

import pytest

from tests.realdata.semdedup_planted import by_family, planted_set, score
from thresher.api import apply_op
from thresher.operators.common.embedding import column_matrix

LANGS = ("fr", "it", "ru", "pl")


@pytest.mark.network  # both models, fetched into the test cache once
@pytest.mark.slow
def test_translated_copies_are_found_by_the_multilingual_model_only(shared_data):
    rows, group, kind = planted_set(shared_data, LANGS, n_paragraphs=120, n_reformatted=42, paraphrases=())
    ids = [r["id"] for r in rows]
    translated = {rid for rid, k in kind.items() if k and k.startswith("translated:")}
    assert len(translated) == 29 * len(LANGS)
    minhash_removed = set(ids) - set(apply_op("minhash_dedup", rows, threshold=0.8)["id"].to_pylist())
    assert not minhash_removed & translated
    figures = {}
    for model in ("all-MiniLM-L6-v2", "multilingual-e5-small"):
        embedded = apply_op("embed", rows, model=model)
        kept = set(apply_op("semantic_dedup", embedded, threshold=0.9)["id"].to_pylist())
        s = score(ids, column_matrix(embedded["embedding"]), set(ids) - kept, group, kind, 0.9)
        trans = [v for k, v in s["by_kind"].items() if k.startswith("translated:")]
        s["translated"] = sum(trans) / len(trans)
        s["reformatted"] = sum(v for k, v in s["by_kind"].items() if not k.startswith("translated:")) / (
            len(s["by_kind"]) - len(trans))
        s["families"] = by_family(s["by_kind"])
        figures[model] = s
        print(f"\n{model} (threshold 0.9): {json.dumps({k: s[k] for k in ('precision', 'recall', 'translated', 'reformatted', 'families', 'originals_removed')})}")
    mini, e5 = figures["all-MiniLM-L6-v2"], figures["multilingual-e5-small"]
    assert mini["translated"] < 0.05  # English-only: translations are not near their originals
    assert e5["translated"] >= 0.6 and min(e5["families"].values()) >= 0.5
    assert e5["reformatted"] >= 0.8 and mini["reformatted"] >= 0.8
    assert e5["precision"] >= 0.75 and e5["recall"] >= mini["recall"] + 0.4
