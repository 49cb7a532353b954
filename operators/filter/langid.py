"""Language identification with fastText's lid.176 model (Joulin et al. 2016, "Bag of Tricks for
Efficient Text Classification"; the model behind CCNet and FineWeb's language filter).

Writes ``lang`` and ``lang_score``; keeps rows whose language is allowed and whose score reaches
``min_score`` (FineWeb keeps English at >= 0.65). ``tag_only`` keeps every row. Whole batches go
through fastText's ``multilinePredict`` in one call; the model loads once per worker.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from thresher.pipeline.assets import LID176, asset_path
from thresher.pipeline.columns import under
from thresher.pipeline.ops import Bound, Filter, OpParams, Resources
from thresher.pipeline.registry import register

_MODELS: dict[str, object] = {}


def load_fasttext(path: str):
    """A fastText model, loaded once per process (the binding directly: its Python predict()
    wrapper breaks under NumPy 2)."""
    if path not in _MODELS:
        import fasttext.FastText as ft

        _MODELS[path] = ft._FastText(model_path=path)
    return _MODELS[path]


def predict_top(model, texts: list[str]) -> tuple[list[str], np.ndarray]:
    labels, probs = model.f.multilinePredict(texts, 1, 0.0, "strict")
    lab = [x[0] if len(x) else "" for x in labels]
    score = np.array([p[0] if len(p) else 0.0 for p in probs], dtype=np.float64)
    return lab, np.clip(score, 0.0, 1.0)  # fastText's softmax can come out a hair above 1


def one_line(text) -> list[str]:
    """fastText reads one line per example: newlines become spaces."""
    return pc.replace_substring_regex(text, r"[\r\n\v\f\x{2028}\x{2029}]+", " ").to_pylist()


@register
class LanguageId(Filter):
    """Identify each document's language with fastText lid.176 (writes lang, lang_score); keep the
    listed languages at or above min_score, or tag only."""

    name = "language_id"
    stats = {"lang": "ISO 639 code of the most likely language", "lang_score": "its probability"}
    bounds = {"lang_score": ("min_score", None)}  # the stat is named by score_key: see thresholds
    resources = Resources(cpus=1.0, memory_mb=300, needs_model=True)

    class Params(OpParams):
        languages: list[str] = Field(default_factory=list, description="languages to keep (empty: any)")
        min_score: float = Field(0.65, ge=0, le=1, description="minimum probability (FineWeb: 0.65)")
        tag_only: bool = Field(False, description="keep every row; only add lang and lang_score")
        model_path: str | None = Field(None, description="a lid.176.ftz/.bin of your own (default: fetched into the cache)")
        lang_key: str = Field("lang", description="column for the language code")
        score_key: str = Field("lang_score", description="column for the probability")
        max_chars: int | None = Field(None, ge=1, description="classify only the first N characters (faster; fastText's cost is linear in length)")

    example = {"languages": ["en"], "min_score": 0.65}

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.params.lang_key, self.params.score_key)

    def thresholds(self) -> dict[str, Bound]:
        if self.params.tag_only:
            return {}
        out = super().thresholds()
        return {self.params.score_key: out["lang_score"]} if "lang_score" in out else {}

    def prepare(self) -> None:
        asset_path(LID176, self.params.model_path)

    def setup(self) -> None:
        self._model = load_fasttext(str(asset_path(LID176, self.params.model_path, fetch=False)))

    def compute_stats(self, batch: pa.Table) -> dict[str, pa.Array]:
        text = batch[self.text_key]
        if self.params.max_chars:
            text = pc.utf8_slice_codeunits(text, 0, self.params.max_chars)
        labels, score = predict_top(self._model, one_line(text))
        langs = pa.array([x.removeprefix("__label__") for x in labels], pa.string())
        p = self.params
        return {p.lang_key: langs, p.score_key: pa.array(score)}

    def drop_reasons(self, stats):
        p = self.params
        n = len(stats[p.lang_key])
        zero = np.zeros(n, dtype=bool)
        if p.tag_only:
            return {"language_not_allowed": zero, "language_score_too_low": zero}
        langs = stats[p.lang_key]
        allowed = pc.is_in(langs, pa.array(p.languages, pa.string())).to_numpy(zero_copy_only=False) if p.languages \
            else np.ones(n, dtype=bool)
        return {"language_not_allowed": ~allowed,
                "language_score_too_low": under(stats[p.score_key], p.min_score)}
