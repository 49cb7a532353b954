"""Unigram log-probability filter: the mean log-probability of a document's words under a unigram
word-frequency model (datatrove's ``UnigramLogProbFilter``, after the peS2o corpus of Soldaini & Lo
2023, AllenAI), with the frequencies of the ``wordfreq`` package (Speer 2022).

datatrove's definition (``datatrove/pipeline/filters/unigram_log_probs.py``): words are the
tokens of the language's word tokenizer (spaCy's blank English tokenizer for English), compared in
lower case; a word's probability is its relative frequency, ``1e-9`` when the list lacks it
(punctuation tokens included); the score is the mean natural log of those probabilities (0 for a
document with no words); a document is kept when the score is *above* ``logprobs_threshold``
(default -10). datatrove reads Google's 1T unigram counts (English only); thresher reads
``wordfreq``'s lists, which cover 40-odd languages and ship inside the package (no download).

Vectorised: the batch is tokenized once by the compiled tokenizer of ``operators.common.tokenize``
(spaCy's rules, as datatrove's), each token's lower-cased bytes are hashed in one numba pass
(``operators.common.token_spans``), and a compiled pass looks every hash up in an open-addressing
(hash -> log-probability) table built once per worker and sums per document: no Python per word or
per row.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit
from pydantic import Field, model_validator

from thresher.operators.common.token_spans import LowerTokens
from thresher.operators.common.tokenize import string_hashes
from thresher.pipeline.columns import under
from thresher.pipeline.ops import Filter, OpParams, Resources
from thresher.pipeline.registry import register

UNKNOWN_PROB = 1e-9  # datatrove: the probability of a word the frequency list lacks

_TABLES: dict[tuple[str, str], UnigramTable] = {}
_LOCK = threading.Lock()
_MIX = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: slot = (h * 2^64/phi) >> (64 - bits)


@njit(cache=True)
def _build(hashes, values, bits):
    """Open addressing with linear probing; key 0 marks an empty slot (a word whose hash is 0, a
    2^-64 chance, is left out and reads as unknown)."""
    keys = np.zeros(1 << bits, dtype=np.uint64)
    vals = np.zeros(1 << bits, dtype=np.float64)
    mask = (1 << bits) - 1
    shift = np.uint64(64 - bits)
    for i in range(len(hashes)):
        h = hashes[i]
        if h == 0:
            continue
        slot = np.int64((h * _MIX) >> shift)
        while keys[slot] != 0 and keys[slot] != h:
            slot = (slot + 1) & mask
        if keys[slot] == 0:
            keys[slot] = h
            vals[slot] = values[i]
    return keys, vals


@njit(cache=True)
def _add_logprobs(hashes, offsets, doc_table, j, keys, vals, bits, unknown, sums):
    """For the documents whose table is ``j``: the sum of their tokens' log-probabilities (``unknown``
    for a token the table lacks), into ``sums``."""
    mask = (1 << bits) - 1
    shift = np.uint64(64 - bits)
    for d in range(len(doc_table)):
        if doc_table[d] != j:
            continue
        total = 0.0
        for t in range(offsets[d], offsets[d + 1]):
            h = hashes[t]
            v = unknown
            slot = np.int64((h * _MIX) >> shift)
            while True:
                k = keys[slot]
                if k == 0:
                    break
                if k == h:
                    v = vals[slot]
                    break
                slot = (slot + 1) & mask
            total += v
        sums[d] = total


def wordfreq_languages(wordlist: str = "best") -> list[str]:
    """The languages ``wordfreq`` has a ``wordlist`` for."""
    import wordfreq

    return sorted(wordfreq.available_languages(wordlist))


@dataclass(frozen=True)
class UnigramTable:
    """A word list as a hash table: FNV-1a of the word -> natural-log frequency."""

    keys: np.ndarray
    values: np.ndarray
    bits: int
    words: int


def unigram_table(lang: str, wordlist: str = "best") -> UnigramTable:
    """wordfreq's list for ``lang`` as a hash table (FNV-1a of each word -> ln frequency), built once
    per process: the words are hashed by one compiled pass over an Arrow array and inserted by a
    compiled loop, not one by one in Python."""
    key = (lang, wordlist)
    with _LOCK:
        if key not in _TABLES:
            import wordfreq

            freqs = wordfreq.get_frequency_dict(lang, wordlist)
            hashes = string_hashes(pa.array(list(freqs), pa.string()))
            logp = np.log(np.fromiter(freqs.values(), dtype=np.float64, count=len(freqs)))
            bits = max(4, int(np.ceil(np.log2(2 * len(freqs) + 1))))  # load factor <= 1/2
            keys, values = _build(hashes, logp, bits)
            _TABLES[key] = UnigramTable(keys, values, bits, len(freqs))
    return _TABLES[key]


def mean_logprob(text: pa.Array | pa.ChunkedArray, langs: np.ndarray, tables: list[UnigramTable],
                 unknown_prob: float = UNKNOWN_PROB) -> np.ndarray:
    """Mean natural-log unigram probability of each document's tokens; ``langs[i]`` indexes
    ``tables`` for row i (-1: no table, NaN). A document without tokens scores 0 (datatrove)."""
    tokens = LowerTokens(text)
    hashes, counts = tokens.hashes(), tokens.counts
    n = len(counts)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    langs = np.ascontiguousarray(langs, dtype=np.int64)
    sums = np.zeros(n)
    for j in np.unique(langs[langs >= 0]).tolist():
        t = tables[j]
        _add_logprobs(hashes, offsets, langs, j, t.keys, t.values, t.bits, float(np.log(unknown_prob)), sums)
    out = np.zeros(n)
    np.divide(sums, counts, out=out, where=counts > 0)
    out[langs < 0] = np.nan
    return out


def _lang_code(value) -> str | None:
    if value is None:
        return None
    return str(value).lower().replace("_", "-").split("-")[0] or None


@register
class UnigramLogProbFilter(Filter):
    """Drop documents whose words are improbable: keep those whose mean log unigram probability
    (wordfreq frequencies) is above a threshold (datatrove's UnigramLogProbFilter).

    A document's score is the mean over its tokens (spaCy's tokenizer rules, as datatrove's English
    tokenizer; punctuation tokens count, as there) of ``ln p(token.lower())``, where ``p`` is the
    word's frequency in ``wordfreq``'s list for the language and ``unknown_prob`` (datatrove: 1e-9)
    for a token the list lacks; a document with no tokens scores 0. Rows whose score is at or
    below ``min_logprob`` (datatrove's ``logprobs_threshold``, -10) are dropped
    (``unigram_logprob_too_low``). With ``language: auto`` each row's language is read from
    ``lang_key``; rows in a language wordfreq has no list for score NaN and are kept.

    The tokenizer follows spaCy's English rules in every language; for languages written without
    spaces between words (Chinese, Japanese, Thai) it does not find words and the score means little.
    """

    name = "unigram_logprob_filter"
    stats = {"unigram_logprob": "mean natural-log unigram probability of the document's tokens (wordfreq; "
                                "NaN: no list for the row's language)"}
    bounds = {"unigram_logprob": ("min_logprob", None, False)}  # kept only when strictly above (datatrove)
    resources = Resources(cpus=1.0, memory_mb=300, needs_model=True)

    class Params(OpParams):
        min_logprob: float = Field(-10.0, description="keep documents whose mean log-probability is above this "
                                                      "(datatrove's logprobs_threshold: -10)")
        language: str = Field("en", description="wordfreq language code, or 'auto' to read each row's from lang_key")
        lang_key: str = Field("lang", description="column with each row's language (language: auto)")
        wordlist: Literal["best", "large", "small"] = Field("best", description="which wordfreq list to read")
        unknown_prob: float = Field(UNKNOWN_PROB, gt=0, lt=1, description="probability of a word the list lacks "
                                                                          "(datatrove: 1e-9)")

        @model_validator(mode="after")
        def _known(self):
            have = wordfreq_languages(self.wordlist)
            if self.language != "auto" and self.language not in have:
                raise ValueError(f"wordfreq has no '{self.wordlist}' word list for '{self.language}' "
                                 f"(have: {', '.join(have)})")
            return self

    example = {"min_logprob": -10.0, "language": "en"}

    def setup(self) -> None:
        p = self.params
        self._langs = wordfreq_languages(p.wordlist) if p.language == "auto" else [p.language]
        self._tables: dict[str, UnigramTable] = {}
        if p.language != "auto":
            self._tables[p.language] = unigram_table(p.language, p.wordlist)

    def _row_languages(self, batch: pa.Table) -> tuple[np.ndarray, list[UnigramTable]]:
        """Per row, the index of its table (-1: none), and the tables (loaded on first use)."""
        p = self.params
        n = batch.num_rows
        if p.language != "auto":
            return np.zeros(n, dtype=np.int64), [self._tables[p.language]]
        if p.lang_key not in batch.column_names:
            return np.full(n, -1, dtype=np.int64), []
        enc = pc.dictionary_encode(batch[p.lang_key].combine_chunks())
        codes = [_lang_code(v) for v in enc.dictionary.to_pylist()]  # one per distinct value
        names = sorted({c for c in codes if c in self._langs})
        for c in names:
            if c not in self._tables:
                self._tables[c] = unigram_table(c, p.wordlist)
        where = np.array([names.index(c) if c in names else -1 for c in codes] + [-1], dtype=np.int64)
        idx = enc.indices.fill_null(len(codes)).to_numpy(zero_copy_only=False)
        return where[idx], [self._tables[c] for c in names]

    def compute_stats(self, batch: pa.Table) -> dict[str, pa.Array]:
        langs, tables = self._row_languages(batch)
        score = mean_logprob(batch[self.text_key], langs, tables, self.params.unknown_prob)
        return {"unigram_logprob": pa.array(score, pa.float64())}

    def drop_reasons(self, stats):
        return {"unigram_logprob_too_low": under(stats["unigram_logprob"], self.params.min_logprob, inclusive=False)}
