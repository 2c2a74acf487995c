"""outcomes' own settings; the wiring every service shares is `socialrx_shared.service`."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import Field

from socialrx_shared.service import run, service_app
from socialrx_shared.settings import ServiceSettings

from . import api, handlers, store

SERVICE = "outcomes"


class Settings(ServiceSettings):
    database_url: str = Field(
        "postgresql+asyncpg://postgres@127.0.0.1:5432/socialrx_outcomes",
        validation_alias="OUTCOMES_DATABASE_URL",
    )
    http_port: int = Field(8003, validation_alias="SOCIALRX_HTTP_PORT")


def build(settings: Settings | None = None) -> FastAPI:
    return service_app(
        SERVICE,
        settings or Settings(),
        store=store,
        register=[handlers.register],
        routers=[api.router],
        description="Outcome records and scored wellbeing measures (ONS4, WEMWBS, SWEMWBS); outcome and inclusion "
        "reports.",
    )


def main() -> None:
    run(build, Settings)


if __name__ == "__main__":
    main()
