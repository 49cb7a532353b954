"""Language identification with fastText's lid.176 model (Joulin et al. 2016, "Bag of Tricks for
Efficient Text Classification"; the model behind CCNet and FineWeb's language filter).

Writes ``lang`` and ``lang_score``; keeps rows whose language is allowed and whose score reaches
``min_score`` (FineWeb keeps English at >= 0.65). ``tag_only`` keeps every row. The model loads
once per worker. The shipped lid.176.ftz (and any quantized hierarchical-softmax fastText model) is
run by ``fasttext_infer``: fastText's own inference steps compiled with numba, reading the text in
place in the Arrow buffer (no Python strings, no copies), with the binding's labels and
probabilities bit for bit (tests/operators/test_langid_compiled.py) and ~4x less CPU per byte than
the binding's ``multilinePredict``. Other model files go through the binding, a batch per call.

Fast path (default). fastText's prediction is a softmax over the *mean* of the document's word and
character n-gram vectors, and its cost is linear in the length. A long document is classified on a
sample of about ``sample_bytes`` (a few pieces spread from its start to its end, cut on whitespace):
the sample's mean vector estimates the whole one. Rows whose sample scores under ``recheck_below``
(by default ``min_score`` + 0.25, at least 0.9) are classified again on the whole document, so only
confident calls come from the sample. On the real multilingual and web sets of ``../shared/data``
this agrees with whole-document lid.176 on >= 99.8% of labels and keep/drop decisions
(``bench/langid.py``, tests/realdata/test_langid_realdata.py); ``sample_bytes: null`` classifies
every document whole. The compiled path reads the sample's pieces as byte ranges of the column
(``sample_ranges``) and rechecks a row on its own range: the same strings the binding would see.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from thresher.operators.common.tokenize import string_buffers
from thresher.operators.filter.fasttext_infer import FtzModel, load_ftz
from thresher.operators.filter.fasttext_infer import predict as fasttext_predict
from thresher.pipeline.assets import LID176, asset_path
from thresher.pipeline.columns import under
from thresher.pipeline.ops import Bound, Filter, OpParams, Resources
from thresher.pipeline.registry import register

_MODELS: dict[str, object] = {}
_COMPILED: dict[str, object] = {}


def load_lid(path: str):
    """The model for ``classify``, once per process: an ``FtzModel`` (compiled inference, the same
    labels and probabilities as the binding) where the file is a quantized hierarchical-softmax model
    such as lid.176.ftz, else the fastText binding (a model of your own in another layout)."""
    if path not in _COMPILED:
        try:
            _COMPILED[path] = load_ftz(path)
        except ValueError:
            _COMPILED[path] = load_fasttext(path)
    return _COMPILED[path]


def load_fasttext(path: str):
    """A fastText model, loaded once per process (the binding directly: its Python predict()
    wrapper breaks under NumPy 2)."""
    if path not in _MODELS:
        import fasttext.FastText as ft

        _MODELS[path] = ft._FastText(model_path=path)
    return _MODELS[path]


def predict_top(model, texts: list[str]) -> tuple[list[str], np.ndarray]:
    labels, probs = model.f.multilinePredict(texts, 1, 0.0, "strict")
    lab = [x[0] if len(x) else "" for x in labels]
    score = np.array([p[0] if len(p) else 0.0 for p in probs], dtype=np.float64)
    return lab, np.clip(score, 0.0, 1.0)  # fastText's softmax can come out a hair above 1


def one_line(text) -> list[str]:
    """fastText reads one line per example: newlines become spaces."""
    return pc.replace_substring_regex(text, r"[\r\n\v\f\x{2028}\x{2029}]+", " ").to_pylist()


_WHITESPACE = np.zeros(256, dtype=bool)
_WHITESPACE[[9, 10, 11, 12, 13, 32]] = True


def _cut_after(data: np.ndarray, pos: np.ndarray, end: np.ndarray, window: int) -> np.ndarray:
    """For each byte position: just after the first ASCII whitespace within ``window`` bytes (else the
    next UTF-8 character boundary), never past ``end``. ASCII bytes never occur inside a multi-byte
    UTF-8 sequence, so every cut is a valid UTF-8 boundary."""
    rel = np.minimum(pos[:, None] + np.arange(window), np.maximum(end - 1, 0)[:, None])
    if not len(data):
        return np.minimum(pos, end)
    b = data[rel]
    ws = _WHITESPACE[b]
    boundary = (b & 0xC0) != 0x80
    cut = np.where(ws.any(1), pos + ws.argmax(1) + 1, pos + boundary.argmax(1))
    return np.minimum(cut, end)


def sample_ranges(text: pa.Array | pa.ChunkedArray, budget: int, pieces: int = 3,
                  window: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(data, offsets, lo, hi, sampled): the UTF-8 bytes of ``text`` (nulls as ""), its row offsets and, per row, ``pieces``
    byte ranges data[lo:hi] (shape rows x pieces). Rows longer than ``budget`` bytes get pieces of
    about budget/pieces bytes, the first at the start, the last at the end, the others evenly between,
    each cut on whitespace; shorter rows are their first range whole (the others empty). ``sampled``
    marks the rows that were cut. Vectorised on the UTF-8 buffer (no per-row Python)."""
    data, offsets = string_buffers(text)
    n = len(offsets) - 1
    data = data[: offsets[-1] if n else 0]
    start, end = offsets[:-1], offsets[1:]
    length = end - start
    sampled = length > budget
    piece = max(budget // pieces, 1)
    j = np.arange(pieces)
    lo = start[:, None] + (np.maximum(length - piece, 0)[:, None] * j) // max(pieces - 1, 1)
    lo[:, 1:] = _cut_after(data, lo[:, 1:].ravel(), np.repeat(end, pieces - 1), window).reshape(n, pieces - 1)
    hi = _cut_after(data, (lo + piece).ravel(), np.repeat(end, pieces), window).reshape(n, pieces)
    whole = ~sampled[:, None]
    lo = np.where(whole, np.where(j == 0, start[:, None], end[:, None]), lo)
    hi = np.maximum(np.where(whole, end[:, None], hi), lo)
    return data, offsets, lo, hi, sampled


def sample_text(text: pa.Array | pa.ChunkedArray, budget: int, pieces: int = 3,
                window: int = 32) -> tuple[pa.Array, np.ndarray]:
    """(samples, sampled): the ranges of ``sample_ranges`` as strings, a sampled row's pieces joined by
    a space; shorter rows (and nulls, as "") stay whole (for the fastText binding, which reads
    strings; the compiled path reads the ranges in place)."""
    data, _, lo, hi, sampled = sample_ranges(text, budget, pieces, window)
    n = len(sampled)
    j = np.arange(pieces)
    joins = (sampled[:, None] & (j < pieces - 1)).astype(np.int64)
    # pieces and joining spaces interleaved: (source start, length) per output segment; a joining
    # space is gathered from byte 0 and then overwritten (no copy of the text buffer)
    src = np.stack([lo, np.zeros_like(lo)], axis=2).ravel()
    seg_len = np.stack([hi - lo, joins], axis=2).ravel()
    out_offsets = np.zeros(n + 1, np.int64)
    np.cumsum(seg_len.reshape(n, 2 * pieces).sum(1), out=out_offsets[1:])
    seg_out = np.zeros(len(seg_len), np.int64)
    np.cumsum(seg_len[:-1], out=seg_out[1:])
    idx_t = np.int32 if len(data) < 2**31 and out_offsets[-1] < 2**31 else np.int64
    idx = np.arange(out_offsets[-1], dtype=idx_t) - np.repeat((seg_out - src).astype(idx_t), seg_len)
    out = data[idx]
    out[seg_out[1::2][joins.ravel() > 0]] = 32
    out = pa.LargeStringArray.from_buffers(n, pa.py_buffer(out_offsets), pa.py_buffer(out))
    return out, sampled


def _row_slices(text: pa.Array | pa.ChunkedArray, rows: int):
    for chunk in text.chunks if isinstance(text, pa.ChunkedArray) else [text]:
        for i in range(0, len(chunk), rows):
            yield chunk.slice(i, rows)


def classify(model, text: pa.Array | pa.ChunkedArray, sample_bytes: int | None = None, pieces: int = 3,
             recheck_below: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Top label and score per row: on a sample of each long row (``sample_ranges``), then on the whole
    row where the sample's score is under ``recheck_below``; whole rows only without ``sample_bytes``.
    ``model``: an ``FtzModel`` (compiled inference on the Arrow buffers, in place) or the binding."""
    if isinstance(model, FtzModel):
        return _classify_compiled(model, text, sample_bytes, pieces, recheck_below)
    if not sample_bytes or recheck_below > 1.0:
        labels, score = predict_top(model, one_line(text))
        return np.array(labels, dtype=object), score
    lines: list[str] = []
    marks = []
    for part in _row_slices(text, 4096):  # zero-copy slices: the sampler's index arrays stay small
        sample, sampled = sample_text(part, sample_bytes, pieces)
        lines += one_line(sample)
        marks.append(sampled)
    sampled = np.concatenate(marks) if marks else np.zeros(0, dtype=bool)
    labels, score = predict_top(model, lines)
    labels = np.array(labels, dtype=object)
    again = np.flatnonzero(sampled & (score < recheck_below))
    if len(again):
        whole = text.take(pa.array(again))
        labels[again], score[again] = predict_top(model, one_line(pc.fill_null(whole, "")))
    return labels, score


def _classify_compiled(model: FtzModel, text, sample_bytes, pieces, recheck_below):
    """``classify`` with fasttext_infer's kernel: the samples and the rechecked rows are byte ranges
    of the column's own buffer (no strings built, no copies)."""
    names = np.array([*model.labels, ""], dtype=object)  # index -1: no prediction
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks() if text.num_chunks != 1 else text.chunk(0)
    n = len(text)
    if not sample_bytes or recheck_below > 1.0:
        data, offsets = string_buffers(text)
        label, score = fasttext_predict(model, data, offsets[:-1], offsets[1:], np.arange(n + 1))
        return names[label], np.clip(score, 0.0, 1.0)
    label = np.empty(n, dtype=np.int32)
    score = np.empty(n, dtype=np.float64)
    for i in range(0, n, 4096):  # zero-copy slices: the sampler's index arrays stay small
        part = text.slice(i, 4096)
        data, offsets, lo, hi, sampled = sample_ranges(part, sample_bytes, pieces)
        rows = len(sampled)
        lab, sc = fasttext_predict(model, data, lo.ravel(), hi.ravel(), np.arange(0, rows * pieces + 1, pieces))
        again = np.flatnonzero(sampled & (sc < recheck_below))
        if len(again):
            lab[again], sc[again] = fasttext_predict(model, data, offsets[again], offsets[again + 1],
                                                     np.arange(len(again) + 1))
        label[i: i + rows], score[i: i + rows] = lab, sc
    return names[label], np.clip(score, 0.0, 1.0)


@register
class LanguageId(Filter):
    """Identify each document's language with fastText lid.176 (writes lang, lang_score); keep the
    listed languages at or above min_score, or tag only."""

    name = "language_id"
    stats = {"lang": "ISO 639 code of the most likely language", "lang_score": "its probability"}
    bounds = {"lang_score": ("min_score", None)}  # the stat is named by score_key: see thresholds
    resources = Resources(cpus=1.0, memory_mb=300, needs_model=True)

    class Params(OpParams):
        languages: list[str] = Field(default_factory=list, description="languages to keep (empty: any)")
        min_score: float = Field(0.65, ge=0, le=1, description="minimum probability (FineWeb: 0.65)")
        tag_only: bool = Field(False, description="keep every row; only add lang and lang_score")
        model_path: str | None = Field(None, description="a lid.176.ftz/.bin of your own (default: fetched into the cache)")
        lang_key: str = Field("lang", description="column for the language code")
        score_key: str = Field("lang_score", description="column for the probability")
        max_chars: int | None = Field(None, ge=1, description="classify only the first N characters (faster; fastText's cost is linear in length)")
        sample_bytes: int | None = Field(500, ge=64, description="classify a sample of about this many bytes of each longer document (pieces from start to end, cut on whitespace), and the whole document where the sample is not confident (see recheck_below); null: always the whole document")
        sample_pieces: int = Field(3, ge=1, le=16, description="pieces the sample is taken in, spread evenly from the start to the end")
        recheck_below: float | None = Field(None, ge=0, le=1.5, description="a sampled row scoring under this is classified again on its whole text (default: min_score + 0.25, at least 0.9; above 1: always whole)")

    example = {"languages": ["en"], "min_score": 0.65}

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.params.lang_key, self.params.score_key)

    def thresholds(self) -> dict[str, Bound]:
        if self.params.tag_only:
            return {}
        out = super().thresholds()
        return {self.params.score_key: out["lang_score"]} if "lang_score" in out else {}

    def prepare(self) -> None:
        asset_path(LID176, self.params.model_path)

    def setup(self) -> None:
        self._model = load_lid(str(asset_path(LID176, self.params.model_path, fetch=False)))

    @property
    def recheck_below(self) -> float:
        p = self.params
        if p.recheck_below is not None:
            return p.recheck_below
        return 0.9 if p.tag_only else max(0.9, p.min_score + 0.25)

    def compute_stats(self, batch: pa.Table) -> dict[str, pa.Array]:
        p = self.params
        text = batch[self.text_key]
        if p.max_chars:
            text = pc.utf8_slice_codeunits(text, 0, p.max_chars)
        labels, score = classify(self._model, text, p.sample_bytes, p.sample_pieces, self.recheck_below)
        langs = pc.utf8_slice_codeunits(pa.array(labels, pa.string()), len("__label__"))
        return {p.lang_key: langs, p.score_key: pa.array(score)}

    def drop_reasons(self, stats):
        p = self.params
        n = len(stats[p.lang_key])
        zero = np.zeros(n, dtype=bool)
        if p.tag_only:
            return {"language_not_allowed": zero, "language_score_too_low": zero}
        langs = stats[p.lang_key]
        allowed = pc.is_in(langs, pa.array(p.languages, pa.string())).to_numpy(zero_copy_only=False) if p.languages \
            else np.ones(n, dtype=bool)
        return {"language_not_allowed": ~allowed,
                "language_score_too_low": under(stats[p.score_key], p.min_score)}
