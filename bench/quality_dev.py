"""The fineweb-edu recipe's quality stages against human judgement, on the DCLM human-labelled dev
half (../shared/data/dclm_human_quality_dev): balanced accuracy (mean of good-kept and bad-dropped
rates), precision/recall of 'keep', of the rules alone, the classifier alone, and rules then the
classifier (all of them, or only Gopher's repetition rules as the fineweb-edu recipe does) — the classifier's scores out-of-fold (each page scored by a model fitted without it),
read from a `thresher train-quality --config web-quality` report (eval_cv.scores).

    thresher train-quality --config web-quality --output /tmp/wq.npz
    python bench/quality_dev.py --report /tmp/wq.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from thresher.api import run_recipe
from thresher.operators.filter.quality_metrics import binary_metrics

RULES = [{"gopher_repetition_filter": {}}, {"gopher_quality_filter": {}},
         {"c4_line_filter": {"filter_no_terminal_punct": False}}, {"c4_quality_filter": {}},
         {"fineweb_quality_filter": {}}]


def rule_keep(dev: Path, rules: list[dict]) -> np.ndarray:
    """1 where these rule stages keep the page."""
    rows = [json.loads(line) for line in dev.read_text(encoding="utf-8").splitlines()]
    with tempfile.TemporaryDirectory() as tmp:
        run = run_recipe({"input": {"paths": [str(dev)], "id_key": "id"}, "output": {"path": f"{tmp}/o", "format": "jsonl"},
                          "process": rules})
        kept = {r["id"] for r in run.read().to_pylist()}
    return np.array([r["id"] in kept for r in rows], dtype=float)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--report", required=True, help="the .json a web-quality training run wrote beside its model")
    ap.add_argument("--data", default=os.environ.get("THRESHER_REAL_DATA", "../shared/data"))
    ap.add_argument("--threshold", type=float, default=0.5)
    args = ap.parse_args()
    dev = Path(args.data) / "dclm_human_quality_dev" / "dev.jsonl"
    y = np.array([json.loads(line)["label"] for line in dev.read_text(encoding="utf-8").splitlines()])
    oof = np.array(json.loads(Path(args.report).read_text())["eval_cv"]["scores"])
    rules, repetition = rule_keep(dev, RULES), rule_keep(dev, RULES[:1])
    clf = (oof >= args.threshold).astype(float)
    for name, keep in (("rules (Gopher+C4+FineWeb)", rules), ("classifier, out-of-fold", clf),
                       ("all rules, then classifier", rules * clf),
                       ("Gopher repetition, then classifier", repetition * clf)):
        m = binary_metrics(y, keep, 0.5)
        print(f"{name:<36} balanced accuracy {m['balanced_accuracy']:.3f}  precision {m['precision']:.3f}  "
              f"recall {m['recall']:.3f}  bad dropped {m['specificity']:.3f}  kept {int(keep.sum())}/{len(y)}")


if __name__ == "__main__":
    main()
