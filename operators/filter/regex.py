"""Filter rows by regular expressions (RE2, linear time) over a text column."""

from __future__ import annotations

import re
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from thresher.operators.common.re2 import check_pattern
from thresher.pipeline.ops import Filter, OpParams
from thresher.pipeline.registry import register

_REASON = re.compile(r"[a-z][a-z0-9_]*")


def _numpy(values) -> np.ndarray:
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return np.asarray(values.to_numpy(zero_copy_only=False))
    return np.asarray(values)


@register
class RegexFilter(Filter):
    """Drop rows whose text matches any of a list of regular expressions (or, with ``mode: keep``,
    keep only those).

    datatrove's ``RegexFilter`` (drop a document when the regex finds a match; here several patterns,
    named reasons and a keep mode), on RE2 through ``pyarrow.compute.match_substring_regex`` instead
    of Python's ``re``: matching takes time linear in the text, so no pattern can hang a run on
    catastrophic backtracking (``(a+)+$`` on ``aaaa...b`` is as fast as any other pattern). RE2 has
    no backreferences or lookaround; a pattern that uses them is a recipe error naming it. A
    pattern matches anywhere in the text (anchor it with ``^``/``$``; ``(?m)`` makes them match at
    line ends, ``(?s)`` lets ``.`` match newlines). Rows whose text is null, or that lack the
    column, match nothing.

    Reasons: ``regex_match`` (drop mode, ``patterns`` a list), the pattern's name (drop mode,
    ``patterns`` a mapping from reason code to pattern: a row is recorded under the first pattern it
    matches), ``regex_no_match`` (keep mode).
    """

    name = "regex_filter"
    stats = {"matched_patterns": "how many of the patterns match the text",
             "first_match": "position in patterns of the first one that matches (-1: none)"}
    example = {"patterns": {"lorem_ipsum": "(?i)lorem ipsum", "javascript_notice": "(?i)enable javascript"}}

    class Params(OpParams):
        patterns: list[str] | dict[str, str] = Field(
            description="RE2 patterns: a list (reason regex_match), or a mapping reason_code -> pattern")
        mode: Literal["drop", "keep"] = Field("drop", description="drop rows that match any pattern, or keep only those")
        field: str | None = Field(None, description="the column to match (default: the recipe's text column)")
        ignore_case: bool = Field(False, description="match case-insensitively (or put (?i) in a pattern)")

        @field_validator("patterns")
        @classmethod
        def _named_and_valid(cls, v):
            if not v:
                raise ValueError("give at least one pattern")
            if isinstance(v, dict):
                bad = [k for k in v if not _REASON.fullmatch(k)]
                if bad:
                    raise ValueError(f"pattern names are drop reasons and must be snake_case codes: {bad}")
            for pattern in v.values() if isinstance(v, dict) else v:
                check_pattern(pattern)
            return v

    @property
    def _patterns(self) -> list[str]:
        p = self.params.patterns
        return list(p.values()) if isinstance(p, dict) else list(p)

    def compute_stats(self, batch: pa.Table) -> dict[str, np.ndarray]:
        column = self.params.field or self.text_key
        text = batch[column] if column in batch.column_names else pa.nulls(batch.num_rows, pa.string())
        if pa.types.is_null(text.type):  # a column that is all null
            text = text.cast(pa.string())
        n = batch.num_rows
        matched = np.zeros(n, dtype=np.int64)
        first = np.full(n, -1, dtype=np.int64)
        for j, pattern in enumerate(self._patterns):
            hit = pc.fill_null(pc.match_substring_regex(text, pattern, ignore_case=self.params.ignore_case), False)
            hit = np.asarray(hit.to_numpy(zero_copy_only=False), dtype=bool)
            first[(first < 0) & hit] = j
            matched += hit
        return {"matched_patterns": matched, "first_match": first}

    def drop_reasons(self, stats: dict[str, pa.Array]) -> dict[str, np.ndarray]:
        p = self.params
        matched = _numpy(stats["matched_patterns"]) > 0
        if p.mode == "keep":
            return {"regex_no_match": ~matched}
        if isinstance(p.patterns, dict):
            first = _numpy(stats["first_match"])
            return {name: first == j for j, name in enumerate(p.patterns)}
        return {"regex_match": matched}
