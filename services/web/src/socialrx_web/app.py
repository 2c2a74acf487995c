"""Wiring of the web app: settings, session cookie, API clients, pages, error pages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from socialrx_shared.logging import configure_logging, get_logger

from . import admin, charity, finance, insight, link_worker, signin, uploads
from .api import ApiError, Apis
from .core import HERE, NotSignedIn, PageError, is_htmx, render, see_other
from .session import fernet_for, sign_out
from .settings import WebSettings

log = get_logger(__name__)
API_TITLES = {
    401: "Please sign in again",
    403: "You cannot do this",
    404: "Page not found",
    409: "This cannot be done now",
    413: "The file is too large",
    422: "There is a problem",
    502: "Sorry, there is a problem with the service",
}


def build(settings: WebSettings | None = None) -> FastAPI:
    settings = settings or WebSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging("web", settings.log_level)
        app.state.apis = Apis(settings.api_urls(), settings.api_timeout_s)
        try:
            yield
        finally:
            await app.state.apis.close()

    app = FastAPI(title="socialrx web", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.fernet = fernet_for(settings.session_secret.get_secret_value())
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.session_secret.get_secret_value(),
        session_cookie="socialrx_session",
        max_age=12 * 3600,
        same_site="lax",
        https_only=settings.secure_cookies,
    )
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.middleware("http")
    async def _headers(request: Request, call_next):
        response = await call_next(request)
        # Pages hold people's details: not cached, not framed, no referrer to other sites.
        if not request.url.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    @app.exception_handler(NotSignedIn)
    async def _not_signed_in(request: Request, _exc: NotSignedIn) -> Response:
        if is_htmx(request):
            return Response(status_code=204, headers={"HX-Redirect": "/"})
        # Only a session that ran out says so; after signing out (the cookie still holds a CSRF token)
        # a protected page simply leads home.
        return see_other("/?expired=1" if getattr(request.state, "session_expired", False) else "/")

    @app.exception_handler(PageError)
    async def _page_error(request: Request, exc: PageError) -> Response:
        return render(request, "error.html", exc.status, title=exc.title, message=exc.message)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        if exc.status == 401:
            sign_out(request)  # the token is no longer accepted: the session ends with it
            return see_other("/?expired=1")
        status = exc.status if exc.status in API_TITLES else 400
        if status == 502:
            log.warning("api unavailable", api=exc.service)
        return render(
            request,
            "error.html",
            status,
            title=API_TITLES.get(status, "There is a problem"),
            message=exc.message or "The request was refused.",
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return render(
                request,
                "error.html",
                404,
                title="Page not found",
                message="If you typed the web address, check it is correct.",
            )
        return render(request, "error.html", exc.status_code, title="There is a problem", message=str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> Response:
        fields = ", ".join(str(e.get("loc", ["", "?"])[-1]) for e in exc.errors())
        return render(
            request,
            "error.html",
            400,
            title="There is a problem",
            message=f"The address has a value that is not valid: {fields}. Go back and try again.",
        )

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": "web"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> dict[str, str]:
        return {"status": "ready", "service": "web"}

    for module in (signin, link_worker, charity, finance, insight, admin, uploads):
        app.include_router(module.router)
    return app


def main() -> None:
    import uvicorn

    settings = WebSettings()
    uvicorn.run(
        build(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
