"""Regular expressions in RE2 syntax, checked when a recipe is read.

Arrow's regex kernels (``pyarrow.compute.match_substring_regex``, ``replace_substring_regex``,
``count_substring_regex``, ``extract_regex``) run Google's RE2, which matches in time linear in the
text: a pattern such as ``(a+)+$``, which makes a backtracking engine (Python's ``re``, PCRE) take
exponential time on ``aaaa...b``, is no slower than any other. The price is that RE2 has no
backreferences (``\\1`` in a pattern), lookahead or lookbehind (``(?=``, ``(?!``, ``(?<=``,
``(?<!``), possessive quantifiers or atomic groups. See https://github.com/google/re2/wiki/Syntax.

Recipes give patterns as text; ``check_pattern`` compiles one with Arrow on a one-row array so a
pattern RE2 refuses is a recipe error naming it, before any data is read.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

RE2_NOTE = ("thresher matches with RE2 (linear time, no catastrophic backtracking), which has no "
            "backreferences, lookahead/lookbehind, possessive quantifiers or atomic groups")

_PROBE = pa.array([""], pa.string())


def _arrow_message(e: Exception) -> str:
    text = (str(e).strip().splitlines() or [""])[0]
    for prefix in ("Invalid regular expression: ", "Invalid replacement string: "):
        text = text.removeprefix(prefix)
    return text


def check_pattern(pattern: str, ignore_case: bool = False) -> str:
    """``pattern`` if RE2 compiles it; otherwise a ``ValueError`` (a one-line recipe error) naming
    it and saying why."""
    if not isinstance(pattern, str) or pattern == "":
        raise ValueError("a pattern must be a non-empty string")
    try:
        pc.match_substring_regex(_PROBE, pattern, ignore_case=ignore_case)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise ValueError(f"pattern '{pattern}' is not valid RE2 ({_arrow_message(e)}); {RE2_NOTE}") from None
    return pattern


def check_replacement(pattern: str, replacement: str) -> None:
    """A ``ValueError`` if ``replacement`` is not a valid RE2 rewrite for ``pattern``: group
    references are ``\\1``..``\\9`` (``\\0``: the whole match), a literal backslash is ``\\\\``;
    Python's ``\\g<1>`` and ``$1`` are not references."""
    try:
        pc.replace_substring_regex(_PROBE, pattern, replacement)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise ValueError(f"replacement '{replacement}' for pattern '{pattern}' is not a valid RE2 rewrite "
                         f"({_arrow_message(e)}); refer to groups as \\1..\\9 and write a backslash as \\\\") from None


def char_class(chars: str) -> str:
    """An RE2 character class matching any of ``chars`` (each code point as ``\\x{HEX}``, so no
    character needs escaping rules)."""
    return "[" + "".join(f"\\x{{{ord(c):X}}}" for c in dict.fromkeys(chars)) + "]"
