"""Typed refusals: what a command raises when the rules say no. Nothing was changed.

Commands and domain code raise these and never name an HTTP status; the shared app factory maps them
to statuses once (`route_errors.install`). The message is for a person: say what was refused and what
to do instead, and never include a person's details.
"""

from __future__ import annotations

from typing import Any


class Refused(Exception):
    """Base of every refusal a caller can act on. `detail` is the message shown to them; `context` (ids,
    counts: never a person's details) lets a program act too, e.g. the id of the record it clashes with."""

    def __init__(self, detail: str, **context: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.context = context

    def body(self) -> str | dict[str, Any]:
        """The response's `detail`: the message, or with context `{"message": ..., **context}`."""
        return {"message": self.detail, **self.context} if self.context else self.detail


class Invalid(Refused):
    """The request is well-formed but the rules refuse its values (HTTP 422)."""


class NotFound(Refused):
    """No such thing, or not one the caller may see (HTTP 404)."""


class Conflict(Refused):
    """The request clashes with what is already recorded (HTTP 409)."""


class Forbidden(Refused):
    """The caller may not do this (HTTP 403)."""


class TooLarge(Refused):
    """The request carries more than the service takes in one go (HTTP 413)."""
