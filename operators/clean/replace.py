"""Replace or remove content in a text column: regular-expression rewrites and character removal.

Both run over whole columns with Arrow's RE2 kernels (``pyarrow.compute.replace_substring_regex``),
which take time linear in the text: no pattern backtracks catastrophically.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator, model_validator

from thresher.operators.common.re2 import char_class, check_pattern, check_replacement
from thresher.pipeline.columns import set_column
from thresher.pipeline.ops import Mapper, OpParams
from thresher.pipeline.registry import register

# Data-Juicer's remove_specific_chars_mapper default (chars_to_remove)
DJ_SPECIFIC_CHARS = "◆●■►▼▲▴∆▻▷❖♡□"


def _column(batch: pa.Table, name: str):
    """The column to rewrite, or None when the batch has nothing to rewrite (no such column, or one
    that is all null and so has no string type)."""
    if name not in batch.column_names or pa.types.is_null(batch.schema.field(name).type):
        return None
    return batch[name]


class Replacement(OpParams):
    """One rewrite: every match of ``pattern`` becomes ``replacement``."""

    pattern: str = Field(description="RE2 pattern (no backreferences or lookaround)")
    replacement: str = Field("", description="what replaces each match; \\1..\\9 insert groups, \\0 the whole match")
    ignore_case: bool = Field(False, description="match case-insensitively")

    @field_validator("pattern")
    @classmethod
    def _valid(cls, v: str) -> str:
        return check_pattern(v)

    @model_validator(mode="after")
    def _valid_rewrite(self):
        check_replacement(self.regex(), self.replacement)
        return self

    def regex(self) -> str:
        return f"(?i){self.pattern}" if self.ignore_case else self.pattern


@register
class RegexReplace(Mapper):
    """Rewrite the text with a list of regular-expression replacements, applied in order.

    Data-Juicer's ``replace_content_mapper`` (``pattern`` / ``repl`` lists), on RE2 through
    ``pyarrow.compute.replace_substring_regex``: linear time, no catastrophic backtracking, and no
    backreferences or lookaround in patterns. Replacements refer to groups as ``\\1``..``\\9``
    (``\\0``: the whole match; ``\\\\``: a backslash), not Python's ``\\g<1>``. Each replacement
    sees the text the previous ones produced. The counter ``replacements`` adds up each pattern's
    matches (``count_substring_regex``; for a pattern that can match the empty string it may count
    one more per row than it replaces). Null text stays null.
    """

    name = "regex_replace"
    metrics = {"replacements": "matches replaced, over all patterns",
               "rows_changed": "rows whose text any replacement changed"}
    example = {"replacements": [{"pattern": r"\[(\d+)\]", "replacement": r"(\1)"},
                                {"pattern": r"(?i)click here", "replacement": ""}]}

    class Params(OpParams):
        replacements: list[Replacement] = Field(
            description="rewrites applied in order: each {pattern, replacement[, ignore_case]}")
        field: str | None = Field(None, description="the column to rewrite (default: the recipe's text column)")

        @field_validator("replacements")
        @classmethod
        def _some(cls, v):
            if not v:
                raise ValueError("give at least one replacement")
            return v

    def process(self, batch: pa.Table) -> pa.Table:
        column = self.params.field or self.text_key
        before = _column(batch, column)
        if before is None:
            return batch
        text = before
        for r in self.params.replacements:
            regex = r.regex()
            self.record("replacements", int(pc.sum(pc.count_substring_regex(text, regex)).as_py() or 0))
            text = pc.replace_substring_regex(text, regex, r.replacement)
        self.record("rows_changed", int(pc.sum(pc.fill_null(pc.not_equal(before, text), False)).as_py() or 0))
        return set_column(batch, column, text)


@register
class SpecificCharsRemove(Mapper):
    """Remove every occurrence of the given characters from the text.

    Data-Juicer's ``remove_specific_chars_mapper``, with its default set (``◆●■►▼▲▴∆▻▷❖♡□``:
    bullets and box-drawing symbols left over from page layouts). One RE2 character class over the
    whole column (``pyarrow.compute.replace_substring_regex``); each code point is removed on its
    own, so a multi-code-point symbol (an emoji with a variation selector) needs all its code points
    listed. Null text stays null.
    """

    name = "specific_chars_remove"
    metrics = {"chars_removed": "characters (code points) removed"}
    example = {"chars": DJ_SPECIFIC_CHARS + "★☆"}

    class Params(OpParams):
        chars: str = Field(DJ_SPECIFIC_CHARS, description="the characters to remove (each one counts on its own)")
        field: str | None = Field(None, description="the column to clean (default: the recipe's text column)")

        @field_validator("chars")
        @classmethod
        def _some(cls, v: str) -> str:
            if not v:
                raise ValueError("give at least one character to remove")
            return v

    def process(self, batch: pa.Table) -> pa.Table:
        column = self.params.field or self.text_key
        before = _column(batch, column)
        if before is None:
            return batch
        after = pc.replace_substring_regex(before, char_class(self.params.chars), "")
        removed = (pc.sum(pc.utf8_length(before)).as_py() or 0) - (pc.sum(pc.utf8_length(after)).as_py() or 0)
        self.record("chars_removed", int(removed))
        return set_column(batch, column, after)
