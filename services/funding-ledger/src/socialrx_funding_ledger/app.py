"""Wiring: settings, database, Kafka, handlers and HTTP routes of directory."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from pydantic import Field

from socialrx_shared.http import create_app, serve
from socialrx_shared.runtime import ServiceRuntime
from socialrx_shared.settings import ServiceSettings

from . import api, handlers, insight_api
from .store import inbox, metadata, outbox

SERVICE = "funding-ledger"


class Settings(ServiceSettings):
    database_url: str = Field(
        "postgresql+asyncpg://postgres@127.0.0.1:5432/socialrx_funding_ledger",
        validation_alias="FUNDING_LEDGER_DATABASE_URL",
    )
    http_port: int = Field(8004, validation_alias="SOCIALRX_HTTP_PORT")


def build(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    runtime = ServiceRuntime(SERVICE, settings, metadata, outbox, inbox, Path(__file__).parent / "migrations")
    handlers.register(runtime)
    return create_app(
        runtime, [api.router, insight_api.router], title="socialrx funding-ledger",
        description="Funding agreements, a double-entry ledger of what each PCN owes each organisation, arrears, settlements.",
    )


def main() -> None:
    settings = Settings()
    serve(build(settings), settings)


if __name__ == "__main__":
    main()
