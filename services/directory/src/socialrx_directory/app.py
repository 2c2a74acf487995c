"""The directory's own wiring: its background jobs and open CORS; the rest is `socialrx_shared.service`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from socialrx_shared.logging import get_logger
from socialrx_shared.runtime import ServiceRuntime
from socialrx_shared.service import run, service_app

from . import api, commands, emails, handlers, oruk_api, store, subscriptions_api, sweeps, unmet_need_api
from .settings import SERVICE, Settings
from .webhooks import DeliveryWorker

__all__ = ["SERVICE", "Settings", "build", "main"]
log = get_logger(__name__)


def _background_jobs(runtime: ServiceRuntime, settings: Settings, clock: sweeps.Clock) -> list[sweeps.Periodic]:
    worker = DeliveryWorker(
        runtime,
        retry_base_s=settings.webhook_retry_base_s,
        retry_cap_s=settings.webhook_retry_cap_s,
        max_attempts=settings.webhook_max_attempts,
        timeout_s=settings.webhook_timeout_s,
        concurrency=settings.webhook_concurrency,
        allow_private_networks=settings.webhook_allow_private_networks,
    )
    jobs = [
        sweeps.Periodic(
            "safeguarding-sweep",
            settings.safeguarding_sweep_interval_s,
            lambda: sweeps.safeguarding_sweep(runtime, clock()),
        ),
        sweeps.Periodic(
            "auto-decline-sweep",
            settings.auto_decline_sweep_interval_s,
            lambda: sweeps.auto_decline_sweep(runtime, clock()),
        ),
        sweeps.Periodic("webhook-deliveries", settings.webhook_poll_interval_s, worker.poll, on_stop=worker.stop),
        sweeps.Periodic(
            "service-updates",
            settings.service_update_interval_s,
            lambda: commands.publish_pending_service_updates(runtime),
        ),
    ]
    if not settings.smtp_url:
        log.info("notification emails are off: SOCIALRX_SMTP_URL is not set")
        return jobs
    sender = emails.EmailSender(
        runtime,
        smtp_url=settings.smtp_url,
        web_base_url=settings.web_base_url,
        sender=settings.smtp_from,
        retry_base_s=settings.email_retry_base_s,
    )
    return [
        *jobs,
        sweeps.Periodic(
            "email-reminders", settings.auto_decline_sweep_interval_s, lambda: emails.reminder_sweep(runtime, clock())
        ),
        sweeps.Periodic("emails", settings.email_poll_interval_s, sender.run_once),
    ]


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
        if (
            scope["type"] != "http"
            or scope["method"] not in ("GET", "HEAD")
            or not (path == "/" or path.startswith(oruk_api.OPEN_PREFIXES))
        ):
            await self.app(scope, receive, send)
            return

        async def with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"access-control-allow-origin"]
                message = {**message, "headers": [*headers, (b"access-control-allow-origin", b"*")]}
            await send(message)

        await self.app(scope, receive, with_header)


def build(settings: Settings | None = None, clock: sweeps.Clock = sweeps.system_clock) -> FastAPI:
    settings = settings or Settings()
    app = service_app(
        SERVICE,
        settings,
        store=store,
        register=[handlers.register],
        routers=[oruk_api.router, api.router, subscriptions_api.router, unmet_need_api.router],
        description="Organisations and services (Open Referral UK), capacity and safeguarding gates, charities' "
        "referral inboxes and webhook subscriptions.",
    )
    runtime = app.state.runtime
    app.state.settings = settings
    app.state.clock = clock
    app.add_middleware(_OpenCors)
    _with_background_jobs(app, _background_jobs(runtime, settings, clock))
    return app


def main() -> None:
    run(build, Settings)


if __name__ == "__main__":
    main()
