"""Training a quality classifier for ``quality_classifier`` (``thresher train-quality``).

Two model types:

- ``fasttext``: the recipe of the DCLM classifier — a supervised fastText model on word uni- and
  bigrams (``wordNgrams=2``), one thread and a fixed seed so it is reproducible;
- ``embedding-logreg``: the recipe of the FineWeb-Edu classifier (Penedo et al. 2024) — a linear
  model on frozen sentence embeddings, here logistic regression with Platt-calibrated
  probabilities, optionally with the Gopher / C4 / FineWeb rule statistics as extra features
  (``operators.filter.quality_linear``, ``quality_features``).

Examples come from positive and negative files, or from one labelled file (``labels``: a score
column, e.g. an LLM's 0-5 educational score from ``llm_quality_score``, positive at or above a
threshold — FineWeb-Edu's distillation of an LLM judge into a CPU classifier). Every run reports
precision, recall, balanced accuracy and ROC AUC on a held-out split of the examples and, when
given (``eval``), on a labelled evaluation set such as human quality labels; ``eval_cv`` adds a
k-fold figure (mean ± sd) for models trained with the other folds of that set added. Files are
read with the side-file reader (JSONL, a JSON array, Parquet or one example per line).
"""

from __future__ import annotations

import json
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from thresher.operators.filter.quality import NEGATIVE, POSITIVE, positive_probability
from thresher.operators.filter.quality_metrics import binary_metrics, mean_sd, roc_auc
from thresher.pipeline.errors import ThresherError
from thresher.pipeline.io.side_files import read_side_file
from thresher.pipeline.ops import OpParams

__all__ = ["Source", "LabelSource", "EvalSet", "TrainConfig", "TrainReport", "train_quality", "roc_auc"]

MODEL_TYPES = ("fasttext", "embedding-logreg")


class Source(OpParams):
    """One file of training examples."""

    path: str
    text_key: str = "text"
    format: str = Field("auto", description="auto | jsonl | json (an array) | lines (one example per line) | parquet")
    where: dict[str, str | int | bool] = Field(default_factory=dict, description="keep records whose fields equal these")
    chunk_chars: int | None = Field(None, description="split long texts into pieces of about this many characters")
    min_chars: int = Field(1, ge=1, description="skip texts (pieces) shorter than this")
    max_examples: int | None = Field(None, ge=1, description="at most this many examples from this file (a seeded sample)")
    weight: float = Field(1.0, gt=0, description="(embedding-logreg) weight of each example")


class LabelSource(OpParams):
    """A file of labelled examples: a score column, positive at or above ``threshold``."""

    path: str
    label_key: str = Field("score", description="the column with the label or score")
    text_key: str = "text"
    format: str = "auto"
    threshold: float = Field(3.0, description="positive when the label is at least this (FineWeb-Edu: score >= 3)")
    weight: float = Field(1.0, gt=0, description="(embedding-logreg) weight of each example")


class EvalSet(OpParams):
    """A labelled set to report on (never trained on, except in ``eval_cv``'s folds)."""

    path: str
    label_key: str = "label"
    text_key: str = "text"
    format: str = "auto"
    threshold: float = Field(1.0, description="a label at least this is 'good'")
    if_missing: Literal["skip", "error"] = Field("skip", description="a set that is not there: skip the report, or fail")


class TrainConfig(OpParams):
    model_type: Literal["fasttext", "embedding-logreg"] = "fasttext"
    positive: list[Source] = Field(default_factory=list)
    negative: list[Source] = Field(default_factory=list)
    labels: list[LabelSource] = Field(default_factory=list)
    output: str | None = Field(None, description="default models/quality.bin (fasttext) or models/quality.npz")
    config_sha: str | None = Field(None, description="set by --config: the config file's sha256, recorded in the "
                                   "model so a built-in model trained by an older config is detected")
    seed: int = 0
    test_fraction: float = Field(0.2, gt=0, lt=1)
    max_per_class: int | None = None
    balance: bool = Field(True, description="downsample the larger class to the smaller")
    threshold: float = Field(0.5, ge=0, le=1, description="the keep threshold the reports use")
    eval: EvalSet | None = None
    eval_cv: int = Field(0, ge=0, description="k-fold figures with k-1 folds of the eval set added to training (0: none)")
    eval_cv_repeats: int = Field(1, ge=1, description="repeat eval_cv this many times with other (stratified, seeded) folds")
    # fasttext
    epoch: int = 10
    lr: float = 0.5
    dim: int = 64
    word_ngrams: int = 2
    min_count: int = 1
    # embedding-logreg
    rule_features: bool = Field(False, description="add the Gopher/C4/FineWeb rule statistics to the embedding")
    surface_features: bool = Field(False, description="add page-shape statistics (length, line lengths, links, "
                                   "separators, page furniture; quality_features.SURFACE_FEATURES)")
    embedding_weight: float = Field(1.0, gt=0, description="weight of the standardised embedding features against "
                                    "the statistics (a is an L2 penalty 1/a² as strong on the embedding)")
    l2: float = Field(1.0, ge=0, description="L2 penalty of the logistic regression (on standardised features)")
    calibration_folds: int = Field(5, ge=0, description="Platt scaling on out-of-fold scores from this many folds (<2: none)")
    embedding_model: str | None = Field(None, description="an ONNX sentence-embedding model (default: all-MiniLM-L6-v2 int8)")
    embedding_tokenizer: str | None = Field(None, description="its tokenizer.json")
    max_tokens: int = Field(256, ge=8, description="tokens embedded per text")

    @model_validator(mode="after")
    def _some(self):
        if not self.labels and (not self.positive or not self.negative):
            raise ValueError("give at least one positive and one negative source, or a labels file")
        return self

    @property
    def model_path(self) -> Path:
        from thresher.operators.filter.quality import resolve_model_path

        return resolve_model_path(self.output or ("models/quality.bin" if self.model_type == "fasttext"
                                                  else "models/quality.npz"))


def _paragraphs(text: str, size: int):
    """The text's lines, those longer than ``size`` cut at the last sentence end before it."""
    for para in text.split("\n"):
        while len(para) > size:
            cut = para.rfind(". ", 0, size)
            cut = cut + 1 if cut > size // 3 else size
            yield para[:cut]
            para = para[cut:].lstrip()
        yield para


def _chunks(text: str, size: int) -> list[str]:
    out, cur = [], ""
    for para in _paragraphs(text, size):
        if cur and len(cur) + len(para) > size:
            out.append(cur)
            cur = ""
        cur = f"{cur}\n{para}" if cur else para
    if cur.strip():
        out.append(cur)
    return out


def _records(src: Source, seed: int) -> list[str]:
    rows = read_side_file(src.path, src.text_key, src.format, what="training source")
    texts = []
    for r in rows:
        if any(r.get(k) != v for k, v in src.where.items()):
            continue
        t = r.get(src.text_key)
        if not isinstance(t, str) or not t.strip():
            continue
        texts += _chunks(t, src.chunk_chars) if src.chunk_chars else [t]
    texts = [t for t in texts if len(t.strip()) >= src.min_chars]
    if src.max_examples and len(texts) > src.max_examples:
        # seeded by the file's name, not its path: the same sample wherever the data lives
        texts = random.Random(f"{seed}:{Path(src.path).name}").sample(texts, src.max_examples)
    return texts


def _labelled(src: LabelSource | EvalSet) -> tuple[list[str], np.ndarray]:
    texts, labels = [], []
    for r in read_side_file(src.path, src.text_key, src.format, what="labels file"):
        t, v = r.get(src.text_key), r.get(src.label_key)
        if isinstance(t, str) and t.strip() and isinstance(v, int | float):  # bools too
            texts.append(t)
            labels.append(int(float(v) >= src.threshold))
    if not texts:
        raise ThresherError(f"'{src.path}': no records with a text '{src.text_key}' and a numeric '{src.label_key}'")
    return texts, np.array(labels, dtype=np.int64)


def _clean(text: str) -> str:
    return " ".join(text.split())


@dataclass
class Examples:
    texts: list[str]
    y: np.ndarray
    weight: np.ndarray

    def __len__(self) -> int:
        return len(self.texts)

    def __add__(self, other: Examples) -> Examples:
        return Examples(self.texts + other.texts, np.concatenate([self.y, other.y]),
                        np.concatenate([self.weight, other.weight]))


def examples(cfg: TrainConfig, skip: str | None = None) -> Examples:
    """The training examples, shuffled (seeded): the positive and negative files' balanced and capped
    as configured, then every labelled file's (but ``skip``, the evaluation set's path)."""
    rng = random.Random(cfg.seed)
    pos = [(t, s.weight) for s in cfg.positive for t in _records(s, cfg.seed)]
    neg = [(t, s.weight) for s in cfg.negative for t in _records(s, cfg.seed)]
    rng.shuffle(pos)
    rng.shuffle(neg)
    if cfg.balance and pos and neg:
        n = min(len(pos), len(neg))
        pos, neg = pos[:n], neg[:n]
    if cfg.max_per_class:
        pos, neg = pos[: cfg.max_per_class], neg[: cfg.max_per_class]
    data = [(1, t, w) for t, w in pos] + [(0, t, w) for t, w in neg]
    for src in cfg.labels:
        if src.path != skip:
            texts, y = _labelled(src)
            data += [(int(v), t, src.weight) for t, v in zip(texts, y, strict=True)]
    rng.shuffle(data)
    return Examples([d[1] for d in data], np.array([d[0] for d in data], dtype=np.int64),
                    np.array([d[2] for d in data], dtype=np.float64))


class _FastText:
    """fastText on the examples' one-line texts."""

    def __init__(self, cfg: TrainConfig, texts: list[str]):
        self.cfg = cfg
        self.texts = [_clean(t) for t in texts]

    def fit(self, idx: np.ndarray, y: np.ndarray, w: np.ndarray):  # fastText has no example weights
        import fasttext

        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
            for i, label in zip(idx, y, strict=True):
                f.write(f"{POSITIVE if label else NEGATIVE} {self.texts[i]}\n")
            train_file = f.name
        c = self.cfg
        try:
            return fasttext.train_supervised(input=train_file, epoch=c.epoch, lr=c.lr, dim=c.dim, wordNgrams=c.word_ngrams,
                                             minCount=c.min_count, thread=1, seed=c.seed, verbose=0)
        finally:
            Path(train_file).unlink(missing_ok=True)

    def score(self, model, idx: np.ndarray) -> np.ndarray:
        return positive_probability(model, [self.texts[i] for i in idx])

    def save(self, model, out: Path, meta: dict) -> None:
        tmp = out.with_name(out.name + ".tmp")
        model.save_model(str(tmp))
        tmp.replace(out)


class _Linear:
    """Calibrated logistic regression on embeddings (+ rule statistics), features computed once."""

    def __init__(self, cfg: TrainConfig, texts: list[str]):
        from thresher.operators.filter.quality_features import Featurizer

        self.cfg = cfg
        self.featurizer = Featurizer(rules=cfg.rule_features, surface=cfg.surface_features, model_path=cfg.embedding_model,
                                     tokenizer_path=cfg.embedding_tokenizer, max_tokens=cfg.max_tokens)
        self.x = self.featurizer(texts)
        dim = self.featurizer.dim
        self.feature_weight = np.r_[np.full(dim, cfg.embedding_weight), np.ones(self.x.shape[1] - dim)]

    def fit(self, idx: np.ndarray, y: np.ndarray, w: np.ndarray):
        from thresher.operators.filter.quality_linear import fit_model

        return fit_model(self.x[idx], y, l2=self.cfg.l2, calibration_folds=self.cfg.calibration_folds, seed=self.cfg.seed,
                         sample_weight=w, feature_weight=self.feature_weight)

    def score(self, model, idx: np.ndarray) -> np.ndarray:
        return model.predict_proba(self.x[idx])

    def save(self, model, out: Path, meta: dict) -> None:
        model.meta = {**self.featurizer.describe(), **meta}
        model.save(out)


@dataclass
class TrainReport:
    model: str
    model_type: str
    train_examples: dict
    test_examples: dict
    precision: float
    recall: float
    auc: float
    balanced_accuracy: float = 0.0
    eval: dict | None = None  # metrics on the eval set, of the model trained without it
    eval_cv: dict | None = None  # mean ± sd over k folds of the eval set, trained with the other folds added
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def _eval_set(cfg: TrainConfig) -> tuple[list[str], np.ndarray] | None:
    if cfg.eval is None:
        return None
    if not Path(cfg.eval.path).is_file() and cfg.eval.if_missing == "skip":
        return None
    return _labelled(cfg.eval)


def train_quality(cfg: TrainConfig) -> TrainReport:
    """Train, report and save. Figures: the held-out split (a model fitted without it); the eval
    set (a model fitted without it, even where ``labels`` names it too); ``eval_cv`` folds (fitted
    with the other folds added). The saved model is fitted on every training example."""
    evalset = _eval_set(cfg)
    ev_path = cfg.eval.path if evalset is not None else None
    ev_src = next((s for s in cfg.labels if s.path == ev_path), None)  # the eval set is training data too
    base = examples(cfg, skip=ev_path)
    ev = Examples(evalset[0], evalset[1], np.full(len(evalset[1]), ev_src.weight if ev_src else 1.0)) if evalset else None
    pool = base + ev if ev is not None and ev_src is not None else base
    if int(pool.y.sum()) < 10 or int((pool.y == 0).sum()) < 10:
        raise ThresherError(f"too few examples to train on: {int(pool.y.sum())} positive, {int((pool.y == 0).sum())} negative")
    everything = pool if ev is None or ev_src is not None else pool + ev
    trainer = (_FastText if cfg.model_type == "fasttext" else _Linear)(cfg, everything.texts)
    y, w = everything.y, everything.weight
    order = np.random.default_rng(cfg.seed).permutation(len(pool))
    n_test = max(2, int(len(pool) * cfg.test_fraction))
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    held = binary_metrics(y[test], trainer.score(trainer.fit(train, y[train], w[train]), test), cfg.threshold)
    report = TrainReport(model=str(cfg.model_path), model_type=cfg.model_type,
                         train_examples={"positive": int(pool.y.sum()), "negative": int((pool.y == 0).sum())},
                         test_examples={"positive": int(y[test].sum()), "negative": int((y[test] == 0).sum())},
                         precision=held["precision"], recall=held["recall"], auc=held["auc"],
                         balanced_accuracy=held["balanced_accuracy"])
    if cfg.eval is not None and evalset is None:
        report.notes.append(f"eval set '{cfg.eval.path}' is not there: no eval report")
    if ev is not None:
        b = np.arange(len(base))
        e = np.arange(len(base), len(base) + len(ev))
        if int(base.y.sum()) and int((base.y == 0).sum()):
            report.eval = binary_metrics(ev.y, trainer.score(trainer.fit(b, y[b], w[b]), e), cfg.threshold)
        if cfg.eval_cv >= 2:
            from thresher.operators.filter.quality_linear import stratified_folds

            per_fold, oof = [], np.zeros(len(ev))
            for rep in range(cfg.eval_cv_repeats):
                for fold in stratified_folds(ev.y, cfg.eval_cv, cfg.seed + rep):
                    rest = np.concatenate([b, e[np.setdiff1d(np.arange(len(ev)), fold)]])
                    scores = trainer.score(trainer.fit(rest, y[rest], w[rest]), e[fold])
                    if rep == 0:
                        oof[fold] = scores
                    per_fold.append(binary_metrics(ev.y[fold], scores, cfg.threshold))
            # the first repeat's out-of-fold scores, in the eval set's order: to combine with other filters' decisions
            report.eval_cv = {"k": cfg.eval_cv, "repeats": cfg.eval_cv_repeats, **mean_sd(per_fold),
                              "scores": [round(float(v), 5) for v in oof]}
    out = cfg.model_path
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"model_type": cfg.model_type, "seed": cfg.seed, "threshold": cfg.threshold, "config_sha": cfg.config_sha,
            "train_examples": report.train_examples, "held_out": held, "eval": report.eval,
            "eval_cv": {k: v for k, v in (report.eval_cv or {}).items() if k != "scores"} or None}
    every = np.arange(len(pool))
    trainer.save(trainer.fit(every, y[every], w[every]), out, meta)
    out.with_suffix(".json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report


def shipped_config(name: str) -> Path:
    """A shipped training config (recipes/training/NAME.yaml)."""
    from importlib import resources

    return Path(str(resources.files("thresher.recipes"))) / "training" / f"{name}.yaml"


def config_sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def config_from_args(args) -> TrainConfig:
    """``thresher train-quality``'s arguments as a config: ``--config`` (a file or a shipped name),
    then the files and options given on the command line on top."""
    import yaml
    from pydantic import ValidationError

    from thresher.pipeline.recipe import interpolate

    raw: dict = {}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            path = shipped_config(args.config)
            if not path.is_file():
                raise ThresherError(f"training config '{args.config}' is neither a file nor a shipped config "
                                    f"(recipes/training/*.yaml)")
        raw = interpolate(yaml.safe_load(path.read_text(encoding="utf-8")) or {}, str(path))
        raw["config_sha"] = config_sha(path)
    text_key = args.text_key
    for kind in ("positive", "negative"):
        raw[kind] = raw.get(kind, []) + [{"path": p, "text_key": text_key} for p in getattr(args, kind) or []]
    raw["labels"] = raw.get("labels", []) + [
        {"path": p, "text_key": text_key, "label_key": args.label_column,
         **({"threshold": args.label_threshold} if args.label_threshold is not None else {})} for p in args.labels or []]
    if args.labels and not args.label_column:
        raise ThresherError("--labels needs --label-column (the column with the label or score)")
    if not args.config and not args.labels and (not args.positive or not args.negative):
        raise ThresherError("give --positive and --negative files, --labels FILE --label-column COL, or --config")
    if args.eval:
        raw["eval"] = {"path": args.eval, "if_missing": "error"}
    for key in ("output", "seed", "epoch", "model_type", "eval_cv", "threshold"):
        if getattr(args, key, None) is not None:
            raw[key] = getattr(args, key)
    if args.rule_features:
        raw["rule_features"] = True
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as e:
        raise ThresherError(f"training config: {e}") from None


def _line(name: str, m: dict) -> str:
    return (f"{name}: precision {m['precision']:.3f}  recall {m['recall']:.3f}  balanced accuracy "
            f"{m['balanced_accuracy']:.3f}  ROC AUC {m['auc']:.4f}")


def format_report(r: TrainReport) -> str:
    """The report as the command line prints it."""
    lines = [f"model: {r.model} ({r.model_type})", f"train: {r.train_examples}  held-out: {r.test_examples}",
             _line("held-out", {"precision": r.precision, "recall": r.recall, "auc": r.auc,
                                "balanced_accuracy": r.balanced_accuracy})]
    if r.eval:
        lines.append(_line(f"eval set ({r.eval['n']} rows, threshold {r.eval['threshold']})", r.eval))
    if r.eval_cv:
        cv = r.eval_cv
        lines.append(f"eval set, {cv['k']}-fold x {cv.get('repeats', 1)} with the other folds in training: " + "  ".join(
            f"{k} {cv[k]['mean']:.3f}±{cv[k]['sd']:.3f}" for k in ("precision", "recall", "balanced_accuracy", "auc")))
    return "\n".join(lines + r.notes)
