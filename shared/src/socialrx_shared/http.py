"""The HTTP app every service starts from: health, readiness, metrics, errors, auth seam.

The shared edge every request passes: authentication before the body is read, a streamed body
limit, no NUL character into PostgreSQL, bounded paging, safe download names, and an OpenAPI
document that says what really happens (bearer security, the error responses), browsable offline.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

import swagger_ui_bundle
from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import route_errors
from .auth import Authenticator, authenticate
from .events import json_schemas
from .logging import configure_logging
from .metrics import HTTP_LATENCY_S, HTTP_REQUESTS, observe_consumer_lag
from .runtime import ServiceRuntime
from .settings import ServiceSettings

MAX_BODY_BYTES = 1_000_000
# A route that takes more (an upload) says so in its OpenAPI operation: `openapi_extra=body_limit(n)`.
BODY_LIMIT_KEY = "x-max-body-bytes"


def body_limit(max_bytes: int) -> dict[str, int]:
    """`openapi_extra` of a route whose requests may be larger than MAX_BODY_BYTES (documented too)."""
    return {BODY_LIMIT_KEY: max_bytes}


def _validation_detail(exc: RequestValidationError) -> list[dict[str, Any]]:
    # The input is not echoed back: it may hold a person's details, and it would reach proxies' logs.
    return [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", "invalid"), "type": err.get("type", "value_error")}
        for err in exc.errors()
    ]


def is_protected(route: APIRoute) -> bool:
    """True when the route depends (at any depth) on the one authentication dependency. Both the
    auth-before-body check and the OpenAPI security declaration are derived from this."""
    pending = [route.dependant]
    while pending:
        dependant = pending.pop()
        if dependant.call is authenticate:
            return True
        pending.extend(dependant.dependencies)
    return False


def nul_error(loc: list[Any]) -> RequestValidationError:
    """The 422 for a string holding U+0000, naming where (raise it from a route for input the edge
    cannot see into, e.g. an uploaded file). PostgreSQL cannot store U+0000 in text."""
    return RequestValidationError(
        [{"loc": loc, "msg": "must not contain the NUL character (U+0000)", "type": "string_nul"}]
    )


def _nul_in(value: Any, loc: list[Any]) -> list[Any] | None:
    """Where in a decoded JSON document a string (or a key) holds U+0000, if anywhere."""
    if isinstance(value, str):
        return loc if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            found = ([*loc, key]) if "\x00" in key else _nul_in(item, [*loc, key])
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _nul_in(item, [*loc, index])
            if found:
                return found
    return None


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


@dataclass(frozen=True)
class _Policy:
    """What the edge enforces for one API route, found by matching the path before routing."""

    template: str
    path_regex: re.Pattern[str]
    methods: frozenset[str]
    max_body_bytes: int
    protected: bool


def _policies(app: FastAPI) -> list[_Policy]:
    found = []
    for context in iter_route_contexts(app.routes):  # included routers' routes too
        route = context.original_route
        if isinstance(route, APIRoute):
            path_regex, template, _ = compile_path(context.path or route.path)
            found.append(
                _Policy(
                    template,
                    path_regex,
                    frozenset(route.methods or ()),
                    (route.openapi_extra or {}).get(BODY_LIMIT_KEY, MAX_BODY_BYTES),
                    is_protected(route),
                )
            )
    return found


def _refusal(status_code: int, detail: Any, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status_code, headers=headers)


class _Edge:
    """Pure ASGI, outermost of the app's own layers (no BaseHTTPMiddleware task per request).

    For an API route, before FastAPI reads or parses anything, in order: a protected route
    authenticates the caller (401 whatever the body's size or shape); path and query strings
    holding NUL are refused (422 naming the field: PostgreSQL cannot store U+0000); the body is
    limited as a stream (Content-Length when given, and the bytes actually received, so a chunked
    body cannot get past): 413 once over the route's limit; a JSON body with a NUL string is
    refused. Then request metrics, labelled by route template."""

    def __init__(self, app: ASGIApp, service: str, api: FastAPI) -> None:
        self.app = app
        self.service = service
        self.api = api
        self._table: list[_Policy] | None = None

    def _policy(self, scope: Scope) -> tuple[_Policy, dict[str, str]] | None:
        if self._table is None:  # built on first use: every router is included by then
            self._table = _policies(self.api)
        for policy in self._table:
            if scope["method"] in policy.methods:
                match = policy.path_regex.match(scope["path"])
                if match:
                    return policy, match.groupdict()
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        found = None
        try:
            found = self._policy(scope)
            if found is None:
                await self.app(scope, receive, sending)
                return
            try:
                receive = await self._checked(scope, receive, *found)
            except HTTPException as exc:
                await _refusal(exc.status_code, exc.detail, exc.headers)(scope, receive, sending)
                return
            except RequestValidationError as exc:
                await _refusal(422, _validation_detail(exc))(scope, receive, sending)
                return
            await self.app(scope, receive, sending)
        finally:
            # A request the edge refused never reached the router: labelled by the route it was for.
            template = getattr(scope.get("route"), "path", None) or (found[0].template if found else "unmatched")
            HTTP_REQUESTS.labels(self.service, scope["method"], template, str(status)).inc()
            HTTP_LATENCY_S.labels(self.service, scope["method"], template).observe(time.perf_counter() - started)

    async def _checked(self, scope: Scope, receive: Receive, policy: _Policy, path_params: dict[str, str]) -> Receive:
        request = Request(scope)
        request.scope.setdefault("app", self.api)
        if policy.protected:
            await authenticate(request)  # raises the 401 itself; the route reuses the principal
        for name, value in path_params.items():
            if "\x00" in value:
                raise nul_error(["path", name])
        for name, value in request.query_params.multi_items():
            if "\x00" in name or "\x00" in value:
                raise nul_error(["query", name.replace("\x00", "")])
        limit = policy.max_body_bytes
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limit:
            raise _too_large(limit)
        if _is_json(request.headers.get("content-type", "")):
            return await _checked_json(_counted(receive, limit))
        return _counted(receive, limit)


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, detail=f"request body larger than {limit} bytes")


def _counted(receive: Receive, limit: int) -> Receive:
    received = 0

    async def counting() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                # Raised inside FastAPI's body read, which lets an HTTPException through: a 413.
                raise _too_large(limit)
        return message

    return counting


async def _checked_json(receive: Receive) -> Receive:
    """Read the (limited) JSON body, refuse a NUL in any string, then hand the same bytes on."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    if b"\\u0000" in body:  # only then is the document decoded here (FastAPI decodes it anyway)
        try:
            found = _nul_in(json.loads(body), ["body"])
        except ValueError:
            found = None  # not JSON: FastAPI's own refusal names the problem
        if found:
            raise nul_error(found)
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def content_disposition(filename: str, disposition: str = "attachment") -> str:
    """An RFC 6266 header any client can read: an ASCII `filename` fallback and the exact name as
    RFC 5987 `filename*` (a header is Latin-1 on the wire; a raw non-ASCII name broke the response)."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\;' else "_" for c in filename) or "download"
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


# Paging shared by every list route: a bounded page keeps OFFSET (page - 1) * per_page inside int64.
MAX_PAGE = 100_000
MAX_PER_PAGE = 500
Page = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"Page number, from 1 (at most {MAX_PAGE})")]


def per_page_up_to(most: int = MAX_PER_PAGE) -> Any:
    return Annotated[int, Query(ge=1, le=most, description=f"Results per page (at most {most})")]


PerPage = per_page_up_to(MAX_PER_PAGE)


def create_app(runtime: ServiceRuntime, routers: Iterable[APIRouter], *, title: str, description: str) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(runtime.name, runtime.settings.log_level)
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    # /docs is served below from the packaged Swagger UI (the default loads it from a CDN).
    app = FastAPI(
        title=title, description=description, version="1.0.0", lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.runtime = runtime
    app.state.authenticator = Authenticator.from_settings(runtime.settings)
    route_errors.install(app)
    app.add_middleware(_Edge, service=runtime.name, api=app)

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
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks}, status_code=200 if ready else 503
        )

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", include_in_schema=False)
    async def metrics() -> Response:
        await observe_consumer_lag(runtime.name, runtime.consumers())
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/events/schemas", tags=["events"], summary="JSON Schema of every event, by topic")
    async def event_schemas() -> dict[str, Any]:
        return json_schemas()

    app.mount(DOCS_ASSETS, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + (app.openapi_url or "/openapi.json"),
            title=f"{title} API",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon-32x32.png",
        )

    for router in routers:
        app.include_router(router)
    app.openapi = lambda: _document(app)  # type: ignore[method-assign]
    return app


DOCS_ASSETS = "/docs/assets"


BEARER = "bearerAuth"
ERROR_SCHEMAS: dict[str, Any] = {
    "ValidationItem": {
        "type": "object",
        "required": ["loc", "msg", "type"],
        "properties": {
            "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
            "msg": {"type": "string"},
            "type": {"type": "string"},
        },
    },
    "Error": {
        "type": "object",
        "required": ["detail"],
        "description": "A refusal: `detail` says what was wrong, as a sentence, or for invalid input one item per "
        "field, or (a feed import) a report of what was refused with its `message`.",
        "properties": {
            "detail": {
                "anyOf": [
                    {"type": "string"},
                    {"type": "array", "items": {"$ref": "#/components/schemas/ValidationItem"}},
                    {"type": "object", "required": ["message"], "properties": {"message": {"type": "string"}}},
                ]
            }
        },
    },
}
ERROR_DESCRIPTIONS = {
    "401": "No token, or a token that is not valid (expired, wrong key, missing claims)",
    "403": "The token's role or scope does not allow this",
    "404": "Not found (or not visible to you)",
    "409": "Conflicts with the current state",
    "413": "Request body too large",
    "422": "Invalid input: each item names the field",
}


def _document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, made true: bearer security on the protected operations (derived from
    their dependency), and the refusals they really send, `detail` a string or a list of items."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})[BEARER] = {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "HS256 JWT with `sub`, `exp`, `role` and the role's scope claim (`socialrx token ...`)",
    }
    components.setdefault("schemas", {}).update(ERROR_SCHEMAS)
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        protected = is_protected(route)
        path = context.path_format or route.path_format
        for method in route.methods or ():
            operation = schema["paths"].get(path, {}).get(method.lower())
            if operation is None:
                continue
            codes = {code for code in ("422",) if code in operation.get("responses", {})}
            if protected:
                operation["security"] = [{BEARER: []}]
                codes |= {"401", "403"}
            if "{" in path:
                codes |= {"404", "422"}
            if method in ("POST", "PUT", "PATCH", "DELETE"):
                codes |= {"409"}
            if route.body_field is not None:
                codes |= {"413", "422"}
            responses = operation.setdefault("responses", {})
            for code in sorted(codes):
                answer = responses.setdefault(code, {"description": ERROR_DESCRIPTIONS[code]})
                answer["content"] = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    app.openapi_schema = schema
    return schema


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    """Run the app until SIGINT/SIGTERM; shutdown runs the lifespan's graceful stop."""
    import uvicorn

    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=20,
    )
