"""The signed-in person, kept in the session cookie sealed with Fernet (encrypted and authenticated).

Starlette's SessionMiddleware signs the cookie (HttpOnly, SameSite=Lax, Secure over https); the
access token inside it is Fernet-encrypted as well, so neither page scripts nor anyone holding the
cookie can read it. A session ends no later than its token: an expired one is dropped on the next
request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import asdict, dataclass

from cryptography.fernet import Fernet, InvalidToken
from starlette.requests import Request

SEALED = "sealed"
CSRF = "csrf"


@dataclass(frozen=True)
class User:
    token: str
    sub: str
    role: str
    expires_at: int
    pcn_id: str | None = None
    organisation_id: str | None = None
    practice_id: str | None = None
    dev: bool = False

    @property
    def scope_label(self) -> str:
        if self.role == "charity":
            return f"organisation {self.organisation_id}"
        if self.pcn_id:
            return f"PCN {self.pcn_id}"
        return "all organisations"


def fernet_for(secret: str) -> Fernet:
    key = hashlib.sha256(b"socialrx-web-session:" + secret.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(key))


def sign_in(request: Request, user: User) -> None:
    request.session.clear()
    request.session[SEALED] = request.app.state.fernet.encrypt(json.dumps(asdict(user)).encode()).decode()
    request.session[CSRF] = secrets.token_urlsafe(32)  # a new CSRF token with every sign-in


def sign_out(request: Request) -> None:
    request.session.clear()


def current_user(request: Request, now_s: float | None = None) -> User | None:
    sealed = request.session.get(SEALED)
    if not sealed:
        return None
    try:
        user = User(**json.loads(request.app.state.fernet.decrypt(sealed.encode())))
    except (InvalidToken, TypeError, ValueError):
        request.session.clear()
        return None
    if user.expires_at <= (now_s if now_s is not None else time.time()):
        request.session.clear()  # the token has expired, so has the session
        request.state.session_expired = True  # "signed out because time ran out", not "never signed in"
        return None
    return user


def csrf_token(request: Request) -> str:
    token = request.session.get(CSRF)
    if not token:
        token = request.session[CSRF] = secrets.token_urlsafe(32)
    return token


def csrf_ok(request: Request, given: object) -> bool:
    expected = request.session.get(CSRF)
    return bool(expected) and isinstance(given, str) and hmac.compare_digest(expected, given)
