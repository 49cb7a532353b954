"""How well a quality score agrees with labels: ROC AUC, precision / recall, balanced accuracy (the
mean of the good-kept and bad-dropped rates, the figure issue 17's human-labelled set is judged
by), and mean ± sd over cross-validation folds."""

from __future__ import annotations

import numpy as np


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney U) formula, with average ranks for ties."""
    pos = np.asarray(y) == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]  # 1-based ranks, ties averaged
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def binary_metrics(y: np.ndarray, score: np.ndarray, threshold: float = 0.5) -> dict:
    """Precision and recall of the positive (keep) class, specificity (bad dropped), balanced
    accuracy, accuracy and ROC AUC of ``score >= threshold`` against labels ``y`` (1 = good)."""
    y = np.asarray(y).astype(int)
    score = np.asarray(score, dtype=np.float64)
    pred = score >= threshold
    tp = int((pred & (y == 1)).sum())
    tn = int((~pred & (y == 0)).sum())
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    recall, specificity = tp / max(1, n_pos), tn / max(1, n_neg)
    return {"n": int(len(y)), "positive": n_pos, "threshold": threshold,
            "precision": round(tp / max(1, int(pred.sum())), 4), "recall": round(recall, 4),
            "specificity": round(specificity, 4), "balanced_accuracy": round((recall + specificity) / 2, 4),
            "accuracy": round((tp + tn) / max(1, len(y)), 4), "auc": round(roc_auc(y, score), 4)}


def mean_sd(per_fold: list[dict]) -> dict:
    """{metric: {"mean", "sd"}} over folds (sample sd), for the numeric metrics."""
    keys = [k for k in per_fold[0] if k not in ("n", "positive", "threshold")]
    out = {}
    for k in keys:
        v = np.array([f[k] for f in per_fold], dtype=np.float64)
        out[k] = {"mean": round(float(np.nanmean(v)), 4), "sd": round(float(np.nanstd(v, ddof=1)) if len(v) > 1 else 0.0, 4)}
    return out
