"""Length in tokens (tiktoken cl100k_base offline by default, or any tokenizer.json)."""

from __future__ import annotations

import pyarrow as pa
from pydantic import Field

from thresher.pipeline.columns import bounds_masks
from thresher.pipeline.ops import Filter, OpParams
from thresher.pipeline.registry import register
from thresher.pipeline.tokenizers import token_counter


@register
class TokenLengthFilter(Filter):
    """Keep documents whose length in tokens lies within bounds (cl100k_base offline, or a tokenizer.json)."""

    name = "token_length_filter"
    stats = {"num_tokens": "tokens"}
    bounds = {"num_tokens": ("min_tokens", "max_tokens")}
    columns = ()

    class Params(OpParams):
        tokenizer: str = Field("cl100k_base", description="cl100k_base (offline) or a path to a tokenizer.json")
        min_tokens: int | None = Field(None, ge=0, description="drop if fewer tokens")
        max_tokens: int | None = Field(None, ge=0, description="drop if more tokens")
        write_column: str | None = Field(None, description="also write the count to this column (e.g. num_tokens)")

    example = {"min_tokens": 64, "max_tokens": 8192}

    def prepare(self) -> None:
        token_counter(self.params.tokenizer)  # fail early if it cannot load

    def setup(self) -> None:
        self._counter = token_counter(self.params.tokenizer)
        if self.params.write_column:
            self.columns = (self.params.write_column,)

    def compute_stats(self, batch: pa.Table) -> dict[str, pa.Array]:
        counts = pa.array(self._counter.count(batch[self.text_key].to_pylist()))
        out = {"num_tokens": counts}
        if self.params.write_column:
            out[self.params.write_column] = counts
        return out

    def drop_reasons(self, stats):
        p = self.params
        few, many = bounds_masks(stats["num_tokens"], p.min_tokens, p.max_tokens)
        return {"too_few_tokens": few, "too_many_tokens": many}
