"""Gopher quality and repetition rules (Rae et al. 2021, "Scaling Language Models: Methods,
Analysis & Insights from Training Gopher", Appendix A.1.1 and Table A1).

Every threshold is a parameter whose default is the paper's; set one to null to switch that rule off.
Where the paper leaves a detail open, thresher reads it as datatrove (0.10) does, so the two agree
document by document (bench/filters.py): tokens come from ``operators.common.tokenize``; a *word* is
a token that is not made of punctuation only; the word-count and mean-length rules use words,
while the symbol and alphabetic ratios divide by all tokens (punctuation included); the stop-word
rule counts *different* stop words ("at least two of the following words"); n-grams for the
duplicate rules are measured without the joining spaces.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from thresher.operators.common.ngrams import ngram_char_stats
from thresher.operators.common.segments import line_marks, segment_dup_counts
from thresher.operators.common.words import Tokens, ratio
from thresher.pipeline.columns import bounds_masks, over, under
from thresher.pipeline.ops import Bound, Filter, OpParams
from thresher.pipeline.registry import register

GOPHER_STOP_WORDS = ["the", "be", "to", "of", "and", "that", "have", "with"]


@register
class GopherQualityFilter(Filter):
    """Gopher quality rules: word count, mean word length, symbol ratios, bullet and ellipsis lines,
    alphabetic words, stop words (Rae et al. 2021, App. A.1.1)."""

    name = "gopher_quality_filter"
    stats = {
        "num_words": "words (tokens not made of punctuation only)",
        "mean_word_length": "mean characters per word",
        "hash_ratio": "'#' per token", "ellipsis_ratio": "'...' or '…' per token",
        "bullet_lines_ratio": "share of lines starting with a bullet ('•' or '-')",
        "ellipsis_lines_ratio": "share of lines ending with an ellipsis",
        "alpha_words_ratio": "tokens with a letter / tokens",
        "stop_words": "different stop words present",
    }
    bounds = {
        "num_words": ("min_doc_words", "max_doc_words"),
        "mean_word_length": ("min_avg_word_length", "max_avg_word_length"),
        "hash_ratio": (None, "max_symbol_word_ratio"),  # one parameter bounds both symbol ratios
        "ellipsis_ratio": (None, "max_symbol_word_ratio"),
        "bullet_lines_ratio": (None, "max_bullet_lines_ratio"),
        "ellipsis_lines_ratio": (None, "max_ellipsis_lines_ratio"),
        "alpha_words_ratio": ("min_alpha_words_ratio", None),
        "stop_words": ("min_stop_words", None),
    }

    class Params(OpParams):
        min_doc_words: int | None = Field(50, description="drop below this many words (paper: 50)")
        max_doc_words: int | None = Field(100_000, description="drop above this many words (paper: 100,000)")
        min_avg_word_length: float | None = Field(3, description="drop if mean word length is below (paper: 3)")
        max_avg_word_length: float | None = Field(10, description="drop if mean word length is above (paper: 10)")
        max_symbol_word_ratio: float | None = Field(0.1, description="drop if '#' or ellipses per word exceed (paper: 0.1)")
        max_bullet_lines_ratio: float | None = Field(0.9, description="drop if more lines start with a bullet (paper: 0.9)")
        max_ellipsis_lines_ratio: float | None = Field(0.3, description="drop if more lines end with an ellipsis (paper: 0.3)")
        min_alpha_words_ratio: float | None = Field(0.8, description="drop if fewer words contain a letter (paper: 0.8)")
        min_stop_words: int | None = Field(2, description="drop if fewer different stop words occur (paper: 2)")
        stop_words: list[str] = Field(default_factory=lambda: list(GOPHER_STOP_WORDS),
                                      description="the stop words (paper: the, be, to, of, and, that, have, with)")

    example = {"min_doc_words": 50, "min_stop_words": 2}

    def compute_stats(self, batch: pa.Table) -> dict[str, pa.Array]:
        text = batch[self.text_key]
        tok = Tokens(text)
        n_tokens = tok.counts
        n_words, word_chars, letters, stop = tok.word_stats(self.params.stop_words).T
        n_lines, bullets, ell_lines, hashes, ellipses = line_marks(text).T
        return {
            "num_words": pa.array(n_words),
            "mean_word_length": pa.array(ratio(word_chars, n_words)),
            "hash_ratio": pa.array(ratio(hashes, n_tokens)),
            "ellipsis_ratio": pa.array(ratio(ellipses, n_tokens)),
            "bullet_lines_ratio": pa.array(ratio(bullets, n_lines)),
            "ellipsis_lines_ratio": pa.array(ratio(ell_lines, n_lines)),
            "alpha_words_ratio": pa.array(ratio(letters, n_tokens)),
            "stop_words": pa.array(stop),
        }

    def drop_reasons(self, stats):
        p = self.params
        short_doc, long_doc = bounds_masks(stats["num_words"], p.min_doc_words, p.max_doc_words)
        short_words, long_words = bounds_masks(stats["mean_word_length"], p.min_avg_word_length, p.max_avg_word_length)
        return {
            "gopher_short_doc": short_doc,
            "gopher_long_doc": long_doc,
            "gopher_below_avg_word_length": short_words,
            "gopher_above_avg_word_length": long_words,
            "gopher_too_many_hashes": over(stats["hash_ratio"], p.max_symbol_word_ratio),
            "gopher_too_many_ellipsis": over(stats["ellipsis_ratio"], p.max_symbol_word_ratio),
            "gopher_too_many_bullet_lines": over(stats["bullet_lines_ratio"], p.max_bullet_lines_ratio),
            "gopher_too_many_end_ellipsis": over(stats["ellipsis_lines_ratio"], p.max_ellipsis_lines_ratio),
            "gopher_below_alpha_words_ratio": under(stats["alpha_words_ratio"], p.min_alpha_words_ratio),
            "gopher_too_few_stop_words": under(stats["stop_words"], p.min_stop_words),
        }


TOP_NGRAMS = {2: 0.20, 3: 0.18, 4: 0.16}
DUP_NGRAMS = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}


@register
class GopherRepetitionFilter(Filter):
    """Gopher repetition rules: duplicate lines and paragraphs, top 2-4-gram and duplicate 5-10-gram
    character fractions (Rae et al. 2021, Table A1)."""

    name = "gopher_repetition_filter"
    stats = {
        "dup_para_frac": "paragraphs that repeat an earlier one / paragraphs",
        "dup_para_char_frac": "characters in repeated paragraphs / characters",
        "dup_line_frac": "lines that repeat an earlier one / lines (blank lines skipped)",
        "dup_line_char_frac": "characters in repeated lines / characters",
        **{f"top_{n}_gram_char_frac": f"characters covered by the most frequent {n}-gram / characters" for n in TOP_NGRAMS},
        **{f"dup_{n}_gram_char_frac": f"characters in duplicated {n}-grams / characters" for n in DUP_NGRAMS},
        "empty": "the text is empty",
    }
    # the n-gram bounds come from the dict parameters: see thresholds
    bounds = {k: (None, k) for k in ("dup_para_frac", "dup_para_char_frac", "dup_line_frac", "dup_line_char_frac")}

    class Params(OpParams):
        dup_line_frac: float | None = Field(0.30, description="max duplicate line fraction (Table A1: 0.30)")
        dup_para_frac: float | None = Field(0.30, description="max duplicate paragraph fraction (Table A1: 0.30)")
        dup_line_char_frac: float | None = Field(0.20, description="max duplicate line character fraction (Table A1: 0.20)")
        dup_para_char_frac: float | None = Field(0.20, description="max duplicate paragraph character fraction (Table A1: 0.20)")
        top_n_grams: dict[int, float] = Field(default_factory=lambda: dict(TOP_NGRAMS),
                                              description="n -> max top n-gram character fraction (Table A1: 2: 0.20, 3: 0.18, 4: 0.16)")
        dup_n_grams: dict[int, float] = Field(default_factory=lambda: dict(DUP_NGRAMS),
                                              description="n -> max duplicate n-gram character fraction (Table A1: 5: 0.15 ... 10: 0.10)")

    example = {"dup_line_frac": 0.3, "top_n_grams": {2: 0.2, 3: 0.18, 4: 0.16}}

    def thresholds(self) -> dict[str, Bound]:
        out = super().thresholds()
        for stat, param, table in (("top_{}_gram_char_frac", "top_n_grams", self.params.top_n_grams),
                                   ("dup_{}_gram_char_frac", "dup_n_grams", self.params.dup_n_grams)):
            for n, thr in sorted(table.items()):
                if thr is not None:
                    out[stat.format(n)] = Bound(None, float(thr), None, f"{param}.{n}")
        return out

    def compute_stats(self, batch: pa.Table) -> dict[str, pa.Array]:
        p = self.params
        text = batch[self.text_key]
        n_chars = pc.utf8_length(text).to_numpy(zero_copy_only=False)
        # paragraphs: the trimmed text split at runs of 2+ newlines; lines: split at runs of newlines
        n_para, dup_para, dup_para_chars = segment_dup_counts(text, min_run=2, trim=True)
        n_line, dup_line, dup_line_chars = segment_dup_counts(text, min_run=1)
        out = {
            "dup_para_frac": ratio(dup_para, n_para), "dup_para_char_frac": ratio(dup_para_chars, n_chars),
            "dup_line_frac": ratio(dup_line, n_line), "dup_line_char_frac": ratio(dup_line_chars, n_chars),
            "empty": n_chars == 0,
        }
        if p.top_n_grams or p.dup_n_grams:
            tok = Tokens(text)
            top_ns, dup_ns = sorted(p.top_n_grams), sorted(p.dup_n_grams)
            top, dup = ngram_char_stats(tok.hashes, tok.lens, tok.offsets, top_ns, dup_ns)
            for k, n in enumerate(top_ns):
                out[f"top_{n}_gram_char_frac"] = ratio(top[:, k], n_chars)
            for k, n in enumerate(dup_ns):
                out[f"dup_{n}_gram_char_frac"] = ratio(dup[:, k], n_chars)
        return {k: pa.array(v) for k, v in out.items()}

    def drop_reasons(self, stats):
        p = self.params
        reasons = {
            "empty": stats["empty"].to_numpy(zero_copy_only=False).astype(bool),
            "dup_para_frac": over(stats["dup_para_frac"], p.dup_para_frac),
            "dup_para_char_frac": over(stats["dup_para_char_frac"], p.dup_para_char_frac),
            "dup_line_frac": over(stats["dup_line_frac"], p.dup_line_frac),
            "dup_line_char_frac": over(stats["dup_line_char_frac"], p.dup_line_char_frac),
        }
        for n, thr in sorted(p.top_n_grams.items()):
            reasons[f"top_{n}_gram"] = over(stats[f"top_{n}_gram_char_frac"], thr)
        for n, thr in sorted(p.dup_n_grams.items()):
            reasons[f"duplicated_{n}_n_grams"] = over(stats[f"dup_{n}_gram_char_frac"], thr)
        return reasons
