"""Authentication: `Authorization: Bearer <JWT>`, HS256, key from SOCIALRX_JWT_SECRET.

Every non-public route depends on `Authenticator` (through `require`), so one place decides who a
caller is. Refusals say what is wrong with the token, never what the token or secret was.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import jwt
from fastapi import Depends, HTTPException, Request, status

Role = Literal["link_worker", "charity", "finance", "admin"]
ROLES: tuple[str, ...] = ("link_worker", "charity", "finance", "admin")
# Which scope claim each role must carry.
SCOPE_CLAIM = {"link_worker": "pcn_id", "finance": "pcn_id", "charity": "organisation_id"}


@dataclass(frozen=True)
class Principal:
    sub: str
    role: str
    pcn_id: str | None = None
    organisation_id: str | None = None
    practice_id: str | None = None  # optional link_worker claim: the GP practice they refer from


def _unauthorised(message: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=message, headers={"WWW-Authenticate": "Bearer"})


def decode_token(token: str, secret: str) -> Principal:
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["exp", "sub", "role"]})
    except jwt.ExpiredSignatureError:
        raise _unauthorised("token expired") from None
    except jwt.MissingRequiredClaimError as exc:
        raise _unauthorised(f"token lacks the {exc.claim!r} claim") from None
    except jwt.InvalidTokenError:
        raise _unauthorised("invalid token: not an HS256 token signed with this platform's key") from None
    role = claims.get("role")
    if role not in ROLES:
        raise _unauthorised(f"token role must be one of {', '.join(ROLES)}")
    scope_claim = SCOPE_CLAIM.get(role)
    if scope_claim and not isinstance(claims.get(scope_claim), str):
        raise _unauthorised(f"a {role} token needs the {scope_claim!r} claim")
    return Principal(
        sub=str(claims["sub"]), role=role, pcn_id=claims.get("pcn_id"), organisation_id=claims.get("organisation_id"),
        practice_id=claims.get("practice_id") if isinstance(claims.get("practice_id"), str) else None,
    )


def mint_token(secret: str, *, sub: str, role: str, pcn_id: str | None = None,
               organisation_id: str | None = None, practice_id: str | None = None, ttl_s: int = 8 * 3600) -> str:
    claims: dict[str, object] = {"sub": sub, "role": role, "exp": int(time.time()) + ttl_s, "iat": int(time.time())}
    if pcn_id:
        claims["pcn_id"] = pcn_id
    if organisation_id:
        claims["organisation_id"] = organisation_id
    if practice_id:
        claims["practice_id"] = practice_id
    return jwt.encode(claims, secret, algorithm="HS256")


class Authenticator:
    def __init__(self, secret: str) -> None:
        self._secret = secret

    def __call__(self, request: Request) -> Principal:
        header = request.headers.get("authorization")
        if not header:
            raise _unauthorised("missing Authorization: Bearer <token> header")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorised("Authorization header must be 'Bearer <token>'")
        return decode_token(token.strip(), self._secret)


def authenticate(request: Request) -> Principal:
    """The one authentication dependency: every protected route goes through it."""
    authenticator: Authenticator = request.app.state.authenticator
    return authenticator(request)


def require(*roles: str):
    """Dependency: an authenticated caller in one of `roles` (403 otherwise)."""

    def dependency(principal: Principal = Depends(authenticate)) -> Principal:
        if principal.role not in roles:
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"this action needs the role {' or '.join(roles)}")
        return principal

    return dependency


def forbidden(message: str = "not permitted for your organisation or PCN") -> HTTPException:
    return HTTPException(status.HTTP_403_FORBIDDEN, detail=message)
