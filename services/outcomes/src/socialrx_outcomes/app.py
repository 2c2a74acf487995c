"""Wiring: settings, database, Kafka, handlers and HTTP routes of outcomes."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from pydantic import Field

from socialrx_shared.http import create_app, serve
from socialrx_shared.runtime import ServiceRuntime
from socialrx_shared.settings import ServiceSettings

from . import api, handlers
from .store import inbox, metadata, outbox

SERVICE = "outcomes"


class Settings(ServiceSettings):
    database_url: str = Field(
        "postgresql+asyncpg://postgres@127.0.0.1:5432/socialrx_outcomes",
        validation_alias="OUTCOMES_DATABASE_URL",
    )
    http_port: int = Field(8003, validation_alias="SOCIALRX_HTTP_PORT")


def build(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    runtime = ServiceRuntime(SERVICE, settings, metadata, outbox, inbox, Path(__file__).parent / "migrations")
    handlers.register(runtime)
    return create_app(
        runtime, [api.router], title="socialrx outcomes",
        description="Outcome records and scored wellbeing measures (ONS4, WEMWBS, SWEMWBS); outcome and inclusion reports.",
    )


def main() -> None:
    settings = Settings()
    serve(build(settings), settings)


if __name__ == "__main__":
    main()
