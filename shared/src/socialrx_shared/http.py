"""The HTTP app every service starts from: health, readiness, metrics, errors, auth seam."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.middleware.base import BaseHTTPMiddleware

from . import route_errors
from .auth import Authenticator
from .events import json_schemas
from .logging import configure_logging
from .metrics import HTTP_LATENCY_S, HTTP_REQUESTS, observe_consumer_lag
from .runtime import ServiceRuntime
from .settings import ServiceSettings

MAX_BODY_BYTES = 1_000_000


def _validation_detail(exc: RequestValidationError) -> list[dict[str, Any]]:
    # The input is not echoed back: it may hold a person's details, and it would reach proxies' logs.
    return [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", "invalid"), "type": err.get("type", "value_error")}
        for err in exc.errors()
    ]


class _Guard(BaseHTTPMiddleware):
    """Request size limit, and request metrics labelled by route template (not by raw path)."""

    def __init__(self, app: Any, service: str) -> None:
        super().__init__(app)
        self.service = service

    async def dispatch(self, request: Request, call_next: Any) -> Response:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
            return JSONResponse({"detail": f"request body larger than {MAX_BODY_BYTES} bytes"}, status_code=413)
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        HTTP_REQUESTS.labels(self.service, request.method, template, str(response.status_code)).inc()
        HTTP_LATENCY_S.labels(self.service, request.method, template).observe(time.perf_counter() - started)
        return response


def create_app(runtime: ServiceRuntime, routers: Iterable[APIRouter], *, title: str, description: str) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(runtime.name, runtime.settings.log_level)
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(title=title, description=description, version="1.0.0", lifespan=lifespan)
    app.state.runtime = runtime
    app.state.authenticator = Authenticator.from_settings(runtime.settings)
    route_errors.install(app)
    app.add_middleware(_Guard, service=runtime.name)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_detail(exc)}, status_code=422)

    @app.get("/healthz", tags=["operations"], summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": runtime.name}

    @app.get("/readyz", tags=["operations"], summary="Database and broker reachable")
    async def readyz() -> JSONResponse:
        checks = await runtime.readiness()
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks},
                            status_code=200 if ready else 503)

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", include_in_schema=False)
    async def metrics() -> Response:
        await observe_consumer_lag(runtime.name, runtime.consumers())
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/events/schemas", tags=["events"], summary="JSON Schema of every event, by topic")
    async def event_schemas() -> dict[str, Any]:
        return json_schemas()

    for router in routers:
        app.include_router(router)
    return app


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    """Run the app until SIGINT/SIGTERM; shutdown runs the lifespan's graceful stop."""
    import uvicorn

    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_config=None,
                access_log=False, timeout_graceful_shutdown=20)
