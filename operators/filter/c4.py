"""C4's document rules (Raffel et al. 2020, §2.2) as datatrove's C4QualityFilter applies them:
drop pages with "lorem ipsum", with a curly bracket, or with fewer than 5 sentences. Run it after
``c4_line_filter`` (the rules look at the lines that survive the line rules)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from thresher.operators.common.segments import per_doc_sum, split_flat
from thresher.pipeline.columns import under
from thresher.pipeline.ops import Filter, OpParams
from thresher.pipeline.registry import register

# a sentence ends at . ! ? (runs of them), optionally followed by closing quotes/brackets, then space or end
SENTENCE_END = r"[.!?]+[\"'”’)\]]*(?:\s|$)"


def sentence_counts(text: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Sentences per document: per non-empty line, the sentence ends in it (at least 1)."""
    flat, parent, n_docs = split_flat(text)
    ends = pc.count_substring_regex(flat, SENTENCE_END).to_numpy(zero_copy_only=False)
    nonempty = pc.utf8_length(pc.utf8_trim_whitespace(flat)).to_numpy(zero_copy_only=False) > 0
    per_line = np.where(nonempty, np.maximum(ends, 1), 0)
    return per_doc_sum(per_line, parent, n_docs).astype(np.int64)


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
        return {
            "num_sentences": pa.array(sentence_counts(text)),
            "has_lorem_ipsum": pc.match_substring(pc.utf8_lower(text), "lorem ipsum").combine_chunks(),
            "has_curly_bracket": pc.match_substring(text, "{").combine_chunks(),
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
