"""A calibrated logistic-regression quality model on sentence embeddings (and, optionally, the
Gopher / C4 / FineWeb rule statistics), the ``embedding-logreg`` model type of ``thresher
train-quality`` and ``quality_classifier``.

This is the recipe of the FineWeb-Edu classifier (Penedo et al. 2024, "The FineWeb Datasets":
a linear head on frozen sentence embeddings) and of NeMo Curator's quality classifiers, on CPU
and numpy only: L2-regularised logistic regression fitted by Newton's method (IRLS; the problem is
convex and small — a few hundred features — so it converges in a handful of exact steps and the
result does not depend on a seed), then Platt scaling (Platt 1999, with his smoothed targets)
fitted on out-of-fold decision values so the probabilities are calibrated on examples the model
did not see (as scikit-learn's ``CalibratedClassifierCV(ensemble=False)``). scikit-learn would add
a large dependency for these two fits; numpy's linear algebra is enough.

The model file is a ``.npz`` written and read with ``allow_pickle=False`` (arrays and one JSON
string of metadata: the format, the embedding model's name and dimension, the rule features, the
training sources and figures), so loading a model from elsewhere runs no code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT = "thresher-quality-linear/1"


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, sample_weight: np.ndarray | None = None,
                 max_iter: int = 50, tol: float = 1e-8) -> tuple[np.ndarray, float]:
    """Weights and bias minimising the mean log loss + ``l2/(2n)·|w|²`` (the bias is not penalised),
    by Newton's method with a backtracking-free damped step. Deterministic."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, d = x.shape
    sw = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    sw = sw * (n / sw.sum())
    xa = np.hstack([x, np.ones((n, 1))])
    beta = np.zeros(d + 1)
    reg = np.full(d + 1, l2)
    reg[-1] = 0.0
    for _ in range(max_iter):
        p = sigmoid(xa @ beta)
        grad = xa.T @ (sw * (p - y)) + reg * beta
        w = sw * p * (1 - p)
        hess = (xa * w[:, None]).T @ xa + np.diag(reg + 1e-9)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.max(np.abs(step)) < tol:
            break
    return beta[:-1], float(beta[-1])


def fit_platt(decision: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> tuple[float, float]:
    """Platt scaling: ``p = sigmoid(a·z + b)`` fitted on decision values ``z`` with Platt's smoothed
    targets ((n+ + 1)/(n+ + 2) and 1/(n- + 2)), which keep a separable set from giving a step;
    ``sample_weight``: the examples' weights (a source weighted up in training counts as much here)."""
    y = np.asarray(y)
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    target = np.where(y == 1, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
    w, b = fit_logistic(np.asarray(decision, dtype=np.float64)[:, None], target, l2=0.0, sample_weight=sample_weight)
    return float(w[0]), b


def folds(n: int, k: int, seed: int) -> list[np.ndarray]:
    """k disjoint index sets covering range(n), from a seeded permutation."""
    return np.array_split(np.random.default_rng(seed).permutation(n), k)


def stratified_folds(y: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """k disjoint sorted index sets covering range(len(y)), each with (within one) the same number of
    examples of every class: each class's examples, seeded-shuffled, dealt round the folds."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=np.int64)
    start = 0
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        fold[idx[rng.permutation(len(idx))]] = (start + np.arange(len(idx))) % k
        start += len(idx)
    return [np.flatnonzero(fold == f) for f in range(k)]


@dataclass
class LinearQualityModel:
    """Standardise the features, then ``P(high quality) = sigmoid(a·(w·x + b) + c)``."""

    weights: np.ndarray
    bias: float
    mean: np.ndarray
    scale: np.ndarray
    platt: tuple[float, float] = (1.0, 0.0)
    meta: dict = field(default_factory=dict)

    def decision(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, dtype=np.float64) - self.mean) / self.scale) @ self.weights + self.bias

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        a, c = self.platt
        return sigmoid(a * self.decision(x) + c)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, weights=self.weights, bias=np.float64(self.bias), mean=self.mean, scale=self.scale,
                 platt=np.array(self.platt, dtype=np.float64),
                 meta=np.array(json.dumps({"format": FORMAT, **self.meta}, sort_keys=True)))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> LinearQualityModel:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != FORMAT:
                raise ValueError(f"{path}: not a {FORMAT} model (format {meta.get('format')!r})")
            return cls(weights=z["weights"], bias=float(z["bias"]), mean=z["mean"], scale=z["scale"],
                       platt=tuple(float(v) for v in z["platt"]), meta=meta)


def fit_model(x: np.ndarray, y: np.ndarray, l2: float = 1.0, calibration_folds: int = 5, seed: int = 0,
              meta: dict | None = None, sample_weight: np.ndarray | None = None,
              feature_weight: np.ndarray | None = None) -> LinearQualityModel:
    """Standardise, fit the logistic model on everything, and Platt-calibrate it on out-of-fold
    decision values weighted as the examples are (``calibration_folds`` < 2: no calibration, the
    logistic's own probabilities). Each class weighs half in total; ``sample_weight`` sets the
    weights within a class. ``feature_weight`` multiplies each standardised feature (kept in the
    model's scale): a block at weight ``a`` is penalised as if by ``l2 / a²`` — how a few hundred
    embedding dimensions are kept from drowning a few dozen page statistics on a small set."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-12] = 1.0
    if feature_weight is not None:
        scale = scale / np.asarray(feature_weight, dtype=np.float64)
    xs = (x - mean) / scale
    # equal weight to both classes: the prior of the training mix is not the corpus's
    sw = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    cw = sw * np.where(y == 1, 0.5 / max(1e-12, sw[y == 1].sum()), 0.5 / max(1e-12, sw[y == 0].sum()))
    w, b = fit_logistic(xs, y, l2=l2, sample_weight=cw)
    platt = (1.0, 0.0)
    if calibration_folds >= 2:
        oof = np.empty(len(y))
        for idx in folds(len(y), calibration_folds, seed):
            train = np.setdiff1d(np.arange(len(y)), idx)
            wf, bf = fit_logistic(xs[train], y[train], l2=l2, sample_weight=cw[train])
            oof[idx] = xs[idx] @ wf + bf
        platt = fit_platt(oof, y, sw)
    return LinearQualityModel(weights=w, bias=b, mean=mean, scale=scale, platt=platt, meta=dict(meta or {}))

