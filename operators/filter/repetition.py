"""Data-Juicer's n-gram repetition filters: character_repetition_filter and word_repetition_filter
(both from BigScience's text-data-filtering, used for ROOTS).

The ratios are computed by the compiled kernels of ``operators.common.repetition``, which give
Data-Juicer's values document for document (tests/operators/test_text_rules.py compares them with
a plain-Python copy of its definitions). Bounds are inclusive, as Data-Juicer's.
"""

from __future__ import annotations

import pyarrow as pa
from pydantic import Field

from thresher.operators.common.repetition import char_repetition_ratios, word_repetition_ratios
from thresher.pipeline.columns import bounds_masks
from thresher.pipeline.ops import Filter, OpParams
from thresher.pipeline.registry import register


@register
class CharacterRepetitionFilter(Filter):
    """Keep documents whose character n-gram repetition ratio lies within bounds (Data-Juicer's
    character_repetition_filter: 10-grams, max 0.5).

    Every ``rep_len``-character substring of the text is counted; with ``D`` distinct ones of which
    ``S`` occur once, the ratio is the sum of the ``min(floor(sqrt(D)), D - S)`` highest counts over
    the number of substrings (Data-Juicer's ``char_rep_ratio``; 0 for a text shorter than ``rep_len``).
    """

    name = "character_repetition_filter"
    stats = {"char_rep_ratio": "share of character n-grams taken by the most repeated ones (Data-Juicer's "
                               "char_rep_ratio: top floor(sqrt(distinct)) repeated n-gram counts / n-grams)"}
    bounds = {"char_rep_ratio": ("min_ratio", "max_ratio")}

    class Params(OpParams):
        rep_len: int = Field(10, ge=1, description="characters per n-gram (Data-Juicer rep_len: 10)")
        min_ratio: float | None = Field(0.0, description="drop below (Data-Juicer: 0.0)")
        max_ratio: float | None = Field(0.5, description="drop above (Data-Juicer: 0.5)")

    example = {"rep_len": 10, "max_ratio": 0.5}

    def compute_stats(self, batch: pa.Table) -> dict[str, pa.Array]:
        return {"char_rep_ratio": pa.array(char_repetition_ratios(batch[self.text_key], self.params.rep_len))}

    def drop_reasons(self, stats):
        low, high = bounds_masks(stats["char_rep_ratio"], self.params.min_ratio, self.params.max_ratio)
        return {"char_rep_ratio_too_low": low, "char_rep_ratio_too_high": high}


@register
class WordRepetitionFilter(Filter):
    """Keep documents whose word n-gram repetition ratio lies within bounds (Data-Juicer's
    word_repetition_filter: 10-grams, max 0.5).

    Words are Data-Juicer's: the text split at spaces, newlines and tabs, lower-cased, with its
    special characters (punctuation, digits, whitespace, symbols, emoji) stripped from both ends,
    empty ones skipped. The ratio is the share of word ``rep_len``-grams that occur more than once
    (Data-Juicer's ``word_rep_ratio``: sum of the counts above 1 / n-grams; 0 with fewer words than
    ``rep_len``). Data-Juicer's ``tokenization: true`` (a SentencePiece model) is not supported.
    """

    name = "word_repetition_filter"
    stats = {"word_rep_ratio": "share of word n-grams that occur more than once (Data-Juicer's word_rep_ratio)"}
    bounds = {"word_rep_ratio": ("min_ratio", "max_ratio")}

    class Params(OpParams):
        rep_len: int = Field(10, ge=1, description="words per n-gram (Data-Juicer rep_len: 10)")
        min_ratio: float | None = Field(0.0, description="drop below (Data-Juicer: 0.0)")
        max_ratio: float | None = Field(0.5, description="drop above (Data-Juicer: 0.5)")

    example = {"rep_len": 10, "max_ratio": 0.5}

    def compute_stats(self, batch: pa.Table) -> dict[str, pa.Array]:
        return {"word_rep_ratio": pa.array(word_repetition_ratios(batch[self.text_key], self.params.rep_len))}

    def drop_reasons(self, stats):
        low, high = bounds_masks(stats["word_rep_ratio"], self.params.min_ratio, self.params.max_ratio)
        return {"word_rep_ratio_too_low": low, "word_rep_ratio_too_high": high}
