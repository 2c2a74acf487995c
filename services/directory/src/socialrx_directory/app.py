"""Wiring: settings, database, Kafka, handlers, background jobs and HTTP routes of directory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from pydantic import Field, field_validator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from socialrx_shared.http import create_app, serve
from socialrx_shared.logging import get_logger
from socialrx_shared.runtime import ServiceRuntime
from socialrx_shared.settings import ServiceSettings

from . import api, commands, domain, emails, handlers, oruk_api, subscriptions_api, sweeps, unmet_need_api
from .store import inbox, metadata, outbox
from .webhooks import DeliveryWorker

SERVICE = "directory"
log = get_logger(__name__)


class Settings(ServiceSettings):
    database_url: str = Field(
        "postgresql+asyncpg://postgres@127.0.0.1:5432/socialrx_directory",
        validation_alias="DIRECTORY_DATABASE_URL",
    )
    http_port: int = Field(8002, validation_alias="SOCIALRX_HTTP_PORT")
    # Expiry is by the day, so hourly is soon enough; auto-decline is by 14 days, so 10 minutes is.
    safeguarding_sweep_interval_s: float = Field(3600, gt=0, validation_alias="DIRECTORY_SAFEGUARDING_SWEEP_INTERVAL_S")
    auto_decline_sweep_interval_s: float = Field(600, gt=0, validation_alias="DIRECTORY_AUTO_DECLINE_SWEEP_INTERVAL_S")
    webhook_poll_interval_s: float = Field(1.0, gt=0, validation_alias="DIRECTORY_WEBHOOK_POLL_INTERVAL_S")
    # How often the capacity changes of accepts and finished referrals leave as one service.updated each.
    # 0.25 s: a poll costs the idle directory ~1% of a core at 0.1 s (measured), and a quarter second is
    # well inside what a capacity figure may lag by (it travels by event anyway).
    service_update_interval_s: float = Field(0.25, gt=0, validation_alias="DIRECTORY_SERVICE_UPDATE_INTERVAL_S")
    webhook_retry_base_s: float = Field(10.0, gt=0, validation_alias="DIRECTORY_WEBHOOK_RETRY_BASE_S")
    webhook_retry_cap_s: float = Field(3600.0, gt=0, validation_alias="DIRECTORY_WEBHOOK_RETRY_CAP_S")
    webhook_max_attempts: int = Field(12, ge=1, validation_alias="DIRECTORY_WEBHOOK_MAX_ATTEMPTS")
    # Plain-http webhook URLs only for local development and tests.
    webhook_allow_http: bool = Field(False, validation_alias="DIRECTORY_WEBHOOK_ALLOW_HTTP")
    # Webhooks to loopback/private/link-local addresses only for local development and tests: a charity
    # chooses the URL, and the directory must not be its way into the network it runs in.
    webhook_allow_private_networks: bool = Field(False, validation_alias="DIRECTORY_WEBHOOK_ALLOW_PRIVATE_NETWORKS")
    # The whole of one delivery (resolve, connect, send, answer) must fit in this.
    webhook_timeout_s: float = Field(10.0, gt=0, validation_alias="DIRECTORY_WEBHOOK_TIMEOUT_S")
    # Subscriptions delivered at once (each one's own events still go one at a time, in order).
    webhook_concurrency: int = Field(8, ge=1, le=100, validation_alias="DIRECTORY_WEBHOOK_CONCURRENCY")
    # Emails to organisations (a referral arrived; one will be declined in 2 days). None configured: none sent.
    smtp_url: str | None = Field(None, validation_alias="SOCIALRX_SMTP_URL")
    smtp_from: str = Field("socialrx <no-reply@socialrx.invalid>", validation_alias="SOCIALRX_SMTP_FROM")
    web_base_url: str = Field("http://127.0.0.1:8000", validation_alias="SOCIALRX_WEB_BASE_URL")
    email_poll_interval_s: float = Field(5.0, gt=0, validation_alias="DIRECTORY_EMAIL_POLL_INTERVAL_S")
    email_retry_base_s: float = Field(30.0, gt=0, validation_alias="DIRECTORY_EMAIL_RETRY_BASE_S")

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: str | None) -> str | None:
        if value:
            domain.smtp_target(value)  # refuse a malformed URL at start-up, not at the first email
        return value or None


def _background_jobs(runtime: ServiceRuntime, settings: Settings, clock: sweeps.Clock) -> list[sweeps.Periodic]:
    worker = DeliveryWorker(runtime, retry_base_s=settings.webhook_retry_base_s,
                            retry_cap_s=settings.webhook_retry_cap_s, max_attempts=settings.webhook_max_attempts,
                            timeout_s=settings.webhook_timeout_s, concurrency=settings.webhook_concurrency,
                            allow_private_networks=settings.webhook_allow_private_networks)
    jobs = [
        sweeps.Periodic("safeguarding-sweep", settings.safeguarding_sweep_interval_s,
                        lambda: sweeps.safeguarding_sweep(runtime, clock())),
        sweeps.Periodic("auto-decline-sweep", settings.auto_decline_sweep_interval_s,
                        lambda: sweeps.auto_decline_sweep(runtime, clock())),
        sweeps.Periodic("webhook-deliveries", settings.webhook_poll_interval_s, worker.poll, on_stop=worker.stop),
        sweeps.Periodic("service-updates", settings.service_update_interval_s,
                        lambda: commands.publish_pending_service_updates(runtime)),
    ]
    if not settings.smtp_url:
        log.info("notification emails are off: SOCIALRX_SMTP_URL is not set")
        return jobs
    sender = emails.EmailSender(runtime, smtp_url=settings.smtp_url, web_base_url=settings.web_base_url,
                                sender=settings.smtp_from, retry_base_s=settings.email_retry_base_s)
    return [*jobs,
            sweeps.Periodic("email-reminders", settings.auto_decline_sweep_interval_s,
                            lambda: emails.reminder_sweep(runtime, clock())),
            sweeps.Periodic("emails", settings.email_poll_interval_s, sender.run_once)]


def _with_background_jobs(app: FastAPI, jobs: list[sweeps.Periodic]) -> None:
    """Start the jobs after the runtime (migrated database) is up; stop them before it goes down."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with inner(app):
            for job in jobs:
                job.start()
            try:
                yield
            finally:
                for job in jobs:
                    await job.stop()

    app.router.lifespan_context = lifespan


class _OpenCors:
    """Open Referral UK requires `Access-Control-Allow-Origin: *` on its read API (errors included).

    Pure ASGI: `@app.middleware("http")` (BaseHTTPMiddleware) cost every request of the directory a
    task and a streamed copy of its response, the charity's accept included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD") or not (
                path == "/" or path.startswith(oruk_api.OPEN_PREFIXES)):
            await self.app(scope, receive, send)
            return

        async def with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"access-control-allow-origin"]
                message = {**message, "headers": [*headers, (b"access-control-allow-origin", b"*")]}
            await send(message)

        await self.app(scope, receive, with_header)


def _open_cors(app: FastAPI) -> None:
    app.add_middleware(_OpenCors)


def build(settings: Settings | None = None, clock: sweeps.Clock = sweeps.system_clock) -> FastAPI:
    settings = settings or Settings()
    runtime = ServiceRuntime(SERVICE, settings, metadata, outbox, inbox, Path(__file__).parent / "migrations")
    handlers.register(runtime)
    unmet_need_api.register(runtime)
    app = create_app(
        runtime, [oruk_api.router, api.router, subscriptions_api.router, unmet_need_api.router], title="socialrx directory",
        description="Organisations and services (Open Referral UK), capacity and safeguarding gates, charities' "
                    "referral inboxes and webhook subscriptions.",
    )
    app.state.settings = settings
    app.state.clock = clock
    _open_cors(app)
    _with_background_jobs(app, _background_jobs(runtime, settings, clock))
    return app


def main() -> None:
    settings = Settings()
    serve(build(settings), settings)


if __name__ == "__main__":
    main()
