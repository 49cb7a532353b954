"""The fineweb-edu recipe's quality model against human judgement, on the DCLM human-labelled dev
half (../shared/data/dclm_human_quality_dev): balanced accuracy (mean of good-kept and bad-dropped
rates) at the shipped threshold, ROC AUC, precision/recall of 'keep'.

    python bench/quality_dev.py --cache /tmp/qdev.npz            # repeated stratified CV of the web-quality config
    python bench/quality_dev.py --cache /tmp/qdev.npz --nested   # + settings chosen by inner CV (slow)
    python bench/quality_dev.py --report /tmp/wq.json --stages-only  # rules, recipe stages (out-of-fold)

Without ``--report`` it builds the web-quality training config's examples and features once
(``--cache`` keeps them), then:

- the shipped settings: 5-fold x 5 repeated stratified cross-validation on the dev half, each fold's
  model fitted on the curated pool plus the other 4/5 of dev (weighted as the config says), scored
  at the config's threshold (0.5 on the calibrated probability, never tuned on the folds);
- with ``--nested``: the same outer folds, but the L2 penalty and the embedding weight chosen per
  outer fold by an inner 4-fold CV on its training part only — the estimate for "choose the
  settings on dev";
- the model fitted without any dev page (the curated pool only), scored on all of dev;
- feature blocks alone (embedding / rule statistics / + page shape), dev pages only, same folds.

With ``--report`` (the .json a ``thresher train-quality --config web-quality`` run writes beside its
model) it also combines that run's out-of-fold scores (``eval_cv.scores``) with the rule filters' own
keep/drop decisions, as the recipe's stages would.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from thresher.api import run_recipe
from thresher.operators.filter.quality_features import RULE_FEATURES
from thresher.operators.filter.quality_linear import fit_model, stratified_folds
from thresher.operators.filter.quality_metrics import binary_metrics, roc_auc

RULES = [{"gopher_repetition_filter": {}}, {"gopher_quality_filter": {}},
         {"c4_line_filter": {"filter_no_terminal_punct": False}}, {"c4_quality_filter": {}},
         {"fineweb_quality_filter": {}}]
GRID = [(l2, ew) for l2 in (3.0, 10.0, 30.0) for ew in (0.05, 0.1, 0.2)]


def rule_keep(dev: Path, rules: list[dict]) -> np.ndarray:
    """1 where these rule stages keep the page."""
    rows = [json.loads(line) for line in dev.read_text(encoding="utf-8").splitlines()]
    with tempfile.TemporaryDirectory() as tmp:
        run = run_recipe({"input": {"paths": [str(dev)], "id_key": "id"}, "output": {"path": f"{tmp}/o", "format": "jsonl"},
                          "process": rules})
        kept = {r["id"] for r in run.read().to_pylist()}
    return np.array([r["id"] in kept for r in rows], dtype=float)


def stages(report: Path, dev: Path, threshold: float) -> None:
    y = np.array([json.loads(line)["label"] for line in dev.read_text(encoding="utf-8").splitlines()])
    oof = np.array(json.loads(report.read_text())["eval_cv"]["scores"])
    rules, repetition = rule_keep(dev, RULES), rule_keep(dev, RULES[:1])
    clf = (oof >= threshold).astype(float)
    for name, keep in (("rules (Gopher+C4+FineWeb)", rules), ("classifier, out-of-fold", clf),
                       ("all rules, then classifier", rules * clf),
                       ("Gopher repetition, then classifier", repetition * clf)):
        m = binary_metrics(y, keep, 0.5)
        print(f"{name:<36} balanced accuracy {m['balanced_accuracy']:.3f}  precision {m['precision']:.3f}  "
              f"recall {m['recall']:.3f}  bad dropped {m['specificity']:.3f}  kept {int(keep.sum())}/{len(y)}")


def features(config: str, cache: Path | None):
    """(pool x, y, weight), (dev x, y), dev weight, embedding dim, config: the config's examples'
    features, the dev half (its eval set) apart."""
    from types import SimpleNamespace

    from thresher.operators.filter.quality_features import Featurizer
    from thresher.operators.filter.quality_training import _labelled, config_from_args, examples

    args = SimpleNamespace(config=config, text_key="text", positive=None, negative=None, labels=None, label_column=None,
                           label_threshold=None, eval=None, rule_features=False, output=None, seed=None, epoch=None,
                           model_type=None, eval_cv=None, threshold=None)
    cfg = config_from_args(args)
    dev_path = cfg.eval.path
    dev_weight = next((s.weight for s in cfg.labels if s.path == dev_path), 0.0)
    if cache is not None and cache.is_file():
        z = np.load(cache)
        return (z["xb"], z["yb"], z["wb"]), (z["xd"], z["yd"]), dev_weight, int(z["dim"]), cfg
    base = examples(cfg, skip=dev_path)
    dev_texts, yd = _labelled(cfg.eval)
    f = Featurizer(rules=cfg.rule_features, surface=cfg.surface_features, model_path=cfg.embedding_model,
                   tokenizer_path=cfg.embedding_tokenizer, max_tokens=cfg.max_tokens)
    xb, xd = f(base.texts), f(dev_texts)
    if cache is not None:
        np.savez(cache, xb=xb, yb=base.y, wb=base.weight, xd=xd, yd=yd, dim=f.dim)
    return (xb, base.y, base.weight), (xd, yd), dev_weight, f.dim, cfg


def cross_validate(pool, dev, dev_weight, dim, grid, threshold, repeats=5, k=5, seed=0, cols=None):
    """Balanced accuracy and AUC per outer fold (repeated stratified k-fold on dev); with several
    settings in ``grid``, each outer fold's are chosen by an inner 4-fold CV of its training part."""
    xd, yd = dev
    xd = xd if cols is None else xd[:, cols]
    xb = None if pool is None else (pool[0] if cols is None else pool[0][:, cols])

    def fit(idx, l2, ew):
        fw = np.r_[np.full(dim, ew), np.ones(xd.shape[1] - dim)] if dim else None
        if xb is None:
            return fit_model(xd[idx], yd[idx], l2=l2, seed=seed, feature_weight=fw)
        x, y = np.vstack([xb, xd[idx]]), np.r_[pool[1], yd[idx]]
        return fit_model(x, y, l2=l2, seed=seed, sample_weight=np.r_[pool[2], np.full(len(idx), dev_weight)],
                         feature_weight=fw)

    def bacc(y, p):
        return binary_metrics(y, p, threshold)["balanced_accuracy"]

    out, picked = [], []
    for rep in range(repeats):
        for fold in stratified_folds(yd, k, seed + rep):
            train = np.setdiff1d(np.arange(len(yd)), fold)
            setting = grid[0]
            if len(grid) > 1:
                inner = [np.mean([bacc(yd[train[g]], fit(np.delete(train, g), *s).predict_proba(xd[train[g]]))
                                  for g in stratified_folds(yd[train], 4, 100 + seed + rep)]) for s in grid]
                setting = grid[int(np.argmax(inner))]
            picked.append(setting)
            model = fit(train, *setting)
            out.append((bacc(yd[fold], model.predict_proba(xd[fold])), roc_auc(yd[fold], model.decision(xd[fold]))))
    return np.array(out), picked


def summary(name: str, res: np.ndarray) -> None:
    print(f"{name:<58} balanced accuracy {res[:, 0].mean():.3f} ± {res[:, 0].std(ddof=1):.3f}   "
          f"ROC AUC {res[:, 1].mean():.3f} ± {res[:, 1].std(ddof=1):.3f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="web-quality", help="a training config (file or shipped name)")
    ap.add_argument("--report", type=Path, help="the .json a web-quality training run wrote beside its model")
    ap.add_argument("--cache", type=Path, help="keep the features here (.npz) and reuse them")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--nested", action="store_true", help="also the nested run (9 settings x 4 inner folds per outer "
                    "fold: about 25 CPU-minutes)")
    ap.add_argument("--stages-only", action="store_true", help="with --report: only the rules / recipe stages")
    ap.add_argument("--data", default=os.environ.get("THRESHER_REAL_DATA", "../shared/data"))
    args = ap.parse_args()
    os.environ.setdefault("THRESHER_REAL_DATA", args.data)
    dev_file = Path(args.data) / "dclm_human_quality_dev" / "dev.jsonl"
    if args.report and args.stages_only:
        return stages(args.report, dev_file, 0.5)
    pool, dev, dev_weight, dim, cfg = features(args.config, args.cache)
    t = cfg.threshold
    print(f"dev half: {len(dev[1])} pages ({int(dev[1].sum())} good); pool: {len(pool[1])} examples; "
          f"threshold {t}; {args.repeats} x 5-fold stratified")
    shipped = [(cfg.l2, cfg.embedding_weight)]
    summary(f"shipped settings (l2 {cfg.l2:g}, embedding weight {cfg.embedding_weight:g}), pool + 4/5 dev",
            cross_validate(pool, dev, dev_weight, dim, shipped, t, args.repeats)[0])
    if args.nested:
        res, picked = cross_validate(pool, dev, dev_weight, dim, GRID, t, args.repeats)
        summary("nested: l2 and embedding weight chosen in inner CV", res)
        print("   chosen:", {f"l2 {a:g}, weight {b:g}": picked.count((a, b)) for a, b in sorted(set(picked))})
    fw = np.r_[np.full(dim, cfg.embedding_weight), np.ones(dev[0].shape[1] - dim)]
    alone = fit_model(pool[0], pool[1], l2=cfg.l2, sample_weight=pool[2], feature_weight=fw)
    m = binary_metrics(dev[1], alone.predict_proba(dev[0]), t)
    print(f"{'fitted without dev (curated pool only), on all of dev':<58} balanced accuracy {m['balanced_accuracy']:.3f}"
          f"          ROC AUC {m['auc']:.3f}")
    n = dev[0].shape[1]
    for name, cols, d in (("embedding alone, dev only (l2 10)", np.arange(dim), dim),
                          ("rule statistics alone, dev only", np.arange(dim, dim + len(RULE_FEATURES)), 0),
                          ("rules + page shape, dev only", np.arange(dim, n), 0),
                          ("all, embedding weight 1, dev only", np.arange(n), dim)):
        summary(name, cross_validate(None, dev, 1.0, d, [(10.0, 1.0)], t, args.repeats, cols=cols)[0])
    if args.report:
        stages(args.report, dev_file, t)


if __name__ == "__main__":
    main()
