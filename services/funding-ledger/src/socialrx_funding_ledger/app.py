"""funding-ledger's own settings; the wiring every service shares is `socialrx_shared.service`."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import Field

from socialrx_shared.service import run, service_app
from socialrx_shared.settings import ServiceSettings

from . import api, handlers, insight_api, store

SERVICE = "funding-ledger"


class Settings(ServiceSettings):
    database_url: str = Field(
        "postgresql+asyncpg://postgres@127.0.0.1:5432/socialrx_funding_ledger",
        validation_alias="FUNDING_LEDGER_DATABASE_URL",
    )
    http_port: int = Field(8004, validation_alias="SOCIALRX_HTTP_PORT")


def build(settings: Settings | None = None) -> FastAPI:
    return service_app(
        SERVICE,
        settings or Settings(),
        store=store,
        register=[handlers.register],
        routers=[api.router, insight_api.router],
        description="Funding agreements, a double-entry ledger of what each PCN owes each organisation, arrears, "
        "settlements.",
    )


def main() -> None:
    run(build, Settings)


if __name__ == "__main__":
    main()
