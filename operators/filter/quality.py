"""fastText quality classifier: score rows with a model trained on positive and negative examples
(``operators.filter.quality_training``, ``thresher train-quality``), keep the best.
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
    bounds = {"quality_score": ("threshold", None)}  # the stat is named by score_key: see thresholds
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
        return {"quality_score_too_low": under(stats[self.params.score_key], self.params.threshold)}

