"""The wiring every service repeats, written once: its runtime, its event handlers, its HTTP app, `main`.

A service's `app.py` keeps only what is its own (its settings: database variable, port, extras) and calls
`service_app` and `run`. Routes reach the runtime with `runtime_of(request)`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import TypeVar

from fastapi import APIRouter, FastAPI, Request
from sqlalchemy import MetaData, Table

from . import heap
from .http import create_app, serve
from .runtime import ServiceRuntime
from .settings import ServiceSettings

SettingsT = TypeVar("SettingsT", bound=ServiceSettings)


def runtime_of(request: Request) -> ServiceRuntime:
    """The runtime of the service serving `request` (set by `create_app`)."""
    runtime = request.app.state.runtime
    assert isinstance(runtime, ServiceRuntime)
    return runtime


def _table(store: ModuleType, name: str) -> Table:
    table = getattr(store, name, None)
    if not isinstance(table, Table):
        raise TypeError(f"{store.__name__} has no table {name!r}: a service's store defines outbox and inbox")
    return table


def service_app(
    name: str,
    settings: ServiceSettings,
    *,
    store: ModuleType,
    register: Iterable[Callable[[ServiceRuntime], None]],
    routers: Iterable[APIRouter],
    description: str,
) -> FastAPI:
    """The service's HTTP app around a new runtime: its tables from `store` (with `metadata`, `outbox`,
    `inbox`; migrations in the `migrations` folder beside it), each of `register` given the runtime
    (event handlers subscribe there), and `routers` served with the shared edge."""
    metadata = getattr(store, "metadata", None)
    if not isinstance(metadata, MetaData) or store.__file__ is None:
        raise TypeError(f"{store.__name__} is not a service's store module (no metadata)")
    runtime = ServiceRuntime(
        name,
        settings,
        metadata,
        _table(store, "outbox"),
        _table(store, "inbox"),
        Path(store.__file__).parent / "migrations",
    )
    for subscribe in register:
        subscribe(runtime)
    return create_app(runtime, routers, title=f"socialrx {name}", description=description)


def run(build: Callable[[SettingsT], FastAPI], settings_class: type[SettingsT]) -> None:
    """`main` of a service: settings from the environment, then serve until SIGINT/SIGTERM."""
    settings = settings_class()
    app = build(settings)
    heap.settle()  # in the service's own process only (tests build many apps in one)
    serve(app, settings)
