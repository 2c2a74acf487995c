"""Admin pages: organisations, need codes, and who read which person's contact details."""

from __future__ import annotations

import re

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .api import ApiError
from .core import checked_form, need_role, render, see_other

router = APIRouter(prefix="/admin")
NEED_CODE = re.compile(r"^[a-z0-9-]{1,64}$")


async def _orgs_page(request: Request, errors: dict, values: dict, status: int = 200) -> Response:
    page = await request.app.state.apis.get(None, "directory", "/organizations", per_page=500)
    return render(request, "admin_orgs.html", status, items=page["contents"], errors=errors, values=values)


@router.get("/organisations")
async def organisations(request: Request) -> Response:
    need_role(request, "admin")
    return await _orgs_page(request, {}, {})


@router.post("/organisations")
async def create_organisation(request: Request) -> Response:
    user = need_role(request, "admin")
    form = await checked_form(request)
    values = {k: str(form.get(k) or "").strip() for k in ("name", "charity_number", "email", "website")}
    if not values["name"]:
        return await _orgs_page(request, {"name": "Enter the organisation's name"}, values, 400)
    body = {k: v for k, v in values.items() if v}
    try:
        await request.app.state.apis.json(user, "directory", "POST", "/organizations", json=body)
    except ApiError as exc:
        if exc.status != 422:
            raise
        return await _orgs_page(request, {"form": exc.message}, values, 400)
    return see_other("/admin/organisations?created=1")


async def _needs_page(request: Request, errors: dict, values: dict, status: int = 200) -> Response:
    page = await request.app.state.apis.get(None, "directory", "/taxonomy_terms", per_page=500)
    return render(request, "admin_needs.html", status, items=page["contents"], errors=errors, values=values)


@router.get("/needs")
async def needs(request: Request) -> Response:
    need_role(request, "admin")
    return await _needs_page(request, {}, {})


@router.post("/needs")
async def create_need(request: Request) -> Response:
    user = need_role(request, "admin")
    form = await checked_form(request)
    values = {k: str(form.get(k) or "").strip() for k in ("code", "name", "description")}
    errors = {}
    if not NEED_CODE.match(values["code"]):
        errors["code"] = "Enter a code of lower-case letters, digits and hyphens, like debt-advice"
    if not values["name"]:
        errors["name"] = "Enter the need's name"
    if errors:
        return await _needs_page(request, errors, values, 400)
    try:
        await request.app.state.apis.json(user, "directory", "POST", "/taxonomy_terms", json=values)
    except ApiError as exc:
        if exc.status not in (409, 422):
            raise
        return await _needs_page(request, {"code": exc.message}, values, 400)
    return see_other("/admin/needs?created=1")


@router.get("/audit")
async def audit(request: Request, referral_id: str = "") -> Response:
    user = need_role(request, "admin")
    page = await request.app.state.apis.get(
        user, "referral-intake", "/audit/contact-access", referral_id=referral_id.strip()[:64] or None
    )
    return render(request, "admin_audit.html", items=page["items"], referral_id=referral_id)
