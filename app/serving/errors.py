"""Errors the serving layer raises, as data: which field, which instance, what is wrong.

Protocol adapters render them in their own wire shape (native ``detail`` entries,
an OIP ``{"error"}`` string, a gRPC status); none of them ever parses the text.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a request's inputs.

    ``field`` is a raw input name (``age``, ``image``) or a request-level part
    (``outputs``, ``parameters.threshold``); ``index`` is the instance within the batch.
    """

    field: str
    problem: str
    index: int | None = None
    suggestion: str | None = None
    allowed: tuple[str, ...] | None = None


def hint_needed(problem: Problem) -> bool:
    """Whether a "did you mean" must be added (the encoding's own text may say it)."""
    return problem.suggestion is not None and repr(problem.suggestion) not in problem.problem


class ServingError(Exception):
    """Base class: everything a client can cause, never a 5xx."""


class InvalidInput(ServingError):
    """The inputs do not fit the version's schema; every problem found is listed."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        first = self.problems[0]
        super().__init__(f"{first.field}: {first.problem}")


class ModelNotFound(ServingError, LookupError):
    """No such model, or no such version (or it is not serving)."""

    def __init__(
        self,
        name: str,
        version: int | str | None = None,
        reason: str = "",
        known: Iterable[str] = (),
    ) -> None:
        self.name, self.version, self.reason = name, version, reason
        what = f"model {name!r}" if version is None else f"version {version} of model {name!r}"
        message = f"{what} {reason or 'is not found'}"
        known = sorted(known)
        if known:
            guess = closest(str(version) if version is not None else name, known)
            kind = "versions" if version is not None else "models"
            message += f"; did you mean {guess!r}?" if guess else ""
            message += f" ({kind}: {', '.join(known)})"
        super().__init__(message)


class Overloaded(ServingError):
    """The bounded queue or in-flight limit is full: answered at once, never queued."""

    def __init__(self, reason: str, retry_after_s: float = 1.0) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(reason)


class DeadlineExceeded(ServingError):
    """The request's own deadline passed before the model ran: the work was dropped."""


class FeedbackDisabled(ServingError, LookupError):
    """The server keeps no predictions (``FEEDBACK=false``): nothing to join labels with."""


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The known word a typo most likely meant, or None when nothing is close."""
    found = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.75)
    if found:
        return found[0]
    folded = {c.casefold(): c for c in candidates}
    return folded.get(word.casefold())
