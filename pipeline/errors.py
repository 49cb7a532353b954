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


class FatalOpError(ThresherError):
    """An op cannot go on at all (an LLM endpoint that is unreachable or rejects the key, a missing
    model): the run stops with this message instead of sending rows to quarantine one by one.
    Never bisected or retried by the runner."""


class RunFailed(ThresherError):
    """The run went to the end but must not count as a success (e.g. too much of it was quarantined).
    Its ledger is written for diagnosis; ``_SUCCESS`` is not."""


class LedgerImbalance(ThresherError):
    """rows in != rows out + dropped + quarantined: the run lost or invented rows."""


def closest(name: str, choices: Iterable[str], n: int = 1) -> list[str]:
    """The closest valid names to ``name`` (for 'did you mean ...?')."""
    return difflib.get_close_matches(name, sorted(choices), n=n, cutoff=0.5)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    match = closest(name, choices)
    return f" Did you mean '{match[0]}'?" if match else ""
