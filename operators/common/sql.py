"""Row conditions written in SQL (``judge_score >= 7 AND lang IN ('en', 'de')``), compiled to polars
expressions by polars' own SQL parser (``polars.sql_expr``) — never Python ``eval``.

A condition is an *expression* over one row's columns: comparisons, ``AND``/``OR``/``NOT``, ``IN``,
``BETWEEN``, ``LIKE``/``ILIKE``, ``IS [NOT] NULL``, ``CASE``, ``CAST``, arithmetic, struct fields
(``meta.lang``), list indexing (``tags[1]``) and the row-wise functions in ``FUNCTIONS``. Refused,
each with a one-line error when the parameters are validated (so a recipe fails before it reads
anything):

- queries inside the condition (``SELECT``, ``FROM``, ``VALUES``, ``WITH``, ``TABLE``, ``EXISTS``
  ...): polars resolves a sub-query *while parsing*, and its table functions (``read_csv``,
  ``read_parquet``, ``read_ipc``, ``read_json``) read files — ``x IN (SELECT column_1 FROM
  read_csv('/etc/passwd'))`` would read the file. The keywords are refused outside quotes, the
  table-function names anywhere (quotes included), before polars sees the text;
- any function not in ``FUNCTIONS`` — aggregates (``AVG``, ``COUNT``, ``FIRST``), window functions
  (``ROW_NUMBER() OVER``) and clocks (``NOW``): their value would depend on which rows share a
  batch, or on the time, so a run's output would depend on workers and executor;
- comments, ``;``, ``$``-quoted strings and characters no condition needs.

The parsed expression is checked again (no aggregation, window, sub-plan or row-count node),
independently of the text checks.

``conjuncts`` splits a condition at its top-level ``AND`` s, so a filter can say *which* part a
row failed.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field

import polars as pl


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Row-wise SQL functions a condition may call (polars' names); everything else is refused.
FUNCTIONS = _words("""
abs ceil ceiling floor round trunc sqrt cbrt exp ln log log2 log10 log1p pow power mod sign div
coalesce nullif ifnull greatest least if
lower upper length char_length character_length octet_length bit_length concat concat_ws left right
substr substring ltrim rtrim trim starts_with ends_with strpos position replace reverse
regexp_like regexp_replace initcap lpad rpad split_part string_to_array strptime normalize
date date_part extract strftime timestamp
array_contains array_length array_get array_lower array_upper array_sum
array_mean array_to_string array_unique array_reverse
""")
# Words followed by "(" that are syntax, not functions.
_SYNTAX = _words("and or not in any all some between like ilike is when then else case cast try_cast "
                    "as null true false distinct escape similar")
# Statement and query keywords (a sub-query needs one of them) and clocks, refused outside quotes.
_BANNED = _words("select from with values table exists union intersect except insert update delete "
                    "merge create drop alter over window partition qualify lateral unnest filter within "
                    "limit offset order group having into current_date current_time current_timestamp "
                    "localtime localtimestamp now")
# FROM is part of these calls' syntax: EXTRACT(year FROM d), TRIM(BOTH 'x' FROM s), SUBSTRING(s FROM 2)
_FROM_CALLS = frozenset({"extract", "trim", "substring", "substr"})
_TABLE_FUNCTION = re.compile(r"read_\w*[\"'`]?\s*\(", re.IGNORECASE)  # read_csv('...'), "read_csv"(...)
_WORD = re.compile(r"[^\W\d]\w*")
_NUMBER = re.compile(r"\d+(\.\d*)?([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?")
_SYMBOLS = set("()[],.+-*/%<>=!|&~^:")
# Parsed-expression nodes that look beyond the row (outside a per-list-element evaluation).
_CROSS_ROW_NODES = frozenset({"Agg", "Window", "Over", "Len", "SubPlan", "Slice", "Gather", "Sort", "SortBy",
                              "Filter", "Explode", "Rolling", "AnonymousFunction", "AnonymousAgg"})
_CROSS_ROW_FUNCTIONS = re.compile(r"(Shift.*|Cum.*|Diff|PctChange|Rank|Reverse|Unique.*|ArgUnique|Mode|"
                                  r"ValueCounts|Range.*|IntRange|Repeat|Sample.*|Shuffle|Interpolate.*|"
                                  r"FillNullWithStrategy|Forward.*|Backward.*|Ewm.*|Rolling.*|Implode|"
                                  r"Explode|Peak.*|Hist|Entropy|Rle.*|RLE.*|Random.*)")


class ConditionError(ValueError):
    """A condition that cannot be used: the message is one line naming what is wrong."""


@dataclass(frozen=True)
class _Token:
    kind: str  # "word", "quoted" (a quoted identifier), "string", "number", "symbol"
    text: str  # the source text
    value: str  # a word lower-cased, an identifier unquoted
    start: int
    end: int


def _tokens(sql: str, backslash: bool) -> list[_Token]:
    """The tokens of ``sql``. ``backslash``: whether ``\\`` escapes a quote inside quotes (polars'
    parser does; the checks run both ways, so a quote the two readings end differently cannot hide
    a keyword from them)."""
    out: list[_Token] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c.isspace():
            i += 1
            continue
        if c in "'\"`":
            j = i + 1
            while True:
                if j >= n:
                    raise ConditionError(f"unterminated {'string' if c == chr(39) else 'quoted name'} at {sql[i:i + 20]!r}")
                if backslash and sql[j] == "\\" and c == "'":
                    j += 2
                    continue
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:  # '' (or "") inside quotes
                        j += 2
                        continue
                    break
                j += 1
            body = sql[i + 1:j].replace(c + c, c)
            out.append(_Token("string" if c == "'" else "quoted", sql[i:j + 1], body, i, j + 1))
            i = j + 1
            continue
        m = _WORD.match(sql, i)
        if m:
            out.append(_Token("word", m.group(), m.group().lower(), i, m.end()))
            i = m.end()
            continue
        m = _NUMBER.match(sql, i)
        if m:
            out.append(_Token("number", m.group(), m.group(), i, m.end()))
            i = m.end()
            continue
        if sql.startswith("--", i) or sql.startswith("/*", i):
            raise ConditionError("comments are not allowed in a condition")
        if c not in _SYMBOLS:
            raise ConditionError(f"character {c!r} is not allowed in a condition")
        out.append(_Token("symbol", c, c, i, i + 1))
        i += 1
    return out


def _check_tokens(tokens: list[_Token]) -> None:
    groups: list[str] = []  # for each open "(", the function it calls ("" for a plain bracket)
    for k, t in enumerate(tokens):
        prev = tokens[k - 1] if k else None
        nxt = tokens[k + 1] if k + 1 < len(tokens) else None
        calls = nxt is not None and nxt.text == "("
        if t.kind == "word" and t.value in _BANNED:
            from_ok = t.value == "from" and ((groups and groups[-1] in _FROM_CALLS)
                                              or (prev is not None and prev.value == "distinct"))
            if not from_ok:
                hint = " (sub-queries are not allowed)" if t.value in ("select", "from", "with", "values", "table",
                                                                       "exists") else ""
                raise ConditionError(f"'{t.text}' is not allowed in a condition{hint}")
        if t.kind in ("word", "quoted") and calls:
            is_type = prev is not None and (prev.value == "as" or prev.text == ":")  # CAST(x AS DECIMAL(10, 2)), x::decimal(10, 2)
            if not is_type and (t.kind == "quoted" or t.value not in _SYNTAX) and t.value.lower() not in FUNCTIONS:
                raise ConditionError(f"function '{t.value}' is not allowed in a condition: only row-wise "
                                     "functions are (abs, lower, length, coalesce, regexp_like, array_contains, "
                                     "...: `thresher ops field_filter` lists them), not aggregates, window "
                                     "functions or clocks")
        if t.text == "(":
            opener = prev.value.lower() if prev is not None and prev.kind in ("word", "quoted") else ""
            groups.append(opener)
        elif t.text == ")" and groups:
            groups.pop()


def _check_tree(node, in_list_eval: bool = False) -> None:
    """Refuse nodes of the parsed expression that depend on other rows (polars' serialized plan)."""
    if isinstance(node, list):
        for x in node:
            _check_tree(x, in_list_eval)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key == "Eval":  # list.eval: its evaluation runs on each list's elements only
            _check_tree(value.get("expr"), in_list_eval)
            _check_tree(value.get("evaluation"), True)
            continue
        if not in_list_eval:
            if key in _CROSS_ROW_NODES:
                raise ConditionError(f"the condition uses '{key}', which depends on other rows")
            if key == "Alias":
                raise ConditionError("the condition names a value (two values side by side? a missing "
                                     "operator or comma)")
            if key == "function" and isinstance(value, str) and _CROSS_ROW_FUNCTIONS.fullmatch(value):
                raise ConditionError(f"the condition uses '{value}', which depends on other rows")
        _check_tree(value, in_list_eval)


def _paths(node) -> set[str]:
    """The columns and struct fields the expression reads, as dotted paths (``meta.lang``)."""
    out: set[str] = set()

    def path_of(n) -> str | None:
        if isinstance(n, dict):
            if "Column" in n and isinstance(n["Column"], str):
                return n["Column"]
            fn = n.get("Function")
            if isinstance(fn, dict):
                f = fn.get("function")
                if isinstance(f, dict) and isinstance(f.get("StructExpr"), dict) and "FieldByName" in f["StructExpr"]:
                    base = path_of(fn["input"][0]) if fn.get("input") else None
                    return f"{base}.{f['StructExpr']['FieldByName']}" if base is not None else None
        return None

    def walk(n) -> None:
        p = path_of(n)
        if p is not None:
            out.add(p)
            return
        if isinstance(n, dict):
            for v in n.values():
                walk(v)
        elif isinstance(n, list):
            for v in n:
                walk(v)

    walk(node)
    # a path's parents are read too, but only the longest paths need checking
    return {p for p in out if not any(q.startswith(p + ".") for q in out)}


def _split_and(tokens: list[_Token], sql: str) -> list[str]:
    """The parts of ``sql`` between its top-level ANDs (not inside brackets, CASE ... END or
    BETWEEN x AND y)."""
    parts, start, depth, between = [], 0, 0, []
    for t in tokens:
        if t.text in ("(", "["):
            depth += 1
        elif t.text in (")", "]"):
            depth -= 1
        elif t.kind == "word" and t.value == "case":
            depth += 1
        elif t.kind == "word" and t.value == "end":
            depth -= 1
        elif t.kind == "word" and t.value == "between":
            between.append(depth)
        elif t.kind == "word" and t.value == "and":
            if between and between[-1] == depth:
                between.pop()
            elif depth == 0:
                parts.append(sql[start:t.start].strip())
                start = t.end
    parts.append(sql[start:].strip())
    return parts


def _parse(sql: str) -> tuple[pl.Expr, list[_Token]]:
    if not sql.strip():
        raise ConditionError("the condition is empty")
    found = _TABLE_FUNCTION.search(sql)
    if found:
        name = re.match(r"\w+", found.group()).group()
        raise ConditionError(f"'{name}(' is not allowed in a condition (not even inside quotes: table "
                             "functions read files)")
    tokens = _tokens(sql, backslash=True)
    _check_tokens(tokens)
    try:
        plain = _tokens(sql, backslash=False)
    except ConditionError:
        raise ConditionError("write a quote inside a string as '' (two quotes), not \\'") from None
    _check_tokens(plain)
    try:
        expr = pl.sql_expr(sql)
    except Exception as e:  # noqa: BLE001 - polars' parse errors come in several classes
        raise ConditionError(f"cannot parse the condition: {str(e).splitlines()[0]}") from None
    _check_tree(json.loads(expr.meta.serialize(format="json")))
    return expr, tokens


@dataclass(frozen=True)
class Conjunct:
    """One top-level AND-part of a condition: its SQL text and its expression."""

    sql: str
    expr: pl.Expr = field(compare=False)


@dataclass(frozen=True)
class Condition:
    """A validated condition: the whole expression, its top-level AND-parts (``sql`` itself when it
    has none) and the column paths it reads."""

    sql: str
    expr: pl.Expr = field(compare=False)
    conjuncts: tuple[Conjunct, ...]
    paths: frozenset[str]


def compile_condition(sql: str) -> Condition:
    """Parse and check ``sql`` (see the module docstring); raises ``ConditionError``."""
    expr, tokens = _parse(sql)
    parts = _split_and(tokens, sql)
    conjuncts: tuple[Conjunct, ...] = (Conjunct(sql.strip(), expr),)
    if len(parts) > 1:
        with contextlib.suppress(ConditionError):  # a part that is not a condition alone: keep it whole
            conjuncts = tuple(Conjunct(p, _parse(p)[0]) for p in parts)
    return Condition(sql.strip(), expr, conjuncts, frozenset(_paths(json.loads(expr.meta.serialize(format="json")))))
