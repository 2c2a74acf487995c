"""The one app factory: a service's app is its store's tables, its handlers and its routers."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest
from fastapi import APIRouter, Request
from fastapi.testclient import TestClient

from socialrx_shared import heap
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


def test_a_service_process_settles_its_heap_before_serving() -> None:
    # In a process of its own: freezing the heap of the test run would keep its garbage for good.
    script = """
import gc
from socialrx_shared import service
from socialrx_shared.settings import ServiceSettings
seen = {}
def serve(app, settings):
    seen.update(threshold=gc.get_threshold(), frozen=gc.get_freeze_count(), app=app)
service.serve = serve
service.run(lambda settings: "the app", lambda: ServiceSettings(SOCIALRX_DEV_MODE=True))
print(seen["threshold"][0], seen["frozen"] > 1000, seen["app"])
"""
    before = subprocess.run(
        [sys.executable, "-c", "import gc; print(gc.get_threshold()[0])"], capture_output=True, text=True
    )
    answer = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert answer.returncode == 0, answer.stderr
    assert before.stdout.split() == ["700"]  # CPython's default, which the service changes
    assert answer.stdout.split() == [str(heap.YOUNG_COLLECTION_EVERY), "True", "the", "app"]
