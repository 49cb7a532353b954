"""Mojibake repair with ftfy (Speer, "ftfy: fixes text for you")."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from thresher.pipeline.columns import set_column
from thresher.pipeline.ops import Mapper, OpParams
from thresher.pipeline.registry import register


@register
class FixMojibake(Mapper):
    """Repair mojibake and broken Unicode with ftfy (pure-ASCII texts are skipped in bulk)."""

    name = "mojibake_fix"
    aliases = ("fix_mojibake",)
    metrics = {"texts_changed": "texts that ftfy changed"}

    class Params(OpParams):
        normalization: str | None = Field("NFC", description="ftfy's final normalisation (NFC, NFKC or null)")
        uncurl_quotes: bool = Field(False, description="turn curly quotes into straight ones")
        fix_latin_ligatures: bool = Field(True, description="replace ligatures such as 'ﬁ' with letters")

    example = {"normalization": "NFC"}

    def setup(self) -> None:
        import ftfy

        p = self.params
        self._config = ftfy.TextFixerConfig(normalization=p.normalization, uncurl_quotes=p.uncurl_quotes,
                                            fix_latin_ligatures=p.fix_latin_ligatures)
        self._fix = ftfy.fix_text

    def process(self, batch: pa.Table) -> pa.Table:
        text = batch[self.text_key]
        # ftfy is per-string Python; most web text is ASCII and needs nothing, so only the rest goes through it
        todo = np.flatnonzero(~pc.fill_null(pc.string_is_ascii(text), True).to_numpy(zero_copy_only=False))
        if len(todo) == 0:
            return batch
        values = text.take(pa.array(todo)).to_pylist()
        fixed = [self._fix(v, self._config) for v in values]
        changed = [i for i, (a, b) in enumerate(zip(values, fixed, strict=True)) if a != b]
        self.record("texts_changed", len(changed))
        if not changed:
            return batch
        full = text.to_pylist()
        for i in changed:
            full[todo[i]] = fixed[i]
        return set_column(batch, self.text_key, pa.array(full, pa.string()))
