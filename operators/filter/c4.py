"""C4's document rules (Raffel et al. 2020, §2.2) as datatrove's C4QualityFilter applies them:
drop pages with "lorem ipsum", with a curly bracket, or with fewer than 5 sentences. Run it after
``c4_line_filter`` (the rules look at the lines that survive the line rules)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit
from pydantic import Field

from thresher.operators.common.strings import blank, lower_matches, lower_patterns
from thresher.operators.common.tokenize import string_buffers
from thresher.pipeline.columns import under
from thresher.pipeline.ops import Filter, OpParams
from thresher.pipeline.registry import register

# a sentence ends at . ! ? (runs of them), optionally followed by closing quotes/brackets, then space or end
SENTENCE_END = r"[.!?]+[\"'”’)\]]*(?:\s|$)"


@njit(cache=True)
def _closer(data, i, end):
    """Width in bytes of a closing quote or bracket (" ' ” ’ ) ]) at byte i, else 0."""
    x = data[i]
    if x == 34 or x == 39 or x == 41 or x == 93:
        return 1
    if x == 0xE2 and i + 2 < end and data[i + 1] == 0x80 and (data[i + 2] == 0x9D or data[i + 2] == 0x99):
        return 3
    return 0


@njit(cache=True)
def _sentence_kernel(data, offsets, out):
    for d in range(len(offsets) - 1):
        a, end = offsets[d], offsets[d + 1]
        total = 0
        while a <= end:  # the line [a, e), split at every "\n"
            e = a
            while e < end and data[e] != 10:
                e += 1
            if not blank(data, a, e):
                ends = 0  # SENTENCE_END's matches, left to right, without overlap
                i = a
                while i < e:
                    x = data[i]
                    if x == 46 or x == 33 or x == 63:
                        while i < e and (data[i] == 46 or data[i] == 33 or data[i] == 63):
                            i += 1
                        while i < e:
                            w = _closer(data, i, e)
                            if w == 0:
                                break
                            i += w
                        if i == e:
                            ends += 1
                        elif data[i] == 9 or data[i] == 10 or data[i] == 12 or data[i] == 13 or data[i] == 32:
                            ends += 1  # RE2's \s: [\t\n\f\r ]
                            i += 1
                    else:
                        i += 1
                total += max(ends, 1)
            a = e + 1
        out[d] = total


@njit(cache=True)
def _page_marks_kernel(data, offsets, patterns, lengths, first, out):
    for d in range(len(offsets) - 1):
        a, end = offsets[d], offsets[d + 1]
        out[d, 0] = lower_matches(data, a, end, patterns, lengths, first) != 0
        for i in range(a, end):
            if data[i] == 123:
                out[d, 1] = True
                break


def page_marks(text: pa.Array | pa.ChunkedArray, phrase: str = "lorem ipsum") -> tuple[pa.Array, pa.Array]:
    """(the lower-cased text contains ``phrase``, the text contains '{') per document, as
    ``match_substring(utf8_lower(text), phrase)`` and ``match_substring(text, "{")`` give them
    (nulls stay null), in one compiled pass. ``phrase`` is lower-case ASCII."""
    data, offsets = string_buffers(text)
    out = np.zeros((len(offsets) - 1, 2), dtype=np.bool_)
    _page_marks_kernel(data, offsets, *lower_patterns([phrase]), out)
    mask = pc.is_null(text).to_numpy(zero_copy_only=False) if text.null_count else None
    return pa.array(out[:, 0], mask=mask), pa.array(out[:, 1], mask=mask)


def sentence_counts(text: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Sentences per document: per non-empty line (lines split at "\\n", empty once trimmed), the
    matches of ``SENTENCE_END`` in it, at least 1 (one compiled pass over the UTF-8 bytes)."""
    data, offsets = string_buffers(text)
    out = np.zeros(len(offsets) - 1, dtype=np.int64)
    _sentence_kernel(data, offsets, out)
    return out


@register
class C4QualityFilter(Filter):
    """C4 document rules: no 'lorem ipsum', no curly bracket, at least 5 sentences (Raffel et al. 2020)."""

    name = "c4_quality_filter"
    stats = {"num_sentences": "sentences (sentence-final punctuation per line, at least 1 per line)",
             "has_lorem_ipsum": "'lorem ipsum' occurs", "has_curly_bracket": "'{' occurs"}
    bounds = {"num_sentences": ("min_num_sentences", None)}  # lorem ipsum and "{" are yes/no rules

    class Params(OpParams):
        min_num_sentences: int | None = Field(5, description="drop pages with fewer sentences (datatrove/C4: 5)")
        filter_lorem_ipsum: bool = Field(True, description="drop pages containing 'lorem ipsum'")
        filter_curly_bracket: bool = Field(True, description="drop pages containing '{' (code)")

    example = {"min_num_sentences": 5}

    def compute_stats(self, batch: pa.Table) -> dict[str, pa.Array]:
        text = batch[self.text_key]
        lorem, curly = page_marks(text)
        return {
            "num_sentences": pa.array(sentence_counts(text)),
            "has_lorem_ipsum": lorem,
            "has_curly_bracket": curly,
        }

    def drop_reasons(self, stats):
        p = self.params
        n = len(stats["num_sentences"])
        none = np.zeros(n, dtype=bool)
        lorem = stats["has_lorem_ipsum"].to_numpy(zero_copy_only=False)
        curly = stats["has_curly_bracket"].to_numpy(zero_copy_only=False)
        return {
            "lorem_ipsum": lorem if p.filter_lorem_ipsum else none,
            "curly_bracket": curly if p.filter_curly_bracket else none,
            "too_few_sentences": under(stats["num_sentences"], p.min_num_sentences),
        }
