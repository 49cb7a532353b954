"""Words by length: Data-Juicer's remove_long_words_mapper, as one compiled pass over the bytes."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from numba import njit
from pydantic import Field, model_validator

from thresher.operators.common.special_chars import SPECIAL_TABLE
from thresher.operators.common.strings import strings_from_buffers
from thresher.operators.common.tokenize import _decode, _prev_start, string_buffers
from thresher.pipeline.columns import set_column
from thresher.pipeline.ops import Mapper, OpParams
from thresher.pipeline.registry import register

NO_LIMIT = np.iinfo(np.int64).max


@njit(cache=True)
def _chars(data, a, b):
    n = 0
    for k in range(a, b):
        if (data[k] & 0xC0) != 0x80:
            n += 1
    return n


@njit(cache=True)
def _keep_word(data, a, b, lo, hi, special):
    n = _chars(data, a, b)
    if lo <= n <= hi:
        return True
    while a < b:  # Data-Juicer's strip(word, SPECIAL_CHARACTERS)
        cp, w = _decode(data, a)
        if special[cp] == 0:
            break
        a += w
    while b > a:
        p = _prev_start(data, b, a)
        cp, w = _decode(data, p)
        if special[cp] == 0:
            break
        b = p
    n = _chars(data, a, b)
    return lo <= n <= hi


@njit(cache=True)
def _remove_words(data, offsets, lo, hi, special, out, out_offsets):
    """Data-Juicer's split_on_newline_tab_whitespace -> keep words -> merge_on_whitespace_tab_newline:
    lines at '\\n', fields at '\\t', words at ' '; kept words are joined by one space, non-empty
    fields by a tab, non-empty lines by a newline. Returns the number of words removed."""
    o = 0
    removed = 0
    for d in range(len(offsets) - 1):
        out_offsets[d] = o
        i, end = offsets[d], offsets[d + 1]
        doc_has_line = False
        while True:  # one line per turn
            line_has_field = False
            while True:  # one field per turn
                field_has_word = False
                while True:  # one word per turn
                    while i < end and data[i] == 32:
                        i += 1
                    a = i
                    while i < end and data[i] != 32 and data[i] != 9 and data[i] != 10:
                        i += 1
                    if i > a:
                        if _keep_word(data, a, i, lo, hi, special):
                            if not field_has_word:
                                if not line_has_field:
                                    if doc_has_line:
                                        out[o] = 10
                                        o += 1
                                    doc_has_line = True
                                    line_has_field = True
                                else:
                                    out[o] = 9
                                    o += 1
                                field_has_word = True
                            else:
                                out[o] = 32
                                o += 1
                            for k in range(a, i):
                                out[o] = data[k]
                                o += 1
                        else:
                            removed += 1
                    if i >= end or data[i] != 32:
                        break
                if i < end and data[i] == 9:
                    i += 1
                    continue
                break
            if i < end and data[i] == 10:
                i += 1
                continue
            break
    out_offsets[len(offsets) - 1] = o
    return removed


@register
class LongWordsRemove(Mapper):
    """Remove words shorter than ``min_len`` or longer than ``max_len`` characters (Data-Juicer's
    remove_long_words_mapper).

    As Data-Juicer: lines are split at ``\\n``, then at tabs, then at spaces; a word stays when its
    length, or its length once Data-Juicer's special characters (punctuation, digits, whitespace,
    symbols, emoji) are stripped from both ends, lies within ``[min_len, max_len]``. The text is put
    back together the way Data-Juicer does it: words joined by one space, non-empty tab fields by a
    tab, non-empty lines by a newline — so runs of spaces and blank lines are gone too, even when no
    word is removed. A text whose words all go becomes empty and is kept.
    """

    name = "long_words_remove"
    metrics = {"words_removed": "words removed"}

    class Params(OpParams):
        min_len: int = Field(1, ge=1, description="remove shorter words (Data-Juicer: 1)")
        max_len: int | None = Field(None, ge=1, description="remove longer words (Data-Juicer: sys.maxsize, no limit)")

        @model_validator(mode="after")
        def _ordered(self):
            if self.max_len is not None and self.max_len < self.min_len:
                raise ValueError(f"max_len ({self.max_len}) is below min_len ({self.min_len})")
            return self

    example = {"min_len": 1, "max_len": 128}

    def process(self, batch: pa.Table) -> pa.Table:
        p = self.params
        text = batch[self.text_key]
        data, offsets = string_buffers(text)
        out = np.empty(len(data), dtype=np.uint8)  # the result is never longer
        out_offsets = np.empty(len(offsets), dtype=np.int64)
        hi = NO_LIMIT if p.max_len is None else p.max_len
        removed = _remove_words(data, offsets, p.min_len, hi, SPECIAL_TABLE, out, out_offsets)
        self.record("words_removed", removed)
        return set_column(batch, self.text_key, strings_from_buffers(out[: out_offsets[-1]], out_offsets, like=text))
