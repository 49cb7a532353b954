"""FineWeb's extra quality rules (Penedo et al. 2024, "The FineWeb Datasets: Decanting the Web for
the Finest Text Data at Scale", §3.4), with datatrove's FineWebQualityFilter defaults and (0.10)
comparisons: over the non-blank lines, drop a page when fewer than 12% end in punctuation, when
more than 67% are 30 characters or shorter, when duplicated lines hold more than 1% of its
characters, or (the list rule in datatrove's code) when it has more than 0.3 newlines per word.
Empty pages are dropped."""

from __future__ import annotations

import pyarrow as pa
from pydantic import Field

from thresher.operators.common.segments import line_shape, segment_dup_counts
from thresher.operators.common.tokenize import token_counts
from thresher.operators.common.words import ratio
from thresher.pipeline.columns import over, under
from thresher.pipeline.ops import Filter, OpParams
from thresher.pipeline.registry import register

STOP_CHARS = (".", "'", '"', "!", "?")


@register
class FineWebQualityFilter(Filter):
    """FineWeb rules: line-final punctuation ratio, short-line ratio, duplicated-line characters,
    newlines per word (Penedo et al. 2024, §3.4)."""

    name = "fineweb_quality_filter"
    stats = {"line_punct_ratio": "non-blank lines ending in . ' \" ! ? / non-blank lines",
             "short_line_ratio": "non-blank lines of <= short_line_length characters / non-blank lines",
             "char_dup_ratio": "characters in repeated non-blank lines / characters (newlines excluded)",
             "list_ratio": "newlines / words", "non_blank_lines": "lines with something besides whitespace"}
    # (with line_punct_exclude_zero, a page at 0 lies under line_punct_thr but is kept)
    bounds = {"line_punct_ratio": ("line_punct_thr", None), "short_line_ratio": (None, "short_line_thr"),
              "char_dup_ratio": (None, "char_duplicates_ratio"), "list_ratio": (None, "new_line_ratio")}

    class Params(OpParams):
        line_punct_thr: float | None = Field(0.12, description="drop if the punctuated-line ratio is below this (FineWeb: 0.12)")
        line_punct_exclude_zero: bool = Field(False, description="keep pages with no punctuated line at all")
        short_line_thr: float | None = Field(0.67, description="drop if the short-line ratio is above this (FineWeb: 0.67)")
        short_line_length: int = Field(30, description="a line this long or shorter is short (FineWeb: 30)")
        char_duplicates_ratio: float | None = Field(0.01, description="drop if the duplicated-line character ratio is above this (datatrove: 0.01)")
        new_line_ratio: float | None = Field(0.3, description="drop if newlines per word exceed this (datatrove: 0.3)")

    example = {"line_punct_thr": 0.12, "short_line_thr": 0.67}

    def compute_stats(self, batch: pa.Table) -> dict[str, pa.Array]:
        p = self.params
        text = batch[self.text_key]
        n_lines, ends, short, newlines, chars = line_shape(text, p.short_line_length, "".join(STOP_CHARS)).T
        _, _, dup_chars = segment_dup_counts(text, min_run=1, skip_blank=True)
        words = token_counts(text)
        return {
            "line_punct_ratio": pa.array(ratio(ends, n_lines)),
            "short_line_ratio": pa.array(ratio(short, n_lines)),
            "char_dup_ratio": pa.array(ratio(dup_chars, chars - newlines)),
            "list_ratio": pa.array(ratio(newlines, words)),
            "non_blank_lines": pa.array(n_lines),
        }

    def drop_reasons(self, stats):
        p = self.params
        s = {k: v.to_numpy(zero_copy_only=False) for k, v in stats.items()}
        punct = under(s["line_punct_ratio"], p.line_punct_thr)
        if p.line_punct_exclude_zero:
            punct = punct & (s["line_punct_ratio"] != 0)
        return {
            "empty": s["non_blank_lines"] == 0,
            "line_punct_ratio": punct,
            "short_line_ratio": over(s["short_line_ratio"], p.short_line_thr),
            "char_dup_ratio": over(s["char_dup_ratio"], p.char_duplicates_ratio),
            "list_ratio": over(s["list_ratio"], p.new_line_ratio),
        }
