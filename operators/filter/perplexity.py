"""Perplexity filter: score each document with a KenLM n-gram language model (Heafield 2011, "KenLM:
Faster and Smaller Language Model Queries") and drop the ones the model finds too surprising, as
Data-Juicer's ``perplexity_filter`` does (after CCNet, Wenzek et al. 2020, and BigScience's
text-data-filtering).

Data-Juicer's definition (``data_juicer/ops/filter/perplexity_filter.py``): the document's words
(sentencepiece pieces of a model trained with the KenLM model) are joined by spaces and scored as
one sentence, ``log10 p(words </s> | <s>)`` (KenLM's ``score``); the perplexity is
``10 ** (-log10 p / (words + 1))`` (the +1 is ``</s>``), 0 for a document with no words; a
document is kept when its perplexity is at most ``max_ppl`` (default 1500).

thresher takes a KenLM model of your own (``model_path``: ARPA text or KenLM binary) and tokenizes
as you trained it: ``tokenizer: whitespace`` (whitespace-separated words) or ``words`` (the spaCy
rules of ``operators.common.tokenize``, punctuation split off), lower-cased unless ``lowercase`` is
false. ``per_line`` scores each line as a sentence and pools the lines (CCNet's and BigScience's
way) instead of the whole document as one (Data-Juicer's).

Tokenizing is vectorised (compiled, over the whole batch); scoring is one call into KenLM's C++
per document (per line with ``per_line``), which is the only interface KenLM has: that loop is
per row by necessity, and the cost is KenLM's, not Python's. ``kenlm`` is an optional dependency:
``pip install 'thresher[kenlm]'`` (it compiles from source).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from thresher.operators.common.token_spans import LowerTokens
from thresher.operators.common.tokenize import whitespace_word_counts
from thresher.pipeline.columns import over
from thresher.pipeline.errors import ThresherError
from thresher.pipeline.ops import Filter, OpParams, Resources
from thresher.pipeline.registry import register

INSTALL = "perplexity_filter needs the kenlm package, an optional dependency: pip install 'thresher[kenlm]'"

_MODELS: dict[str, object] = {}
_LOCK = threading.Lock()


def import_kenlm():
    """The ``kenlm`` module, or a ThresherError that says how to install it."""
    try:
        import kenlm
    except ImportError:
        raise ThresherError(INSTALL) from None
    return kenlm


def load_kenlm(path: str):
    """A KenLM model (ARPA or binary), loaded once per process."""
    with _LOCK:
        if path not in _MODELS:
            _MODELS[path] = import_kenlm().Model(path)
    return _MODELS[path]


def normalized(text: pa.Array | pa.ChunkedArray, tokenizer: str, lowercase: bool) -> pa.Array:
    """The text as the model reads it: tokens joined by single spaces."""
    if tokenizer == "words":
        return LowerTokens(text, lowercase=lowercase).joined()
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    text = text.fill_null("")
    if lowercase:
        text = pc.utf8_lower(text)
    return pc.utf8_trim_whitespace(pc.replace_substring_regex(text, r"\s+", " "))


def perplexities(model, text: pa.Array | pa.ChunkedArray, tokenizer: str = "whitespace", lowercase: bool = True,
                 per_line: bool = False) -> np.ndarray:
    """Per document, ``10 ** (-sum log10 p / sum (words + 1))`` over its sentences (the whole document,
    or each non-empty line with ``per_line``); 0 for a document with no words (Data-Juicer)."""
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    text = text.fill_null("")
    n = len(text)
    if per_line:
        lines = pc.split_pattern_regex(text, r"\r\n|[\n\r\v\f\x{2028}\x{2029}]")
        doc = pc.list_parent_indices(lines).to_numpy()
        sentences = normalized(pc.list_flatten(lines), tokenizer, lowercase)
    else:
        doc = np.arange(n)
        sentences = normalized(text, tokenizer, lowercase)
    words = whitespace_word_counts(sentences)
    keep = words > 0
    # one C++ call per sentence: KenLM scores strings, one at a time
    scores = np.array([model.score(s) for s in pc.filter(sentences, pa.array(keep)).to_pylist()], dtype=np.float64)
    logp = np.bincount(doc[keep], weights=scores, minlength=n)
    length = np.bincount(doc[keep], weights=words[keep] + 1, minlength=n)
    out = np.zeros(n)
    np.power(10.0, -logp / np.where(length > 0, length, 1), out=out, where=length > 0)
    return out


@register
class PerplexityFilter(Filter):
    """Drop documents whose perplexity under a KenLM language model of your own is above max_ppl
    (Data-Juicer's perplexity_filter; CCNet's scoring).

    Perplexity is ``10 ** (-log10 p(words </s> | <s>) / (words + 1))`` with KenLM's ``score``; a
    document with no words scores 0 and stays. The model is an ARPA or KenLM binary file; the text is
    tokenized to match how it was trained (``tokenizer``, ``lowercase``). Scoring is one call into
    KenLM per document (or per line), which KenLM's interface requires. Needs
    ``pip install 'thresher[kenlm]'``.
    """

    name = "perplexity_filter"
    stats = {"perplexity": "perplexity of the document under the KenLM model (0: no words)"}
    bounds = {"perplexity": (None, "max_ppl")}
    resources = Resources(cpus=1.0, memory_mb=1024, needs_model=True)

    class Params(OpParams):
        model_path: str = Field(description="a KenLM model: ARPA text (.arpa) or KenLM binary (.bin)")
        max_ppl: float = Field(1500.0, gt=0, description="drop documents with a higher perplexity (Data-Juicer: 1500)")
        tokenizer: Literal["whitespace", "words"] = Field(
            "whitespace", description="how the model's training text was split: at whitespace, or into words "
            "and punctuation (spaCy's rules)")
        lowercase: bool = Field(True, description="lower-case the text first (as the model's training text was)")
        per_line: bool = Field(False, description="score each line as a sentence and pool them (CCNet), instead of "
                                                  "the whole document as one (Data-Juicer)")

    example = {"model_path": "models/en.arpa", "max_ppl": 1500}

    def prepare(self) -> None:
        import_kenlm()
        if not Path(self.params.model_path).is_file():
            raise ThresherError(f"perplexity_filter: model_path '{self.params.model_path}' does not exist")

    def setup(self) -> None:
        self._model = load_kenlm(str(Path(self.params.model_path).resolve()))

    def compute_stats(self, batch: pa.Table) -> dict[str, pa.Array]:
        p = self.params
        ppl = perplexities(self._model, batch[self.text_key], p.tokenizer, p.lowercase, p.per_line)
        return {"perplexity": pa.array(ppl, pa.float64())}

    def drop_reasons(self, stats):
        return {"perplexity_too_high": over(stats["perplexity"], self.params.max_ppl)}
