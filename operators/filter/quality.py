"""Quality classifier: score rows with a model trained on positive and negative examples
(``operators.filter.quality_training``, ``thresher train-quality``), keep the best. The model is a
fastText ``.bin`` (DCLM-style) or a calibrated logistic regression on sentence embeddings
(``.npz``, FineWeb-Edu-style, ``operators.filter.quality_linear``); the file says which.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from thresher.operators.filter.langid import load_fasttext, one_line
from thresher.pipeline.columns import under
from thresher.pipeline.errors import ThresherError
from thresher.pipeline.ops import Bound, Filter, OpParams, Resources
from thresher.pipeline.registry import register

POSITIVE = "__label__hq"
NEGATIVE = "__label__lq"
BUILTIN = "builtin:"  # model_path "builtin:NAME": a model trained by a shipped config into the cache


def builtin_model_path(name: str) -> Path:
    """Where ``builtin:NAME`` lives: ``$THRESHER_CACHE/models/NAME.npz``. Built-in models are trained on
    the machine by ``thresher train-quality --config NAME`` (recipes/training/NAME.yaml), not shipped:
    the data they learn from is licensed for testing and benchmarking only (some of it non-commercial)."""
    from thresher.pipeline.assets import cache_dir

    return cache_dir("models") / f"{name}.npz"


def resolve_model_path(path: str) -> Path:
    """A model file: a path, or ``builtin:NAME`` for one trained from a shipped training config."""
    if path.startswith(BUILTIN):
        return builtin_model_path(path[len(BUILTIN):])
    return Path(path)


def missing_model_message(path: str) -> str:
    if path.startswith(BUILTIN):
        name = path[len(BUILTIN):]
        return (f"quality_classifier: model '{path}' is not trained on this machine ({builtin_model_path(name)}): "
                f"run `thresher train-quality --config {name}` once (it reads the labelled data its config names, "
                f"recipes/training/{name}.yaml), or set model_path to your own model")
    return f"quality_classifier: model_path '{path}' does not exist (train one with `thresher train-quality`)"


def check_builtin_current(path: str, meta: dict) -> None:
    """A ``builtin:NAME`` model must come from the shipped config NAME as it is now: one trained by an
    older thresher's config would make the same recipe keep different rows on different machines."""
    if not path.startswith(BUILTIN):
        return
    from thresher.operators.filter.quality_training import config_sha, shipped_config

    name = path[len(BUILTIN):]
    config = shipped_config(name)
    if config.is_file() and meta.get("config_sha") != config_sha(config):
        raise ThresherError(f"quality_classifier: model '{path}' ({builtin_model_path(name)}) was trained by another "
                            f"version of recipes/training/{name}.yaml: run `thresher train-quality --config {name}` "
                            "again to train it from this version")


def is_linear_model(path: Path) -> bool:
    """An ``embedding-logreg`` model (a .npz, i.e. a zip archive) rather than a fastText .bin."""
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


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
    """Score rows with a quality model (quality_score = P(high quality)) and keep those at or above a
    threshold, and/or the top fraction of the corpus by score. The model is either type ``thresher
    train-quality`` makes: fastText (DCLM, Li et al. 2024) or a Platt-calibrated logistic regression
    on MiniLM sentence embeddings, optionally with rule statistics (FineWeb-Edu, Penedo et al. 2024);
    ``builtin:web-quality`` is the ``fineweb-edu`` recipe's embedding model, trained once on the machine by
    ``thresher train-quality --config web-quality``."""

    name = "quality_classifier"
    stats = {"quality_score": "probability of the high-quality label"}
    bounds = {"quality_score": ("threshold", None)}  # the stat is named by score_key: see thresholds
    resources = Resources(cpus=1.0, memory_mb=500, needs_model=True)

    class Params(OpParams):
        model_path: str = Field(description="a model from `thresher train-quality` (fastText .bin or embedding .npz), "
                                "or builtin:NAME for one trained by `thresher train-quality --config NAME`")
        threshold: float | None = Field(0.5, ge=0, le=1, description="keep rows scoring at least this (null: keep all, score only)")
        top_fraction: float | None = Field(None, gt=0, le=1, description="then keep this share of the corpus with the best scores (a global step)")
        score_key: str = Field("quality_score", description="column for the score")
        max_chars: int | None = Field(None, ge=1, description="score only the first N characters")
        embedding_field: str | None = Field(
            None, description="(embedding models) a column of vectors an `embed` step wrote with the model's own "
            "embedding settings (default MiniLM, 256 tokens): used instead of embedding the text again; rows are "
            "embedded here when the column is missing")

    example = {"model_path": "models/quality.bin", "threshold": 0.5}

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.params.score_key,)

    def thresholds(self) -> dict[str, Bound]:
        out = super().thresholds()
        return {self.params.score_key: out["quality_score"]} if "quality_score" in out else {}

    def expand(self):
        if self.params.top_fraction is None:
            return []
        from dataclasses import replace

        from thresher.operators.select.topk import SelectTop

        params = SelectTop.Params(column=self.params.score_key, fraction=self.params.top_fraction)
        return [SelectTop(params, replace(self.ctx, key=f"{self.ctx.key}.top"))]

    def prepare(self) -> None:
        if not resolve_model_path(self.params.model_path).is_file():
            raise ThresherError(missing_model_message(self.params.model_path))
        path = resolve_model_path(self.params.model_path)
        if is_linear_model(path):  # fetch the embedding model into the cache now: workers only read it
            from thresher.operators.common.embedding import embedder_files
            from thresher.operators.filter.quality_linear import LinearQualityModel

            meta = LinearQualityModel.load(path).meta
            check_builtin_current(self.params.model_path, meta)
            emb = meta.get("embedding", {})
            embedder_files(emb.get("model_path"), emb.get("tokenizer_path"))

    def setup(self) -> None:
        path = resolve_model_path(self.params.model_path).resolve()
        if is_linear_model(path):
            from thresher.operators.filter.quality_features import Featurizer
            from thresher.operators.filter.quality_linear import LinearQualityModel

            self._model = LinearQualityModel.load(path)
            self._features = Featurizer.for_model(self._model.meta)
        else:
            self._model = load_fasttext(str(path))
            self._features = None

    def score(self, text: pa.ChunkedArray | pa.Array, embeddings: np.ndarray | None = None) -> np.ndarray:
        """P(high quality) of each text (``embeddings``: their vectors, for an embedding model)."""
        text = pc.fill_null(text, "")
        if self._features is None:
            return positive_probability(self._model, one_line(text))
        return self._model.predict_proba(self._features(text.to_pylist(), embeddings))

    def compute_stats(self, batch: pa.Table) -> dict[str, pa.Array]:
        text = batch[self.text_key]
        if self.params.max_chars:
            text = pc.utf8_slice_codeunits(text, 0, self.params.max_chars)
        field = self.params.embedding_field
        embeddings = None
        if self._features is not None and field and field in batch.column_names:
            from thresher.operators.common.embedding import column_matrix

            embeddings = column_matrix(batch[field], renormalise=False) if batch.num_rows else None
        return {self.params.score_key: pa.array(self.score(text, embeddings), pa.float64())}

    def drop_reasons(self, stats):
        return {"quality_score_too_low": under(stats[self.params.score_key], self.params.threshold)}

