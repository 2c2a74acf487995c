"""Wiring: settings, database, Kafka, handlers and HTTP routes of referral-intake."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from pydantic import Field, SecretStr

from socialrx_shared.http import create_app, serve
from socialrx_shared.runtime import ServiceRuntime
from socialrx_shared.settings import ServiceSettings

from . import api, handlers
from .store import inbox, metadata, outbox

SERVICE = "referral-intake"


class Settings(ServiceSettings):
    database_url: str = Field(
        "postgresql+asyncpg://postgres@127.0.0.1:5432/socialrx_referral_intake",
        validation_alias="REFERRAL_INTAKE_DATABASE_URL",
    )
    http_port: int = Field(8001, validation_alias="SOCIALRX_HTTP_PORT")
    # The key of the keyed hash that makes person_ref; it never leaves this service's configuration.
    person_ref_key: SecretStr = Field(validation_alias="SOCIALRX_PERSON_REF_KEY", min_length=16)


def build(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    runtime = ServiceRuntime(SERVICE, settings, metadata, outbox, inbox, Path(__file__).parent / "migrations")
    handlers.register(runtime)
    return create_app(
        runtime, [api.router], title="socialrx referral-intake",
        description="Link workers refer people to services; the only place a person's identifiable details live.",
    )


def main() -> None:
    settings = Settings()
    serve(build(settings), settings)


if __name__ == "__main__":
    main()
