"""C4's line rules (Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified
Text-to-Text Transformer", §2.2), as datatrove's C4QualityFilter applies them to each line.

A line (stripped) is removed when it has a word over 1000 characters, does not end in terminal
punctuation (. ! ? " ') or ends with an ellipsis, has fewer than 3 words, mentions "javascript",
or holds a cookie/terms-of-use notice (the last two as in the C4 code, not the paper's list). Wikipedia-style citation marks are removed from kept lines. The
document-level C4 rules are ``c4_quality_filter``.

One compiled pass over the column's UTF-8 bytes splits, trims, applies the rules and rejoins the
kept lines (no string per line); it gives what the pyarrow expressions it replaced gave:
``utf8_trim_whitespace``'s whitespace, RE2's ``CITATION``, ``utf8_lower`` before the substring
rules (tests/operators/test_rules_reference.py compares it with a plain-Python reading).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit
from pydantic import Field

from thresher.operators.common.strings import lower_matches, lower_patterns, strings_from_buffers, strip_span
from thresher.operators.common.tokenize import _ASCII, SPACE, _cls, _decode, string_buffers
from thresher.pipeline.columns import set_column
from thresher.pipeline.ops import Mapper, OpParams
from thresher.pipeline.registry import register

CITATION = r"\[\d*\]|\[edit\]|\[citation needed\]"
POLICY_SUBSTRINGS = ["terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies"]
TERMINAL = ('.', '?', '!', '"', "'")


# the line rules in the order a removed line is counted under the first it fails
RULES = ("too_long_word", "no_terminal_punct", "too_few_words", "javascript", "policy")


@njit(cache=True)
def _citation_at(data, i, end):
    """Length of a citation mark (``CITATION``: [digits], [edit], [citation needed]) at byte i, else 0."""
    j = i + 1
    while j < end and 48 <= data[j] <= 57:
        j += 1
    if j < end and data[j] == 93:
        return j + 1 - i
    for lit in (_EDIT, _NEEDED):
        n = len(lit)
        if i + n <= end:
            ok = True
            for k in range(n):
                if data[i + k] != lit[k]:
                    ok = False
                    break
            if ok:
                return n
    return 0


@njit(cache=True)
def _c4_lines_kernel(data, offsets, valid, max_word, citations, terminal, min_words, js, policy,
                     patterns, lengths, first, ascii_table, out, out_off, removed):
    o = 0
    for d in range(len(offsets) - 1):
        doc0 = o
        kept = 0
        a, end = offsets[d], offsets[d + 1]
        while valid[d] and a <= end:  # the line [a, e), split at every "\n"
            e = a
            while e < end and data[e] != 10:
                e += 1
            nxt = e + 1
            a, e = strip_span(data, a, e)  # trimmed (utf8_trim_whitespace)
            words = 0  # whitespace-separated words and the longest (code points), as word_counts_and_longest
            longest = 0
            run = 0
            i = a
            while i < e:
                cp, w = _decode(data, i)
                if _cls(cp, ascii_table) == SPACE:
                    run = 0
                else:
                    if run == 0:
                        words += 1
                    run += 1
                    if run > longest:
                        longest = run
                i += w
            line0 = o + (1 if kept else 0)  # the line as kept: citation marks cut
            q = line0
            i = a
            while i < e:
                if citations and data[i] == 91:
                    n = _citation_at(data, i, e)
                    if n:
                        i += n
                        continue
                out[q] = data[i]
                q += 1
                i += 1
            rule = -1
            if max_word >= 0 and longest > max_word:
                rule = 0
            elif terminal and not (q > line0 and (out[q - 1] == 46 or out[q - 1] == 63 or out[q - 1] == 33
                                                 or out[q - 1] == 34 or out[q - 1] == 39)
                                   and not (q - line0 >= 3 and out[q - 1] == 46 and out[q - 2] == 46
                                            and out[q - 3] == 46)):
                rule = 1
            elif min_words >= 0 and words < min_words:
                rule = 2
            elif js or policy:
                found = lower_matches(out, line0, q, patterns, lengths, first)
                if js and (found & 1):
                    rule = 3
                elif policy and (found >> 1) != 0:
                    rule = 4
            if rule >= 0:
                removed[rule] += 1
            else:
                if kept:
                    out[o] = 10
                o = q
                kept += 1
            a = nxt
        removed[5] += kept
        s, t = strip_span(out, doc0, o)  # the document trimmed
        if s > doc0:
            for k in range(t - s):
                out[doc0 + k] = out[s + k]
        o = doc0 + (t - s)
        out_off[d + 1] = o
    return o


_EDIT = np.frombuffer(b"[edit]", dtype=np.uint8).copy()
_NEEDED = np.frombuffer(b"[citation needed]", dtype=np.uint8).copy()
_PATTERNS = lower_patterns(["javascript"] + POLICY_SUBSTRINGS)


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
        text = batch[self.text_key]
        if isinstance(text, pa.ChunkedArray):
            text = text.combine_chunks() if text.num_chunks != 1 else text.chunk(0)
        data, offsets = string_buffers(text)
        valid = (np.ones(len(text), dtype=np.bool_) if not text.null_count
                 else pc.is_valid(text).to_numpy(zero_copy_only=False))
        out = np.empty(int(offsets[-1] - offsets[0]) + 1, dtype=np.uint8)
        out_off = np.zeros(len(text) + 1, dtype=np.int64)
        removed = np.zeros(len(RULES) + 1, dtype=np.int64)
        n = _c4_lines_kernel(data, offsets, valid, -1 if p.max_word_length is None else p.max_word_length,
                             p.remove_citations, p.filter_no_terminal_punct,
                             -1 if p.min_words_per_line is None else p.min_words_per_line,
                             p.filter_javascript, p.filter_policy, *_PATTERNS, _ASCII, out, out_off, removed)
        for name, k in zip(RULES, removed[:-1], strict=True):
            self.record(f"lines_removed_{name}", int(k))
        self.record("lines_kept", int(removed[-1]))
        return set_column(batch, self.text_key, strings_from_buffers(out[:n], out_off))
