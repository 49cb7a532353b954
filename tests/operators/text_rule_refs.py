"""Plain-Python copies of the definitions the text-rule ops port (Data-Juicer 1.6 and datatrove),
one document at a time, as references for tests/operators/test_text_rules.py and
tests/realdata/test_text_rules_realdata.py. Each follows its source line by line; where thresher
documents a difference, the difference is applied here and named."""

from __future__ import annotations

import heapq
import re

import numpy as np

from thresher.operators.clean.punctuation import DJ_PUNCTUATION
from thresher.operators.clean.symbol_lines import PUNCTUATION
from thresher.operators.common.special_chars import special_characters

SPECIAL_CHARACTERS = special_characters()


# -- Data-Juicer average_line_length_filter / maximum_line_length_filter --------------------------
def dj_avg_line_length(text: str) -> float:
    lines = text.splitlines()
    return len(text) / len(lines) if len(lines) != 0 else 0.0


def dj_max_line_length(text: str) -> int:
    line_lengths = list(map(len, text.splitlines()))
    return max(line_lengths) if line_lengths else 0


# -- datatrove C4ParagraphFilter (mC4 c4_utils.paragraph_filter) ------------------------------------
def c4_paragraph_keep(page: str, min_paragraphs: int = 3, min_paragraph_len: int = 200) -> bool:
    lines = page.split("\n")
    return not (len(lines) < min_paragraphs or min(heapq.nlargest(3, [len(line) for line in lines])) < min_paragraph_len)


# -- Data-Juicer character_repetition_filter / word_repetition_filter ----------------------------
def dj_char_rep_ratio(cur_text: str, n: int = 10) -> float:
    freq_char_ngrams: dict[str, int] = {}
    for i in range(len(cur_text) - n + 1):
        char_ngram = cur_text[i: i + n]
        freq_char_ngrams[char_ngram] = freq_char_ngrams.get(char_ngram, 0) + 1
    if len(freq_char_ngrams) == 0:
        return 0.0
    freqs = sorted(freq_char_ngrams.values(), reverse=True)
    num_no_rep_char_ngrams = freqs.count(1)
    num_rep_char_ngrams = min(int(np.sqrt(len(freqs))), len(freqs) - num_no_rep_char_ngrams)
    total = sum(freqs)
    return (sum(freqs[:num_rep_char_ngrams]) / total) if total != 0 else 0.0


def dj_strip(document: str, strip_characters) -> str:
    if not document:
        return document
    beg_ind = 0
    end_ind = len(document)
    for i in range(len(document)):
        if document[i] in strip_characters:
            beg_ind += 1
        else:
            break
    for i in range(1, len(document) + 1):
        if document[-i] in strip_characters:
            end_ind -= 1
        else:
            break
    return document[beg_ind:end_ind]


def dj_split_on_whitespace(document: str, new_line: bool = False, tab: bool = False) -> list[str]:
    sep = "|".join([" "] + new_line * ["\n"] + tab * ["\t"])
    return [word for word in re.split(sep, document) if word]


def dj_word_rep_ratio(text: str, n: int = 10) -> float:
    words = dj_split_on_whitespace(text, True, True)
    words = [w.lower() for w in words]
    words = [dj_strip(w, SPECIAL_CHARACTERS) for w in words]
    words = [w for w in words if w]
    freq_word_ngrams: dict[str, int] = {}
    for i in range(len(words) - n + 1):
        word_ngram = " ".join(words[i: i + n])
        freq_word_ngrams[word_ngram] = freq_word_ngrams.get(word_ngram, 0) + 1
    if len(freq_word_ngrams) == 0:
        return 0.0
    freqs = list(freq_word_ngrams.values())
    total = sum(freqs)
    return (sum(f for f in freqs if f > 1) / total) if total != 0 else 0.0


# -- datatrove SymbolLinesFormatter --------------------------------------------------------------
def datatrove_symbol_lines(text: str, replace_char: str = "") -> str:
    """datatrove's loop, except that lines are split at '\\n' (thresher keeps other breaks and a
    final newline; datatrove's ``splitlines()`` would not)."""
    symbols = set(PUNCTUATION)
    formatted = []
    in_removed_span = False
    for line in text.split("\n"):
        chars_line = line.strip() != "" and all(c in symbols or c == " " for c in line)
        if chars_line and not in_removed_span:
            if replace_char:
                formatted.append(replace_char)
            in_removed_span = True
        elif not chars_line:
            formatted.append(line)
            in_removed_span = False
    return "\n".join(formatted)


# -- Data-Juicer punctuation_normalization_mapper -------------------------------------------------
def dj_punctuation(text: str) -> str:
    return "".join([DJ_PUNCTUATION.get(c, c) for c in text])


# -- Data-Juicer remove_long_words_mapper ---------------------------------------------------------
def dj_remove_long_words(text: str, min_len: int = 1, max_len: int = 2**63 - 1) -> str:
    def keep(word):
        return min_len <= len(word) <= max_len or min_len <= len(dj_strip(word, SPECIAL_CHARACTERS)) <= max_len

    sentences = [[dj_split_on_whitespace(sub) for sub in line.split("\t")] for line in text.split("\n")]
    sentences = [[[w for w in sub if keep(w)] for sub in line] for line in sentences]
    sentences = [[" ".join(sub) for sub in line if sub] for line in sentences]
    sentences = ["\t".join(line) for line in sentences if line]
    return "\n".join(sentences) if sentences else ""


# -- Data-Juicer remove_repeat_sentences_mapper ---------------------------------------------------
def dj_split_sentence(text: str) -> list[str]:
    text = re.sub(r"([.。！!？\?])([^’”])", r"\1\n\2", text)
    text = re.sub(r"(\.{6})([^’”])", r"\1\n\2", text)
    text = re.sub(r"(\…{2})([^’”])", r"\1\n\2", text)
    text = re.sub(r"([.。!！？\?\.{6}\…{2}][’”])([^’”])", r"\1\n\2", text)
    return text.split("\n")


def dj_remove_repeat_sentences(text: str, lowercase: bool = False, ignore_special_character: bool = True,
                               min_repeat_sentence_length: int = 2) -> str:
    remove_regex = re.compile(r"[^a-zA-Z0-9\u4e00-\u9fa5\n\t ]") if ignore_special_character else None
    new_lines = []
    hash_set: set[str] = set()
    for line in text.split("\n"):
        new_sent = ""
        if line:
            for sentence in dj_split_sentence(line):
                copy = sentence.strip()
                if lowercase:
                    copy = copy.lower()
                if remove_regex:
                    copy = remove_regex.sub("", copy)
                if len(copy) < min_repeat_sentence_length:
                    new_sent += sentence
                elif copy not in hash_set:
                    new_sent += sentence
                    hash_set.add(copy)
        new_lines.append(new_sent)
    return "\n".join(new_lines)


# -- Data-Juicer text_chunk_mapper (characters) ----------------------------------------------------
def dj_text_chunks(text: str, max_len: int | None = None, split_pattern: str | None = r"\n\n",
                   overlap_len: int = 0) -> list[str]:
    """Data-Juicer's get_text_chunks (its recursion as a loop), then thresher's rule: chunks that
    are only whitespace are left out."""
    def recursively_chunk(text):
        chunks = []
        while True:
            total_len = len(text)
            sub_text = text[:max_len]
            if total_len <= max_len:
                return chunks + [text]
            matches = list(re.finditer(split_pattern, sub_text))
            if not matches:
                cur_text = sub_text
                left_text = text[max_len - overlap_len:]
            else:
                last_match = matches[-1]
                cur_text = sub_text[: last_match.start()]
                left_text = text[last_match.end():]
            chunks += [cur_text] if cur_text.strip() else []
            text = left_text

    if split_pattern is not None and max_len is None:
        chunks = [t for t in re.split(split_pattern, text) if t is not None and t.strip()]
    elif split_pattern is None and max_len is not None:
        if len(text) <= max_len:
            chunks = [text]
        else:
            chunks = [text[start: start + max_len] for start in range(0, len(text), max_len - overlap_len)]
    else:
        chunks = recursively_chunk(text)
    return [c for c in chunks if c.strip()]


# -- sentence_split (thresher's rule, written independently with look-around) -------------------
def sentence_split_ref(text: str, abbreviations: list[str], split_cjk: bool = True) -> str:
    """The rule of ``sentence_split`` as one look-around regex (needs the ``regex`` package)."""
    import regex

    closers = re.escape("\"'”’»)]」』）")
    words = "|".join(sorted((re.escape(a.lower().rstrip(".")) for a in abbreviations), key=len, reverse=True) + [r"\p{L}"])
    boundary = regex.compile(rf"(?<=[.!?…。！？][{closers}]*)(?<!(?:^|[^\p{{L}}\p{{N}}.])(?i:{words})\.[{closers}]*)[ \t]+(?=[^\s\p{{Ll}}.!?…。！？])")
    text = boundary.sub("\n", text)
    if split_cjk:
        text = regex.sub(rf"(?<=[。！？][{closers}]*)(?=[^\s{closers}。！？])", "\n", text)
    return text
