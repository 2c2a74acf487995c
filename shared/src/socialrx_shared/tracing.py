"""W3C trace context: the `traceparent` that travels in each event's Kafka headers."""

from __future__ import annotations

import contextvars
import secrets

current_traceparent: contextvars.ContextVar[str | None] = contextvars.ContextVar("traceparent", default=None)


def new_traceparent() -> str:
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def child_traceparent(parent: str | None) -> str:
    """Same trace id as the cause, new span id: a consumer's events stay in their cause's trace."""
    if parent:
        parts = parent.split("-")
        if len(parts) == 4 and len(parts[1]) == 32:
            return f"00-{parts[1]}-{secrets.token_hex(8)}-01"
    return new_traceparent()


def trace_id(traceparent: str | None) -> str | None:
    if traceparent and len(traceparent.split("-")) == 4:
        return traceparent.split("-")[1]
    return None
