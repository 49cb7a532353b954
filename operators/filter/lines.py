"""Line-length rules: Data-Juicer's average and maximum line length, and mC4's paragraph rule.

- ``line_length_filter``: Data-Juicer's ``average_line_length_filter`` and
  ``maximum_line_length_filter`` in one op. Lines are Python's ``str.splitlines()`` (breaks at
  ``\\n``, ``\\r``, ``\\r\\n``, ``\\v``, ``\\f``, ``\\x1c``-``\\x1e``, ``\\x85``, U+2028, U+2029; no
  empty line after a final break); the *average* is Data-Juicer's ``len(text) / len(lines)`` — all
  characters of the text, line breaks included, over the number of lines — and the *maximum* is the
  longest line in characters (both 0 for an empty text). Bounds are inclusive, as Data-Juicer's.
- ``c4_paragraph_filter``: mC4's ``paragraph_filter`` (``tensorflow_datasets/text/c4_utils.py``),
  as datatrove's ``C4ParagraphFilter`` applies it: split at ``\\n``; keep a page only if it has at
  least 3 lines and its 3 longest lines each have at least 200 characters — that is, at least
  ``min_paragraphs`` lines of ``min_paragraph_len`` characters or more.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit
from pydantic import Field

from thresher.operators.common.tokenize import _decode, string_buffers
from thresher.pipeline.columns import bounds_masks, under
from thresher.pipeline.ops import Filter, OpParams
from thresher.pipeline.registry import register


@njit(cache=True)
def _splitlines_kernel(data, offsets):
    n = len(offsets) - 1
    chars = np.zeros(n, dtype=np.int64)
    lines = np.zeros(n, dtype=np.int64)
    longest = np.zeros(n, dtype=np.int64)
    for d in range(n):
        i, e = offsets[d], offsets[d + 1]
        cur = 0
        while i < e:
            cp, w = _decode(data, i)
            i += w
            chars[d] += 1
            if cp == 10 or cp == 13 or cp == 11 or cp == 12 or 28 <= cp <= 30 or cp == 0x85 or cp == 0x2028 \
                    or cp == 0x2029:
                if cp == 13 and i < e and data[i] == 10:  # \r\n is one break
                    i += 1
                    chars[d] += 1
                lines[d] += 1
                longest[d] = max(longest[d], cur)
                cur = 0
            else:
                cur += 1
        if cur > 0:  # a last line without a break after it
            lines[d] += 1
            longest[d] = max(longest[d], cur)
    return chars, lines, longest


def splitlines_stats(text: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per document, as Python's ``str.splitlines()`` sees it: (characters, lines, longest line)."""
    return _splitlines_kernel(*string_buffers(text))


@register
class LineLengthFilter(Filter):
    """Keep documents whose average and longest line lengths (characters) lie within bounds
    (Data-Juicer's average_line_length_filter and maximum_line_length_filter).

    The average is Data-Juicer's ``len(text) / len(text.splitlines())`` (line breaks count as
    characters of the text), the maximum ``max(len(line) for line in text.splitlines())``; an empty
    text has 0 for both. Set a bound to null to switch its rule off.
    """

    name = "line_length_filter"
    stats = {"avg_line_length": "characters of the text (line breaks included) / lines (str.splitlines)",
             "max_line_length": "characters in the longest line"}
    bounds = {"avg_line_length": ("min_avg_line_length", "max_avg_line_length"),
              "max_line_length": ("min_max_line_length", "max_max_line_length")}

    class Params(OpParams):
        min_avg_line_length: float | None = Field(10, ge=0, description="drop if the average line length is below "
                                                  "(Data-Juicer average_line_length_filter min_len: 10)")
        max_avg_line_length: float | None = Field(None, ge=0, description="drop if the average line length is above "
                                                  "(Data-Juicer: max_len, no limit)")
        min_max_line_length: int | None = Field(10, ge=0, description="drop if the longest line is shorter "
                                                "(Data-Juicer maximum_line_length_filter min_len: 10)")
        max_max_line_length: int | None = Field(None, ge=0, description="drop if the longest line is longer "
                                                "(Data-Juicer: max_len, no limit)")

    example = {"min_avg_line_length": 10, "max_avg_line_length": 10000, "min_max_line_length": 10,
               "max_max_line_length": 100000}

    def compute_stats(self, batch: pa.Table) -> dict[str, pa.Array]:
        n_chars, n_lines, longest = splitlines_stats(batch[self.text_key])
        avg = np.zeros(len(n_chars), dtype=np.float64)
        np.divide(n_chars, n_lines, out=avg, where=n_lines > 0)
        return {"avg_line_length": pa.array(avg), "max_line_length": pa.array(longest)}

    def drop_reasons(self, stats):
        p = self.params
        avg_short, avg_long = bounds_masks(stats["avg_line_length"], p.min_avg_line_length, p.max_avg_line_length)
        max_short, max_long = bounds_masks(stats["max_line_length"], p.min_max_line_length, p.max_max_line_length)
        return {"avg_line_length_too_short": avg_short, "avg_line_length_too_long": avg_long,
                "max_line_length_too_short": max_short, "max_line_length_too_long": max_long}


@register
class C4ParagraphFilter(Filter):
    """Keep pages with at least 3 "paragraphs" (lines of 200 characters or more): mC4's paragraph
    rule (Xue et al. 2021; tensorflow_datasets c4_utils.paragraph_filter; datatrove C4ParagraphFilter).

    Lines are the text split at ``\\n``. mC4 and datatrove fix both numbers (3 lines of at least
    200 characters); here they are parameters, and the rule is "at least ``min_paragraphs`` lines
    of at least ``min_paragraph_len`` characters", which is theirs at the defaults.
    """

    name = "c4_paragraph_filter"
    stats = {"num_paragraphs": "lines ('\\n'-separated) with at least min_paragraph_len characters"}
    bounds = {"num_paragraphs": ("min_paragraphs", None)}

    class Params(OpParams):
        min_paragraphs: int | None = Field(3, ge=0, description="drop pages with fewer such lines (mC4/datatrove: 3)")
        min_paragraph_len: int = Field(200, ge=0, description="characters a line needs to count (mC4/datatrove: 200)")

    example = {"min_paragraphs": 3, "min_paragraph_len": 200}

    def compute_stats(self, batch: pa.Table) -> dict[str, pa.Array]:
        text = batch[self.text_key]
        if isinstance(text, pa.ChunkedArray):
            text = text.combine_chunks()
        lines = pc.split_pattern(text.fill_null(""), "\n")
        long = pc.greater_equal(pc.utf8_length(pc.list_flatten(lines)), self.params.min_paragraph_len)
        parent = pc.list_parent_indices(lines).to_numpy(zero_copy_only=False)
        n = np.bincount(parent[long.to_numpy(zero_copy_only=False)], minlength=len(text))
        return {"num_paragraphs": pa.array(n.astype(np.int64))}

    def drop_reasons(self, stats):
        return {"too_few_paragraphs": under(stats["num_paragraphs"], self.params.min_paragraphs)}
