"""The one app factory: a service's app is its store's tables, its handlers and its routers."""

from __future__ import annotations

import types

import pytest
from fastapi import APIRouter, Request
from fastapi.testclient import TestClient

from socialrx_shared.db import new_metadata, reliability_tables
from socialrx_shared.runtime import ServiceRuntime
from socialrx_shared.service import runtime_of, service_app
from socialrx_shared.settings import ServiceSettings


def _store(with_tables: bool = True) -> types.ModuleType:
    store = types.ModuleType("example_store")
    store.__file__ = "/nowhere/example/store.py"
    store.metadata = new_metadata()  # type: ignore[attr-defined]
    if with_tables:
        store.outbox, store.inbox = reliability_tables(store.metadata)  # type: ignore[attr-defined]
    return store


def test_the_routes_see_the_runtime_the_handlers_were_given() -> None:
    given: list[ServiceRuntime] = []
    router = APIRouter()

    @router.get("/runtime")
    async def runtime(request: Request) -> dict[str, bool]:
        return {"same": runtime_of(request) is given[0]}

    app = service_app(
        "example",
        ServiceSettings(SOCIALRX_DEV_MODE=True),
        store=_store(),
        register=[given.append],
        routers=[router],
        description="an example",
    )
    assert app.title == "socialrx example"
    assert [rt.name for rt in given] == ["example"]
    assert str(given[0].migrations_dir) == "/nowhere/example/migrations"
    # Without `with`: the lifespan (migrations, Kafka) does not run; the route needs neither.
    assert TestClient(app).get("/runtime").json() == {"same": True}


def test_a_store_without_outbox_and_inbox_is_refused_by_name() -> None:
    with pytest.raises(TypeError, match="no table 'outbox'"):
        service_app(
            "example",
            ServiceSettings(SOCIALRX_DEV_MODE=True),
            store=_store(with_tables=False),
            register=[],
            routers=[],
            description="",
        )
