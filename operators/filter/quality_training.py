"""Training a fastText quality classifier for ``quality_classifier`` (``thresher train-quality``).

Training follows the recipe of the DCLM and FineWeb-Edu-style classifiers: a supervised fastText
model on word uni- and bigrams (``wordNgrams=2``), one thread and a fixed seed so it is
reproducible, evaluated on a held-out split (precision, recall, ROC AUC). Examples are read with
the side-file reader (JSONL, a JSON array, Parquet or one example per line).
"""

from __future__ import annotations

import json
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import Field, model_validator

from thresher.operators.filter.quality import NEGATIVE, POSITIVE, positive_probability
from thresher.pipeline.errors import ThresherError
from thresher.pipeline.io.side_files import read_side_file
from thresher.pipeline.ops import OpParams


class Source(OpParams):
    """One file of training examples."""

    path: str
    text_key: str = "text"
    format: str = Field("auto", description="auto | jsonl | json (an array) | lines (one example per line) | parquet")
    where: dict[str, str | int | bool] = Field(default_factory=dict, description="keep records whose fields equal these")
    chunk_chars: int | None = Field(None, description="split long texts into pieces of about this many characters")


class TrainConfig(OpParams):
    positive: list[Source]
    negative: list[Source]
    output: str = "models/quality.bin"
    seed: int = 0
    test_fraction: float = Field(0.2, gt=0, lt=1)
    epoch: int = 10
    lr: float = 0.5
    dim: int = 64
    word_ngrams: int = 2
    min_count: int = 1
    max_per_class: int | None = None
    balance: bool = Field(True, description="downsample the larger class to the smaller")

    @model_validator(mode="after")
    def _some(self):
        if not self.positive or not self.negative:
            raise ValueError("give at least one positive and one negative source")
        return self


def _records(src: Source) -> list[str]:
    rows = read_side_file(src.path, src.text_key, src.format, what="training source")
    texts = []
    for r in rows:
        if any(r.get(k) != v for k, v in src.where.items()):
            continue
        t = r.get(src.text_key)
        if not isinstance(t, str) or not t.strip():
            continue
        if src.chunk_chars:
            texts += _chunks(t, src.chunk_chars)
        else:
            texts.append(t)
    return texts


def _chunks(text: str, size: int) -> list[str]:
    out, cur = [], ""
    for para in text.split("\n"):
        if cur and len(cur) + len(para) > size:
            out.append(cur)
            cur = ""
        cur = f"{cur}\n{para}" if cur else para
    if cur.strip():
        out.append(cur)
    return out


def _clean(text: str) -> str:
    return " ".join(text.split())


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney U) formula, with average ranks for ties."""
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]  # 1-based ranks, ties averaged
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@dataclass
class TrainReport:
    model: str
    train_examples: dict
    test_examples: dict
    precision: float
    recall: float
    auc: float

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def train_quality(cfg: TrainConfig) -> TrainReport:
    import fasttext

    rng = random.Random(cfg.seed)
    pos = [_clean(t) for s in cfg.positive for t in _records(s)]
    neg = [_clean(t) for s in cfg.negative for t in _records(s)]
    rng.shuffle(pos)
    rng.shuffle(neg)
    if cfg.balance:
        n = min(len(pos), len(neg))
        pos, neg = pos[:n], neg[:n]
    if cfg.max_per_class:
        pos, neg = pos[: cfg.max_per_class], neg[: cfg.max_per_class]
    if len(pos) < 10 or len(neg) < 10:
        raise ThresherError(f"too few examples to train on: {len(pos)} positive, {len(neg)} negative")
    data = [(1, t) for t in pos] + [(0, t) for t in neg]
    rng.shuffle(data)
    n_test = max(2, int(len(data) * cfg.test_fraction))
    test, train = data[:n_test], data[n_test:]
    out = Path(cfg.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        for y, t in train:
            f.write(f"{POSITIVE if y else NEGATIVE} {t}\n")
        train_file = f.name
    try:
        model = fasttext.train_supervised(input=train_file, epoch=cfg.epoch, lr=cfg.lr, dim=cfg.dim,
                                          wordNgrams=cfg.word_ngrams, minCount=cfg.min_count, thread=1,
                                          seed=cfg.seed, verbose=0)
    finally:
        Path(train_file).unlink(missing_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    model.save_model(str(tmp))
    tmp.replace(out)
    y = np.array([d[0] for d in test])
    score = positive_probability(model, [d[1] for d in test])
    pred = score >= 0.5
    tp = int((pred & (y == 1)).sum())
    report = TrainReport(
        model=str(out),
        train_examples={"positive": sum(1 for d in train if d[0]), "negative": sum(1 for d in train if not d[0])},
        test_examples={"positive": int((y == 1).sum()), "negative": int((y == 0).sum())},
        precision=tp / max(1, int(pred.sum())), recall=tp / max(1, int((y == 1).sum())), auc=roc_auc(y, score))
    out.with_suffix(".json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report
