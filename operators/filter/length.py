"""Length filters on characters and words."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from thresher.operators.common.tokenize import whitespace_word_counts
from thresher.pipeline.columns import bounds_masks
from thresher.pipeline.ops import Filter, OpParams
from thresher.pipeline.registry import register


@register
class TextLengthFilter(Filter):
    """Keep documents whose length in characters and words lies within bounds.

    Words are maximal runs of non-whitespace (as in Gopher's word count, Rae et al. 2021, §A.1).
    Bounds are inclusive; leave one out to disable it.
    """

    name = "text_length_filter"
    stats = {"num_chars": "Unicode code points in the text", "num_words": "whitespace-separated words"}
    bounds = {"num_chars": ("min_chars", "max_chars"), "num_words": ("min_words", "max_words")}

    class Params(OpParams):
        min_chars: int | None = Field(None, ge=0, description="drop if fewer characters")
        max_chars: int | None = Field(None, ge=0, description="drop if more characters")
        min_words: int | None = Field(None, ge=0, description="drop if fewer words")
        max_words: int | None = Field(None, ge=0, description="drop if more words")

        @model_validator(mode="after")
        def _ordered(self):
            for lo, hi in (("min_chars", "max_chars"), ("min_words", "max_words")):
                a, b = getattr(self, lo), getattr(self, hi)
                if a is not None and b is not None and a > b:
                    raise ValueError(f"{lo} ({a}) must not exceed {hi} ({b})")
            return self

    example = {"min_words": 50, "max_words": 100000}

    def compute_stats(self, batch: pa.Table) -> dict[str, pa.Array]:
        text = batch[self.text_key]
        return {
            "num_chars": pc.utf8_length(text).combine_chunks(),
            "num_words": pa.array(whitespace_word_counts(text)),
        }

    def drop_reasons(self, stats: dict[str, pa.Array]) -> dict[str, np.ndarray]:
        p = self.params
        c_short, c_long = bounds_masks(stats["num_chars"], p.min_chars, p.max_chars)
        w_short, w_long = bounds_masks(stats["num_words"], p.min_words, p.max_words)
        return {"too_few_chars": c_short, "too_many_chars": c_long,
                "too_few_words": w_short, "too_many_words": w_long}
