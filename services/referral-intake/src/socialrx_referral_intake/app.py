"""referral-intake's own settings; the wiring every service shares is `socialrx_shared.service`."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import Field, SecretStr

from socialrx_shared.service import run, service_app
from socialrx_shared.settings import ServiceSettings

from . import api, handlers, store

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
    return service_app(
        SERVICE,
        settings or Settings(),
        store=store,
        register=[handlers.register],
        routers=[api.router],
        description="Link workers refer people to services; the only place a person's identifiable details live.",
    )


def main() -> None:
    run(build, Settings)


if __name__ == "__main__":
    main()
