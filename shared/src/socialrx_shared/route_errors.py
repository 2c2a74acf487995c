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


def validation_detail(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": [str(part) for part in err.get("loc", ())], "msg": err.get("msg", "invalid"),
         "type": err.get("type", "value_error")}
        for err in exc.errors(include_input=False, include_url=False)
    ]


async def _refuse(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ValidationError)
    return JSONResponse({"detail": validation_detail(exc)}, status_code=422)


def install(app: FastAPI) -> None:
    app.add_exception_handler(ValidationError, _refuse)
