"""What every page shares: templates, the signed-in person, CSRF checks, error pages."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import ChainableUndefined, ChoiceLoader, Environment, FileSystemLoader, PackageLoader

from .chart import pounds
from .session import User, csrf_ok, csrf_token, current_user

HERE = Path(__file__).parent
ROLE_NAMES = {
    "link_worker": "Link worker",
    "charity": "Charity",
    "finance": "Finance officer",
    "admin": "Administrator",
}
ROLE_PLURALS = {
    "link_worker": "link workers",
    "charity": "charities",
    "finance": "finance officers",
    "admin": "administrators",
}


def _date(value: Any) -> str:
    if not value:
        return ""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00")) if "T" in value else date.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime):
        return value.strftime("%-d %b %Y %H:%M")
    return value.strftime("%-d %b %Y")


def _label(value: Any) -> str:
    return str(value or "").replace("_", " ").capitalize()


env = Environment(
    loader=ChoiceLoader([FileSystemLoader(HERE / "templates"), PackageLoader("nhsuk_frontend_jinja")]),
    undefined=ChainableUndefined,
    autoescape=True,
)


def _pounds(value: Any) -> str:
    # A missing figure (a malformed remittance line has no amount) shows as nothing, not £0.00.
    return pounds(value) if isinstance(value, int) and not isinstance(value, bool) else ""


env.filters.update(pounds=_pounds, day=_date, label=_label)
env.globals.update(ROLE_NAMES=ROLE_NAMES)
templates = Jinja2Templates(env=env)


class PageError(Exception):
    """A refusal shown as a page: 403, 404, 400, 409, 502 ..."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(title)
        self.status, self.title, self.message = status, title, message


class NotSignedIn(Exception):
    pass


def user_of(request: Request) -> User:
    user = current_user(request)
    if user is None:
        raise NotSignedIn()
    return user


def need_role(request: Request, *roles: str) -> User:
    user = user_of(request)
    if user.role not in roles:
        raise PageError(
            403,
            "You cannot use this page",
            f"This page is for {' or '.join(ROLE_PLURALS[r] for r in roles)}. "
            f"You are signed in as a {ROLE_NAMES[user.role].lower()}.",
        )
    return user


async def checked_form(request: Request) -> Any:
    """The posted form, once its CSRF token is checked (a page that changes anything needs it)."""
    # A remittance (up to 5 MB) comes back as a form field when it is posted after its check.
    form = await request.form(max_part_size=6 * 1024 * 1024)
    if not csrf_ok(request, form.get("csrf_token")):
        raise PageError(
            403,
            "This form has expired",
            "The form was not sent from this site, or your session changed. Go back, reload the page and try again.",
        )
    return form


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    user = current_user(request)
    settings = request.app.state.settings
    response = templates.TemplateResponse(
        request,
        template,
        {
            "user": user,
            "csrf_token": csrf_token(request),
            "dev_mode": settings.dev_signin_allowed,
            "oidc": bool(settings.oidc_issuer),
            "path": request.url.path,
            **context,
        },
        status_code=status_code,
    )
    if status_code >= 400 and is_htmx(request):
        # An in-place action that was refused shows the refusal as the page's content, not nothing.
        response.headers.update(
            {"HX-Retarget": "#maincontent", "HX-Reswap": "outerHTML", "HX-Reselect": "#maincontent"}
        )
    return response


def is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def see_other(url: str) -> Response:
    return RedirectResponse(url, status_code=303)
