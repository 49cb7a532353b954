"""fastText quality classifier: train on positive and negative examples, score rows, keep the best.

Training follows the recipe of the DCLM and FineWeb-Edu-style classifiers: a supervised fastText
model on word uni- and bigrams (``wordNgrams=2``), one thread and a fixed seed so it is
reproducible, evaluated on a held-out split (precision, recall, ROC AUC).
"""

from __future__ import annotations

import json
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from operators.filter.langid import load_fasttext, one_line
from pipeline.errors import ThresherError
from pipeline.ops import Filter, OpParams, Resources
from pipeline.registry import register

POSITIVE = "__label__hq"
NEGATIVE = "__label__lq"


def positive_probability(model, texts: list[str]) -> np.ndarray:
    """P(high quality) per text. Only the top label is asked for: with k > 1 the fasttext-wheel
    binding under NumPy 2 returns the top probability for every label. With two labels,
    P(hq) = p(top) if the top label is hq, else 1 - p(top)."""
    labels, probs = model.f.multilinePredict(texts, 1, 0.0, "strict")
    top = np.clip(np.array([p[0] if len(p) else 0.5 for p in probs], dtype=np.float64), 0.0, 1.0)
    is_pos = np.array([len(lab) > 0 and lab[0] == POSITIVE for lab in labels], dtype=bool)
    return np.where(is_pos, top, 1.0 - top)


@register
class QualityClassifier(Filter):
    """Score rows with a fastText quality model (quality_score = P(high quality)) and keep those at or
    above a threshold, and/or the top fraction of the corpus by score."""

    name = "quality_classifier"
    stats = {"quality_score": "probability of the high-quality label"}
    resources = Resources(cpus=1.0, memory_mb=500, needs_model=True)

    class Params(OpParams):
        model_path: str = Field(description="a model from `thresher train-quality` (fastText .bin)")
        threshold: float | None = Field(0.5, ge=0, le=1, description="keep rows scoring at least this (null: keep all, score only)")
        top_fraction: float | None = Field(None, gt=0, le=1, description="then keep this share of the corpus with the best scores (a global step)")
        score_key: str = Field("quality_score", description="column for the score")
        max_chars: int | None = Field(None, ge=1, description="score only the first N characters")

    example = {"model_path": "models/quality.bin", "threshold": 0.5}

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.params.score_key,)

    def expand(self):
        if self.params.top_fraction is None:
            return []
        from dataclasses import replace

        from operators.select.topk import SelectTop

        params = SelectTop.Params(column=self.params.score_key, fraction=self.params.top_fraction)
        return [SelectTop(params, replace(self.ctx, key=f"{self.ctx.key}.top"))]

    def prepare(self) -> None:
        if not Path(self.params.model_path).is_file():
            raise ThresherError(f"quality_classifier: model_path '{self.params.model_path}' does not exist "
                                "(train one with `thresher train-quality`)")

    def setup(self) -> None:
        self._model = load_fasttext(str(Path(self.params.model_path).resolve()))

    def compute_stats(self, batch: pa.Table) -> dict[str, pa.Array]:
        text = batch[self.text_key]
        if self.params.max_chars:
            text = pc.utf8_slice_codeunits(text, 0, self.params.max_chars)
        return {self.params.score_key: pa.array(positive_probability(self._model, one_line(text)))}

    def drop_reasons(self, stats):
        s = stats[self.params.score_key].to_numpy()
        thr = self.params.threshold
        return {"quality_score_too_low": s < thr if thr is not None else np.zeros(len(s), dtype=bool)}


# ----------------------------------------------------------------------------- training
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
    import gzip

    path = Path(src.path)
    if not path.is_file():
        raise ThresherError(f"training source '{src.path}' does not exist")
    fmt = src.format
    name = path.name.lower()
    if fmt == "auto":
        fmt = ("parquet" if name.endswith(".parquet") else "json" if name.endswith(".json")
               else "lines" if name.endswith(".txt") else "jsonl")
    opener = gzip.open if name.endswith(".gz") else open
    if fmt == "parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    elif fmt == "json":
        with opener(path, "rt", encoding="utf-8") as f:
            rows = json.load(f)
    elif fmt == "lines":
        with opener(path, "rt", encoding="utf-8") as f:
            rows = [{src.text_key: line} for line in f if line.strip()]
    else:
        with opener(path, "rt", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
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
