"""Errors a user sees. Each one names where the problem is and what was expected."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ThresherError(Exception):
    """Base class: a problem the user can fix; the CLI prints it without a stack trace."""


class RecipeError(ThresherError):
    """The recipe is invalid. Raised before any data is read."""


class InputError(ThresherError):
    """An input path is missing or unreadable. Raised before work starts."""


class OutputError(ThresherError):
    """The output directory cannot be used as asked (e.g. an unfinished run without --resume)."""


class LedgerImbalance(ThresherError):
    """rows in != rows out + dropped + quarantined: the run lost or invented rows."""


def closest(name: str, choices: Iterable[str], n: int = 1) -> list[str]:
    """The closest valid names to ``name`` (for 'did you mean ...?')."""
    return difflib.get_close_matches(name, sorted(choices), n=n, cutoff=0.5)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    match = closest(name, choices)
    return f" Did you mean '{match[0]}'?" if match else ""
