"""A pydantic ValidationError raised inside a route is a 422 naming the field, never a 500."""

from __future__ import annotations

from typing import Annotated

import httpx
from fastapi import FastAPI
from pydantic import BaseModel, StringConstraints

from socialrx_shared import route_errors


class Event(BaseModel):
    pcn_id: Annotated[str, StringConstraints(pattern=r"^[A-Z0-9]+$")]


def _app(install: bool) -> FastAPI:
    app = FastAPI()
    if install:
        route_errors.install(app)

    @app.get("/build")
    def build(pcn_id: str) -> dict:
        return Event(pcn_id=pcn_id).model_dump()  # built inside the route, as events are

    return app


async def _get(app: FastAPI, url: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        return await client.get(url)


async def test_validation_error_inside_a_route_is_a_422_without_the_input() -> None:
    answer = await _get(_app(install=True), "/build?pcn_id=secret-lower-case")
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["pcn_id"]
    assert "secret-lower-case" not in answer.text
    assert (await _get(_app(install=True), "/build?pcn_id=U12345")).status_code == 200


async def test_without_the_handler_it_would_be_a_500() -> None:
    assert (await _get(_app(install=False), "/build?pcn_id=lower")).status_code == 500


def _faulty_app() -> FastAPI:
    from sqlalchemy.exc import IntegrityError, OperationalError

    app = FastAPI()
    route_errors.install(app)

    @app.get("/database-away")
    def away() -> dict:
        # What SQLAlchemy raises while PostgreSQL restarts (the connection refused or dropped).
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))

    @app.get("/refused-connection")
    def refused() -> dict:
        raise ConnectionRefusedError("connect call failed")

    @app.get("/our-bug")
    def bug() -> dict:
        raise IntegrityError("INSERT", {}, Exception("duplicate key value violates unique constraint"))

    return app


async def test_a_database_away_for_a_moment_is_a_503_with_retry_after_not_a_500() -> None:
    app = _faulty_app()
    for url in ("/database-away", "/refused-connection"):
        answer = await _get(app, url)
        assert answer.status_code == 503, (url, answer.text)
        assert answer.headers["retry-after"] == str(route_errors.RETRY_AFTER_S)
        assert "try again" in answer.json()["detail"]
    # A fault that is not transient stays the server error it is: no retry would mend it.
    assert (await _get(app, "/our-bug")).status_code == 500


async def test_typed_refusals_map_to_their_status_once_in_the_shared_app() -> None:
    from socialrx_shared.errors import Conflict, Forbidden, Invalid, NotFound, TooLarge

    app = FastAPI()
    route_errors.install(app)
    kinds = {
        "invalid": Invalid,
        "not-found": NotFound,
        "conflict": Conflict,
        "forbidden": Forbidden,
        "too-large": TooLarge,
    }

    @app.get("/refuse/{kind}")
    def refuse(kind: str) -> dict:
        raise kinds[kind](f"refused as {kind}: do something else")

    expected = {"invalid": 422, "not-found": 404, "conflict": 409, "forbidden": 403, "too-large": 413}
    for kind, status in expected.items():
        answer = await _get(app, f"/refuse/{kind}")
        assert answer.status_code == status, kind
        assert answer.json() == {"detail": f"refused as {kind}: do something else"}


async def test_a_refusal_with_context_says_it_beside_the_message() -> None:
    """A program can act on a refusal too: the id of the record a request clashes with, say."""
    from socialrx_shared.errors import Conflict

    app = FastAPI()
    route_errors.install(app)

    @app.get("/duplicate")
    def duplicate() -> dict:
        raise Conflict("already there; update it instead", existing_id="abc")

    answer = await _get(app, "/duplicate")
    assert answer.status_code == 409
    assert answer.json() == {"detail": {"message": "already there; update it instead", "existing_id": "abc"}}
