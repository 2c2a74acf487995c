"""A pydantic `ValidationError` raised *inside* a route becomes a 422 that names the field, not a 500.

FastAPI turns invalid request bodies into `RequestValidationError` itself; but a model built inside a
handler (an event from a token's claims, a row read back) raises a plain `ValidationError`, which
would otherwise surface as "500 Internal Server Error". The cause is always something the caller
sent (a body, a header, a token's claim), so the caller is told which value was refused. As with
request validation, the input is never echoed back: it may hold a person's details.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from .consumer import is_transient
from .errors import Conflict, Forbidden, Invalid, NotFound, Refused, TooLarge

# How long a client should wait before trying again when the database is away for a moment.
RETRY_AFTER_S = 2


def validation_detail(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {
            "loc": [str(part) for part in err.get("loc", ())],
            "msg": err.get("msg", "invalid"),
            "type": err.get("type", "value_error"),
        }
        for err in exc.errors(include_input=False, include_url=False)
    ]


async def _refuse(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ValidationError)
    return JSONResponse({"detail": validation_detail(exc)}, status_code=422)


async def _unavailable(_request: Request, exc: Exception) -> JSONResponse:
    """The database restarting, a failover, a full pool: the request did nothing durable (its
    transaction did not commit), so "try again shortly" is the truth, and a 503 says it where a 500
    would say "our bug". `make chaos` saw 500s here while PostgreSQL restarted."""
    if not is_transient(exc):
        raise exc  # a real fault: the server error it is
    return JSONResponse(
        {"detail": "the service's database is unavailable for a moment: try again shortly"},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


# The one place a typed refusal becomes an HTTP status.
REFUSAL_STATUS: dict[type[Refused], int] = {Invalid: 422, NotFound: 404, Conflict: 409, Forbidden: 403, TooLarge: 413}


def status_of(refusal: Refused) -> int:
    for kind in type(refusal).__mro__:
        if kind in REFUSAL_STATUS:
            return REFUSAL_STATUS[kind]
    return 400


async def _refused(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Refused)
    return JSONResponse({"detail": exc.body()}, status_code=status_of(exc))


def install(app: FastAPI) -> None:
    app.add_exception_handler(ValidationError, _refuse)
    app.add_exception_handler(Refused, _refused)
    for fault in (DBAPIError, PoolTimeoutError, ConnectionError):
        app.add_exception_handler(fault, _unavailable)
