"""C4's line rules (Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified
Text-to-Text Transformer", §2.2), as datatrove's C4QualityFilter applies them to each line.

A line (stripped) is removed when it has a word over 1000 characters, does not end in terminal
punctuation (. ! ? " ') or ends with an ellipsis, has fewer than 3 words, mentions "javascript",
or holds a cookie/terms-of-use notice (the last two as in the C4 code, not the paper's list). Wikipedia-style citation marks are removed from kept lines. The
document-level C4 rules are ``c4_quality_filter``.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from thresher.operators.common.segments import join_kept, replace_where, split_flat
from thresher.operators.common.tokenize import word_counts_and_longest
from thresher.pipeline.columns import set_column
from thresher.pipeline.ops import Mapper, OpParams
from thresher.pipeline.registry import register

CITATION = r"\[\d*\]|\[edit\]|\[citation needed\]"
POLICY_SUBSTRINGS = ["terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies"]
TERMINAL = ('.', '?', '!', '"', "'")


def _any_substring(lower: pa.Array, words: list[str]) -> np.ndarray:
    """Strings containing any of the literal ``words`` (one RE2 alternation: faster than one
    substring pass per word)."""
    pattern = "|".join(re.escape(w) for w in words)
    return pc.match_substring_regex(lower, pattern).to_numpy(zero_copy_only=False)


@register
class C4LineFilter(Mapper):
    """Remove lines that fail C4's line rules (terminal punctuation, >= 3 words, no javascript,
    no cookie/policy notices, no 1000+ character words); strip citation marks."""

    name = "c4_line_filter"
    metrics = {f"lines_removed_{r}": f"lines removed: {r}" for r in
               ("too_long_word", "no_terminal_punct", "too_few_words", "javascript", "policy")}
    metrics = {**metrics, "lines_kept": "lines kept"}

    class Params(OpParams):
        max_word_length: int | None = Field(1000, description="remove lines with a longer word (datatrove: 1000)")
        remove_citations: bool = Field(True, description="strip [1], [edit], [citation needed]")
        filter_no_terminal_punct: bool = Field(True, description="remove lines not ending in . ? ! \" ' (or ending in ...)")
        min_words_per_line: int | None = Field(3, description="remove lines with fewer words (datatrove: 3; C4 paper: 5)")
        filter_javascript: bool = Field(True, description="remove lines mentioning javascript")
        filter_policy: bool = Field(True, description="remove cookie / privacy / terms-of-use lines")

    example = {"min_words_per_line": 3}

    def process(self, batch: pa.Table) -> pa.Table:
        p = self.params
        flat, parent, n_docs = split_flat(batch[self.text_key])
        line = pc.utf8_trim_whitespace(flat)
        n = len(line)
        drop = np.zeros(n, dtype=bool)

        def rule(name: str, mask: np.ndarray) -> None:
            new = mask & ~drop
            self.record(f"lines_removed_{name}", int(new.sum()))
            drop[new] = True

        n_words, longest = word_counts_and_longest(line)
        if p.max_word_length is not None:
            rule("too_long_word", longest > p.max_word_length)
        if p.remove_citations:
            line = replace_where(line, "[", CITATION, "")
        if p.filter_no_terminal_punct:
            ends = np.zeros(n, dtype=bool)
            for t in TERMINAL:
                ends |= pc.ends_with(line, t).to_numpy(zero_copy_only=False)
            ends &= ~pc.ends_with(line, "...").to_numpy(zero_copy_only=False)
            rule("no_terminal_punct", ~ends)
        if p.min_words_per_line is not None:
            rule("too_few_words", n_words < p.min_words_per_line)
        lower = pc.utf8_lower(line)
        if p.filter_javascript:
            rule("javascript", pc.match_substring(lower, "javascript").to_numpy(zero_copy_only=False))
        if p.filter_policy:
            rule("policy", _any_substring(lower, POLICY_SUBSTRINGS))
        keep = ~drop
        self.record("lines_kept", int(keep.sum()))
        text = pc.utf8_trim_whitespace(join_kept(line, parent, keep, n_docs))
        return set_column(batch, self.text_key, text)
