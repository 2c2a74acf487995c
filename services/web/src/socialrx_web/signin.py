"""Signing in and out: the development sign-in (local only) and OpenID Connect (production)."""

from __future__ import annotations

import re
import time
import uuid

import jwt
from fastapi import APIRouter, Request
from fastapi.responses import Response

from socialrx_shared.auth import ROLES, SCOPE_CLAIM, mint_token

from .core import PageError, checked_form, render, see_other
from .session import User, current_user, sign_in, sign_out

router = APIRouter()
HOME = {"link_worker": "/referrals", "charity": "/inbox", "finance": "/arrears", "admin": "/admin/organisations"}
ODS = re.compile(r"^[A-Z0-9]{3,12}$")
DEV_TOKEN_TTL_S = 8 * 3600


@router.get("/")
async def home(request: Request, expired: str | None = None) -> Response:
    user = current_user(request)
    if user is not None:
        return see_other(HOME[user.role])
    return render(request, "home.html", expired=bool(expired))


@router.post("/sign-out")
async def sign_out_page(request: Request) -> Response:
    await checked_form(request)
    sign_out(request)
    return see_other("/")


# --- development sign-in --------------------------------------------------------------------


def _dev_allowed(request: Request) -> None:
    if not request.app.state.settings.dev_signin_allowed:
        raise PageError(
            404,
            "Page not found",
            "The development sign-in is switched off here. Sign in with your organisation's account instead.",
        )


@router.get("/dev/sign-in")
async def dev_sign_in_form(request: Request) -> Response:
    _dev_allowed(request)
    return render(
        request,
        "dev_sign_in.html",
        values={"role": "link_worker", "pcn_id": "U12345", "practice_id": "B82005"},
        errors={},
    )


@router.post("/dev/sign-in")
async def dev_sign_in(request: Request) -> Response:
    _dev_allowed(request)
    form = await checked_form(request)
    values = {k: str(form.get(k) or "").strip().upper() for k in ("pcn_id", "organisation_id", "practice_id")}
    values["organisation_id"] = str(form.get("organisation_id") or "").strip()  # ids keep their case
    values["role"] = role = str(form.get("role") or "")
    errors: dict[str, str] = {}
    if role not in ROLES:
        errors["role"] = "Select a role"
    needed = SCOPE_CLAIM.get(role)
    if needed == "pcn_id" and not ODS.match(values["pcn_id"]):
        errors["pcn_id"] = "Enter the PCN's ODS code, like U12345"
    if needed == "organisation_id" and not values["organisation_id"]:
        errors["organisation_id"] = "Enter your organisation's id (an administrator can list them)"
    if values["practice_id"] and not ODS.match(values["practice_id"]):
        errors["practice_id"] = "Enter the GP practice's ODS code, like B82005, or leave it empty"
    if errors:
        return render(request, "dev_sign_in.html", 400, values=values, errors=errors)
    claims = {
        "pcn_id": values["pcn_id"] if role in ("link_worker", "finance") else None,
        "organisation_id": values["organisation_id"] if role == "charity" else None,
        "practice_id": values["practice_id"] if role == "link_worker" and values["practice_id"] else None,
    }
    sub = f"dev-{role}-{uuid.uuid4().hex[:8]}"
    secret = request.app.state.settings.jwt_secret.get_secret_value()
    token = mint_token(secret, sub=sub, role=role, ttl_s=DEV_TOKEN_TTL_S, **claims)
    sign_in(
        request,
        User(token=token, sub=sub, role=role, expires_at=int(time.time()) + DEV_TOKEN_TTL_S, dev=True, **claims),
    )
    return see_other(HOME[role])


# --- OpenID Connect ---------------------------------------------------------------------------


def _oauth(request: Request):
    settings = request.app.state.settings
    if not settings.oidc_issuer:
        raise PageError(404, "Page not found", "Single sign-on is not configured here.")
    client = getattr(request.app.state, "oidc", None)
    if client is None:
        from authlib.integrations.starlette_client import OAuth

        oauth = OAuth()
        client = oauth.register(
            "idp",
            client_id=settings.oidc_client_id,
            client_secret=settings.oidc_client_secret.get_secret_value(),
            server_metadata_url=settings.oidc_issuer.rstrip("/") + "/.well-known/openid-configuration",
            client_kwargs={"scope": settings.oidc_scope, "code_challenge_method": "S256"},
        )
        request.app.state.oidc = client
    return client


@router.get("/sign-in")
async def oidc_sign_in(request: Request) -> Response:
    client = _oauth(request)
    return await client.authorize_redirect(request, str(request.url_for("oidc_callback")))


@router.get("/auth/callback", name="oidc_callback")
async def oidc_callback(request: Request) -> Response:
    client = _oauth(request)
    from authlib.integrations.starlette_client import OAuthError

    try:
        token = await client.authorize_access_token(request)
    except OAuthError as exc:
        raise PageError(400, "Sign-in did not finish", f"The sign-in service said: {exc.error}. Try again.") from None
    access = token["access_token"]
    # Read (not verified here: it came straight from the issuer's token endpoint over TLS); the
    # services verify every call against the issuer's keys.
    claims = jwt.decode(access, options={"verify_signature": False})
    role = claims.get("role")
    if role not in ROLES:
        raise PageError(
            403,
            "Your account has no socialrx role",
            "Ask your administrator to give your account a role: link_worker, charity, finance or admin.",
        )
    expires_at = int(claims.get("exp") or token.get("expires_at") or time.time() + 300)
    sign_in(
        request,
        User(
            token=access,
            sub=str(claims.get("sub")),
            role=role,
            expires_at=expires_at,
            pcn_id=claims.get("pcn_id"),
            organisation_id=claims.get("organisation_id"),
            practice_id=claims.get("practice_id"),
        ),
    )
    return see_other(HOME[role])
