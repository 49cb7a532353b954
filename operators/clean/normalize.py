"""Unicode and whitespace normalisation, as pyarrow.compute kernels (no per-row Python)."""

from __future__ import annotations

from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from thresher.pipeline.columns import set_column
from thresher.pipeline.ops import Mapper, OpParams
from thresher.pipeline.registry import register


@register
class UnicodeNormalize(Mapper):
    """Normalise text to a Unicode normal form (NFC by default; NFKC also folds compatibility characters)."""

    name = "unicode_normalize"

    class Params(OpParams):
        form: Literal["NFC", "NFKC", "NFD", "NFKD"] = Field("NFC", description="Unicode normal form (UAX #15)")

    example = {"form": "NFKC"}

    def process(self, batch: pa.Table) -> pa.Table:
        return set_column(batch, self.text_key, pc.utf8_normalize(batch[self.text_key], form=self.params.form))


# C0/C1 control characters except tab and newline, plus zero-width and BOM characters
_CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\x{200b}\x{200c}\x{200d}\x{2060}\x{feff}]"
_HSPACE = r"[ \t\x{00a0}\x{1680}\x{2000}-\x{200a}\x{202f}\x{205f}\x{3000}]+"


@register
class WhitespaceNormalize(Mapper):
    """Normalise line endings, drop control characters, collapse runs of spaces and blank lines, trim."""

    name = "whitespace_normalize"

    class Params(OpParams):
        remove_control: bool = Field(True, description="remove C0/C1 control and zero-width characters")
        collapse_spaces: bool = Field(True, description="runs of spaces/tabs/unicode spaces -> one space")
        max_blank_lines: int = Field(1, ge=0, description="keep at most this many consecutive blank lines")
        strip: bool = Field(True, description="trim each line and the whole text")

    example = {"max_blank_lines": 1}

    def process(self, batch: pa.Table) -> pa.Table:
        p = self.params
        t = batch[self.text_key]
        t = pc.replace_substring_regex(t, r"\r\n?|[\x{2028}\x{2029}\x{0085}]", "\n")
        if p.remove_control:
            t = pc.replace_substring_regex(t, _CONTROL, "")
        if p.collapse_spaces:
            t = pc.replace_substring_regex(t, _HSPACE, " ")
        if p.strip:
            t = pc.replace_substring_regex(t, r"(?m)^ +| +$", "")
        t = pc.replace_substring_regex(t, rf"\n{{{p.max_blank_lines + 2},}}", "\n" * (p.max_blank_lines + 1))
        if p.strip:
            t = pc.utf8_trim_whitespace(t)
        return set_column(batch, self.text_key, t)
