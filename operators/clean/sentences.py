"""Sentence-level cleaning: Data-Juicer's remove_repeat_sentences_mapper and sentence_split_mapper.

Both work on whole columns: sentence boundaries are marked with RE2 rewrites
(``pyarrow.compute.replace_substring_regex``), the sentences of every document are split into one
flat column, each sentence's comparison key is hashed in one compiled pass, and repeats are found
with a polars ``is_first_distinct`` over (document, key hash, key length).
"""

from __future__ import annotations

import re

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit
from pydantic import Field

from thresher.operators.common.segments import join_kept, split_flat
from thresher.operators.common.strings import free_char, strip_span
from thresher.operators.common.tokenize import FNV_OFFSET, FNV_PRIME, _decode, string_buffers
from thresher.pipeline.columns import set_column
from thresher.pipeline.ops import Mapper, OpParams
from thresher.pipeline.registry import register

# Data-Juicer's split_sentence (remove_repeat_sentences_mapper), rewrite for rewrite: a '\n' goes
# after sentence-final punctuation that is not followed by a closing quote, then after closing
# quotes. Its last character class, written [.。!！？\?\.{6}\…{2}], is a set of single characters:
# it also holds '{', '6', '}' and '2', so '6”x' is split after the quote as in Data-Juicer.
DJ_SENTENCE_REWRITES = (
    (r"([.。！!？?])([^’”])", "\\1\n\\2"),
    (r"(\.{6})([^’”])", "\\1\n\\2"),
    (r"(…{2})([^’”])", "\\1\n\\2"),
    (r"([.。!！？?{}6…2][’”])([^’”])", "\\1\n\\2"),
)


@njit(cache=True)
def _sentence_keys(data, offsets, ignore_special):
    """Each sentence's key, as Data-Juicer makes it (``strip()``, then with ``ignore_special`` only
    ASCII letters and digits, U+4E00-U+9FA5, newline, tab and space), by FNV-1a hash and length."""
    n = len(offsets) - 1
    hashes = np.empty(n, dtype=np.uint64)
    lens = np.empty(n, dtype=np.int64)
    for k in range(n):
        a, b = strip_span(data, offsets[k], offsets[k + 1])
        h = FNV_OFFSET
        count = 0
        i = a
        while i < b:
            cp, w = _decode(data, i)
            if not ignore_special or 48 <= cp <= 57 or 65 <= cp <= 90 or 97 <= cp <= 122 or 0x4E00 <= cp <= 0x9FA5 \
                    or cp == 9 or cp == 10 or cp == 32:
                for j in range(i, i + w):
                    h = (h ^ np.uint64(data[j])) * FNV_PRIME
                count += 1
            i += w
        hashes[k] = h
        lens[k] = count
    return hashes, lens


def dj_sentence_marks(lines: pa.Array) -> pa.Array:
    """Each line with a '\\n' after every sentence, by Data-Juicer's ``split_sentence``. Its
    second rewrite (six dots) is skipped: after the first, which puts a '\\n' inside every pair of
    dots, no line has three dots in a row, so it never matches."""
    for k, (pattern, rewrite) in enumerate(DJ_SENTENCE_REWRITES):
        if k != 1:
            lines = pc.replace_substring_regex(lines, pattern, rewrite)
    return lines


@register
class RepeatedSentencesRemove(Mapper):
    """Remove the later copies of a sentence that repeats within a document (Data-Juicer's
    remove_repeat_sentences_mapper).

    As Data-Juicer: the text is split into lines at ``\\n`` and each line into sentences by its
    regex splitter (after ``. 。 ! ！ ? ？``, six dots or two ``…``, and after a closing quote that
    follows them); a sentence is compared by its key — the sentence stripped of surrounding
    whitespace, lower-cased with ``lowercase``, and with ``ignore_special_character`` reduced to ASCII
    letters, digits, CJK ideographs (U+4E00-U+9FA5) and spaces. Keys shorter than
    ``min_repeat_sentence_length`` are never removed; otherwise the first sentence with a key stays
    and later ones, anywhere in the document, go. Sentences are removed with their own spacing, lines
    stay (an emptied line stays as an empty line). Data-Juicer's custom ``tokenizer`` is not supported.
    """

    name = "repeated_sentences_remove"
    metrics = {"sentences_removed": "repeated sentences removed"}

    class Params(OpParams):
        lowercase: bool = Field(False, description="compare sentences in lower case (Data-Juicer: false)")
        ignore_special_character: bool = Field(True, description="compare only letters, digits, CJK ideographs and "
                                               "spaces (Data-Juicer: true)")
        min_repeat_sentence_length: int = Field(2, ge=0, description="sentences whose key is shorter are kept even "
                                                "when repeated (Data-Juicer: 2)")

    example = {"lowercase": False, "ignore_special_character": True, "min_repeat_sentence_length": 2}

    def process(self, batch: pa.Table) -> pa.Table:
        p = self.params
        text = batch[self.text_key]
        lines, line_doc, n_docs = split_flat(text.fill_null(""), "\n")
        sentences = pc.split_pattern(dj_sentence_marks(lines), "\n")
        flat = pc.list_flatten(sentences)
        sent_line = pc.list_parent_indices(sentences).to_numpy(zero_copy_only=False)
        key_hash, key_len = _sentence_keys(*string_buffers(pc.utf8_lower(flat) if p.lowercase else flat),
                                           p.ignore_special_character)
        eligible = key_len >= p.min_repeat_sentence_length
        eligible &= (pc.binary_length(lines).to_numpy(zero_copy_only=False) > 0)[sent_line]  # as DJ: `if line:`
        idx = np.flatnonzero(eligible)
        frame = pl.DataFrame({"doc": line_doc[sent_line[idx]], "h": key_hash[idx], "n": key_len[idx]})
        first = frame.select(pl.struct("doc", "h", "n").is_first_distinct()).to_series().to_numpy()
        keep = np.ones(len(flat), dtype=bool)
        keep[idx[~first]] = False
        removed = int((~keep).sum())
        self.record("sentences_removed", removed)
        if not removed:
            return batch
        kept_lines = join_kept(flat, sent_line, keep, len(lines), "")
        out = join_kept(kept_lines, line_doc, np.ones(len(lines), dtype=bool), n_docs, "\n")
        if text.null_count:
            out = pc.if_else(pc.is_null(text), pa.scalar(None, out.type), out)
        return set_column(batch, self.text_key, out)


# words whose final '.' does not end a sentence (compared case-insensitively)
ABBREVIATIONS = ["mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "e.g", "i.e", "cf", "fig", "vol",
                 "pp", "approx", "dept", "est", "inc", "ltd", "co", "corp", "u.s", "u.k", "a.m", "p.m", "jan", "feb",
                 "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec"]
_CLOSERS = "\"'”’»)]」』）"
# Python's whitespace (str.isspace), for RE2 character classes (RE2's \s is ASCII only)
_SPACE = r"\t\n\x0b\x0c\r\x1c-\x1f\x{85}\p{Z}"


@register
class SentenceSplit(Mapper):
    """Put each sentence on a line of its own (Data-Juicer's sentence_split_mapper output: the
    sentences joined by ``\\n``), with rules instead of NLTK's punkt model.

    A sentence ends at a run of ``. ! ? …`` (or ``。 ！ ？``) and any closing quotes or brackets;
    the spaces and tabs after it become one ``\\n`` when the next character is neither a lower-case
    letter nor sentence-final punctuation (``. . .`` stays together). A ``.`` right after a single
    letter (initials: ``J. Smith``) or a word of ``abbreviations`` (``Dr.``, ``e.g.``, ``"U.S."``)
    ends no sentence. With ``split_cjk``, ``。！？`` also end a sentence that is followed directly,
    without a space, by the next one. Existing line breaks stay; nothing
    else changes. The op stays 1:1 (one row per document, as Data-Juicer's): use ``text_chunk`` with
    ``split_pattern: "\\n"`` to make one row per sentence.
    """

    name = "sentence_split"
    metrics = {"sentence_breaks": "line breaks put between sentences"}

    class Params(OpParams):
        abbreviations: list[str] = Field(default_factory=lambda: list(ABBREVIATIONS),
                                         description="words (any case, without the final '.') after which '.' "
                                         "does not end a sentence (e.g. dr, e.g, u.s)")
        split_cjk: bool = Field(True, description="also split after 。！？ not followed by a space")

    example = {"abbreviations": ["dr", "mr", "e.g"], "split_cjk": True}

    def setup(self) -> None:
        words = sorted({a.lower().rstrip(".") for a in self.params.abbreviations if a.strip(".")}, key=len, reverse=True)
        alts = "|".join([re.escape(w) for w in words] + [r"\pL"])
        self._protect = rf"(^|[^\pL\pN.])((?i:{alts}))\."
        self._boundary = rf"([.!?…。！？]+[{re.escape(_CLOSERS)}]*)[ \t]+([^{_SPACE}\p{{Ll}}.!?…。！？])"
        self._cjk = rf"([。！？]+[{re.escape(_CLOSERS)}]*)([^{_SPACE}{re.escape(_CLOSERS)}。！？])"

    def process(self, batch: pa.Table) -> pa.Table:
        text = batch[self.text_key]
        if isinstance(text, pa.ChunkedArray):
            text = text.combine_chunks()
        mark = free_char(text)
        t = pc.replace_substring_regex(text, self._protect, rf"\1\2{mark}")
        t = pc.replace_substring_regex(t, self._boundary, "\\1\n\\2")
        if self.params.split_cjk:
            t = pc.replace_substring_regex(t, self._cjk, "\\1\n\\2")
        t = pc.replace_substring(t, mark, ".")
        before = pc.sum(pc.count_substring(text, "\n")).as_py() or 0
        self.record("sentence_breaks", (pc.sum(pc.count_substring(t, "\n")).as_py() or 0) - before)
        return set_column(batch, self.text_key, t)
