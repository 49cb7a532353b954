"""Character-class ratios (Data-Juicer's alphanumeric_filter and special_characters_filter)."""

from __future__ import annotations

import pyarrow as pa
from pydantic import Field

from thresher.operators.common.tokenize import char_class_counts
from thresher.operators.common.words import ratio
from thresher.pipeline.columns import bounds_masks
from thresher.pipeline.ops import Filter, OpParams
from thresher.pipeline.registry import register

# Character classes come from one compiled pass (operators.common.tokenize.char_class_counts):
# alphanumeric = letters + digits; special = punctuation and symbols + digits + whitespace, as
# Data-Juicer counts punctuation, digits, whitespace and symbol characters.


@register
class AlphanumericFilter(Filter):
    """Keep documents whose share of letters and digits lies within bounds (Data-Juicer: min 0.25)."""

    name = "alphanumeric_filter"
    stats = {"alnum_ratio": "letters and digits / characters"}
    bounds = {"alnum_ratio": ("min_ratio", "max_ratio")}

    class Params(OpParams):
        min_ratio: float | None = Field(0.25, description="drop below (Data-Juicer's default: 0.25)")
        max_ratio: float | None = Field(None, description="drop above")

    example = {"min_ratio": 0.25}

    def compute_stats(self, batch: pa.Table) -> dict[str, pa.Array]:
        c = char_class_counts(batch[self.text_key])
        return {"alnum_ratio": pa.array(ratio(c["letter"] + c["digit"], c["total"]))}

    def drop_reasons(self, stats):
        low, high = bounds_masks(stats["alnum_ratio"], self.params.min_ratio, self.params.max_ratio)
        return {"alnum_ratio_too_low": low, "alnum_ratio_too_high": high}


@register
class SpecialCharactersFilter(Filter):
    """Keep documents whose share of special characters (punctuation, symbols, digits, whitespace)
    lies within bounds (Data-Juicer: max 0.25)."""

    name = "special_characters_filter"
    stats = {"special_char_ratio": "special characters / characters"}
    bounds = {"special_char_ratio": ("min_ratio", "max_ratio")}

    class Params(OpParams):
        min_ratio: float | None = Field(None, description="drop below")
        max_ratio: float | None = Field(0.25, description="drop above (Data-Juicer's default: 0.25)")

    example = {"max_ratio": 0.25}

    def compute_stats(self, batch: pa.Table) -> dict[str, pa.Array]:
        c = char_class_counts(batch[self.text_key])
        return {"special_char_ratio": pa.array(ratio(c["punct"] + c["digit"] + c["space"], c["total"]))}

    def drop_reasons(self, stats):
        low, high = bounds_masks(stats["special_char_ratio"], self.params.min_ratio, self.params.max_ratio)
        return {"special_char_ratio_too_low": low, "special_char_ratio_too_high": high}
