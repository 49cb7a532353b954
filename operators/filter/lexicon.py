"""Word-list filters: stop-word presence/ratio (per language) and flagged-word ratio.

Words are the tokens of ``operators.common.tokenize`` on lower-cased text, punctuation excluded.
With ``lang: auto`` each row's language is read from a column (e.g. the ``lang`` that
``language_id`` writes), so one recipe filters a multilingual corpus with the right list per row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from thresher.operators.common.tokenize import fnv1a
from thresher.operators.common.words import Tokens, ratio
from thresher.operators.filter.wordlists import FLAGGED_WORDS, STOP_WORDS, flagged_words, stop_words
from thresher.pipeline.columns import over, under
from thresher.pipeline.ops import Filter, OpParams
from thresher.pipeline.registry import register


def _word_hits(batch: pa.Table, text_key: str, lang: str, lang_key: str, lists: dict[str, list[str]]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(words, words found in the row's language list, rows that have a list) per row."""
    tok = Tokens(pc.utf8_lower(batch[text_key]))
    words_mask = ~tok.is_symbol()
    n_words = tok.per_doc(words_mask)
    n = batch.num_rows
    if lang == "auto":
        langs = batch.column(lang_key).to_pylist() if lang_key in batch.column_names else [None] * n
    else:
        langs = [lang] * n
    row_lang = np.array([lists_index(lists, x) for x in langs], dtype=np.int64)
    token_lang = np.repeat(row_lang, tok.counts)
    hit = np.zeros(len(tok.hashes), dtype=bool)
    for j, words in enumerate(lists.values()):
        sel = token_lang == j
        if sel.any():
            hashes = np.array([fnv1a(w) for w in words], dtype=np.uint64)
            hit[sel] = np.isin(tok.hashes[sel], hashes)
    return n_words, tok.per_doc(hit & words_mask), row_lang >= 0


def lists_index(lists: dict[str, list[str]], lang) -> int:
    if lang is None:
        return -1
    keys = list(lists)
    code = str(lang).lower().replace("_", "-").split("-")[0]
    return keys.index(code) if code in keys else -1


@register
class StopwordsFilter(Filter):
    """Keep prose: at least a number and/or share of words must be stop words of the row's language
    (lists for 16 languages; Gopher's rule, Rae et al. 2021, App. A.1.1, generalised)."""

    name = "stopwords_filter"
    stats = {"stop_words": "words that are stop words", "stop_word_ratio": "stop words / words"}
    # (rows whose language has no list are never dropped by these: see unknown_lang)
    bounds = {"stop_words": ("min_count", None), "stop_word_ratio": ("min_ratio", None)}

    class Params(OpParams):
        lang: str = Field("en", description=f"language code, or 'auto' to read lang_key; built in: {', '.join(STOP_WORDS)}")
        lang_key: str = Field("lang", description="column with each row's language (lang: auto)")
        min_count: int | None = Field(2, description="drop with fewer stop words (Gopher: 2)")
        min_ratio: float | None = Field(None, description="drop with a lower stop-word share (Data-Juicer's default: 0.3)")
        words_file: str | None = Field(None, description="your own list for 'lang' (one word per line) instead of the built-in one")
        unknown_lang: str = Field("keep", description="rows whose language has no list: keep | drop")

        @field_validator("lang")
        @classmethod
        def _known(cls, v: str) -> str:
            if v != "auto" and v not in STOP_WORDS:
                raise ValueError(f"no built-in stop words for '{v}' (have: {', '.join(STOP_WORDS)}); give words_file")
            return v

    example = {"lang": "auto", "min_count": 2}

    def setup(self) -> None:
        p = self.params
        self._lists = {k: stop_words(k) for k in STOP_WORDS}
        if p.words_file:
            self._lists = {p.lang: Path(p.words_file).read_text(encoding="utf-8").split()}

    def compute_stats(self, batch: pa.Table) -> dict[str, pa.Array]:
        p = self.params
        n_words, hits, known = _word_hits(batch, self.text_key, p.lang, p.lang_key, self._lists)
        self._known = known
        return {"stop_words": pa.array(hits.astype(np.int64)), "stop_word_ratio": pa.array(ratio(hits, n_words))}

    def drop_reasons(self, stats):
        p = self.params
        count = stats["stop_words"].to_numpy()
        share = stats["stop_word_ratio"].to_numpy()
        known = getattr(self, "_known", np.ones(len(count), dtype=bool))
        few, low = under(count, p.min_count), under(share, p.min_ratio)
        return {"unknown_language": ~known if p.unknown_lang == "drop" else np.zeros(len(count), bool),
                "too_few_stop_words": few & known, "stop_word_ratio_too_low": low & known}


@register
class FlaggedWordsFilter(Filter):
    """Drop documents whose share of flagged (adult / spam) words exceeds a threshold (C4's bad-words
    rule as a ratio, like Data-Juicer's flagged_words_filter)."""

    name = "flagged_words_filter"
    stats = {"flagged_words": "flagged words", "flagged_word_ratio": "flagged words / words"}
    bounds = {"flagged_word_ratio": (None, "max_ratio")}

    class Params(OpParams):
        lang: str = Field("en", description=f"language of the built-in list ({', '.join(FLAGGED_WORDS)}), or 'auto'")
        lang_key: str = Field("lang", description="column with each row's language (lang: auto)")
        max_ratio: float = Field(0.045, description="drop above this share (Data-Juicer's default: 0.045)")
        words_file: str | None = Field(None, description="replace the list: a file with one word per line")

    example = {"max_ratio": 0.01}

    def setup(self) -> None:
        p = self.params
        self._lists = {k: flagged_words(k) for k in FLAGGED_WORDS}
        if p.words_file:
            self._lists = {("en" if p.lang == "auto" else p.lang): Path(p.words_file).read_text(encoding="utf-8").split()}

    def compute_stats(self, batch: pa.Table) -> dict[str, pa.Array]:
        p = self.params
        n_words, hits, _known = _word_hits(batch, self.text_key, p.lang, p.lang_key, self._lists)
        return {"flagged_words": pa.array(hits.astype(np.int64)), "flagged_word_ratio": pa.array(ratio(hits, n_words))}

    def drop_reasons(self, stats):
        return {"flagged_word_ratio": over(stats["flagged_word_ratio"], self.params.max_ratio)}
