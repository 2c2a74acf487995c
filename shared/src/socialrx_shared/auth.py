"""Authentication: `Authorization: Bearer <JWT>`.

Two kinds of token are accepted:
- HS256, signed with SOCIALRX_JWT_SECRET (the platform's own tokens: `socialrx token`, integrations);
- RS256/ES256 access tokens of an OpenID provider (SOCIALRX_OIDC_ISSUER), verified with the keys it
  publishes (JWKS), fetched lazily, cached, refetched for an unknown key id at most once per interval.

The header's `alg` only chooses which *key* is tried; each path accepts only its own algorithms, so a
token cannot pick its verification (an HS256 token "signed" with the provider's public key is checked
against the platform secret and fails). Every non-public route depends on `Authenticator` (through
`require`), so one place decides who a caller is. Refusals say what is wrong with the token, never what
the token or secret was.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import httpx
import jwt
from fastapi import Depends, HTTPException, Request, status

if TYPE_CHECKING:
    from .settings import ServiceSettings

Role = Literal["link_worker", "charity", "finance", "admin"]
ROLES: tuple[str, ...] = ("link_worker", "charity", "finance", "admin")
# Which scope claim each role must carry.
SCOPE_CLAIM = {"link_worker": "pcn_id", "finance": "pcn_id", "charity": "organisation_id"}
SCOPE_CLAIMS = ("pcn_id", "organisation_id", "practice_id")
MAX_SUB_CHARS = 200
DEFAULT_MAX_LIFETIME_S = 12 * 3600
OIDC_ALGORITHMS = ("RS256", "ES256")
OIDC_LEEWAY_S = 10  # clock skew between the provider and us (our own tokens are minted on our clocks)


@dataclass(frozen=True)
class Principal:
    sub: str
    role: str
    pcn_id: str | None = None
    organisation_id: str | None = None
    practice_id: str | None = None  # optional link_worker claim: the GP practice they refer from


@dataclass(frozen=True)
class ClaimNames:
    """Where an issuer puts our claims (SOCIALRX_OIDC_CLAIM_*); our own tokens use these defaults."""

    role: str = "role"
    pcn_id: str = "pcn_id"
    organisation_id: str = "organisation_id"
    practice_id: str = "practice_id"


def _unauthorised(message: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=message, headers={"WWW-Authenticate": "Bearer"})


def _claim(claims: dict[str, Any], name: str) -> Any:
    """A top-level claim, or a nested one named with dots (`socialrx.role`) for issuers that group them."""
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def principal_from_claims(
    claims: dict[str, Any],
    *,
    names: ClaimNames = ClaimNames(),
    max_lifetime_s: int = DEFAULT_MAX_LIFETIME_S,
    now: float | None = None,
) -> Principal:
    """The caller a verified token describes, or a 401 saying which claim is wrong."""
    now = time.time() if now is None else now
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, (int, float)) or isinstance(exp, bool):
        raise _unauthorised("token has no expiry ('exp'): mint one that expires")
    # A long-lived token is a standing key if stolen: refuse any minted to live beyond the maximum.
    if isinstance(iat, (int, float)) and not isinstance(iat, bool):
        if exp - iat > max_lifetime_s:
            raise _unauthorised(
                f"token lives longer than the {max_lifetime_s // 60} minutes allowed: mint a shorter one"
            )
    elif exp - now > max_lifetime_s + OIDC_LEEWAY_S:
        raise _unauthorised(
            f"token without 'iat' expires more than {max_lifetime_s // 60} minutes from now: mint a shorter one"
        )
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.strip():
        raise _unauthorised("token 'sub' must be a non-empty string")
    if len(sub) > MAX_SUB_CHARS:  # the services record who acted in columns of this width
        raise _unauthorised(f"token 'sub' is longer than {MAX_SUB_CHARS} characters")
    role = _claim(claims, names.role)
    if role not in ROLES:
        raise _unauthorised(f"token role ({names.role!r} claim) must be one of {', '.join(ROLES)}")
    scope: dict[str, str | None] = {}
    for field in SCOPE_CLAIMS:
        claim_name = getattr(names, field)
        value = _claim(claims, claim_name)
        # An empty scope would match no filter and widen what the caller sees: refused, never ignored.
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise _unauthorised(f"token claim {claim_name!r} must be a non-empty string when present")
        scope[field] = value
    needed = SCOPE_CLAIM.get(role)
    if needed and scope[needed] is None:
        raise _unauthorised(f"a {role} token needs the {getattr(names, needed)!r} claim")
    return Principal(sub=sub, role=role, **scope)


def decode_token(
    token: str,
    secret: str,
    *,
    issuer: str | None = None,
    audience: str | None = None,
    max_lifetime_s: int = DEFAULT_MAX_LIFETIME_S,
) -> Principal:
    """An HS256 token of this platform; `iss` and `aud` checked when configured."""
    required = ["exp", "sub", "role"] + (["iss"] if issuer else []) + (["aud"] if audience else [])
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            issuer=issuer,
            audience=audience,
            options={"require": required, "verify_aud": audience is not None},
        )
    except jwt.InvalidTokenError as exc:
        raise _refusal(exc, "invalid token: not an HS256 token signed with this platform's key") from None
    return principal_from_claims(claims, max_lifetime_s=max_lifetime_s)


def _refusal(exc: jwt.InvalidTokenError, otherwise: str) -> HTTPException:
    if isinstance(exc, jwt.ExpiredSignatureError):
        return _unauthorised("token expired")
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return _unauthorised(f"token lacks the {exc.claim!r} claim")
    if isinstance(exc, jwt.InvalidIssuerError):
        return _unauthorised("token issuer ('iss') is not one this platform trusts")
    if isinstance(exc, jwt.InvalidAudienceError):
        return _unauthorised("token audience ('aud') is not this platform")
    if isinstance(exc, jwt.ImmatureSignatureError):
        return _unauthorised("token not valid yet ('iat' or 'nbf' in the future)")
    return _unauthorised(otherwise)


def mint_token(
    secret: str,
    *,
    sub: str,
    role: str,
    pcn_id: str | None = None,
    organisation_id: str | None = None,
    practice_id: str | None = None,
    ttl_s: int = 8 * 3600,
    issuer: str | None = None,
    audience: str | None = None,
) -> str:
    claims: dict[str, object] = {"sub": sub, "role": role, "exp": int(time.time()) + ttl_s, "iat": int(time.time())}
    if pcn_id:
        claims["pcn_id"] = pcn_id
    if organisation_id:
        claims["organisation_id"] = organisation_id
    if practice_id:
        claims["practice_id"] = practice_id
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm="HS256")


class OidcVerifier:
    """RS256/ES256 access tokens of one OpenID provider, keys from its JWKS.

    Nothing is fetched until the first such token arrives, so a service starts while the provider is
    down. The key set is cached for `cache_s`; a token naming an unknown `kid` (the provider rotated its
    key) triggers a refetch, but at most one per `min_refetch_s`, so made-up key ids cannot turn us into
    a request amplifier against the provider. Runs in FastAPI's thread pool (sync dependency), hence
    the blocking client and the lock.
    """

    def __init__(
        self,
        issuer: str,
        audience: str,
        *,
        names: ClaimNames = ClaimNames(),
        max_lifetime_s: int = DEFAULT_MAX_LIFETIME_S,
        cache_s: float = 300.0,
        min_refetch_s: float = 30.0,
        timeout_s: float = 5.0,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.names = names
        self.max_lifetime_s = max_lifetime_s
        self.cache_s = cache_s
        self.min_refetch_s = min_refetch_s
        self.timeout_s = timeout_s
        self.fetches = 0  # how many times the key set was fetched (observability, tests)
        self._lock = threading.Lock()
        self._jwks_uri: str | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # monotonic time of the last attempt, successful or not
        self._succeeded_at: float | None = None

    def decode(self, token: str, header: dict[str, Any]) -> Principal:
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in OIDC_ALGORITHMS:
            raise _unauthorised(f"token algorithm must be HS256 or one of {', '.join(OIDC_ALGORITHMS)}")
        if not isinstance(kid, str) or not kid:
            raise _unauthorised("an RS256/ES256 token must name its signing key ('kid' header)")
        try:
            claimed_issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
        except jwt.InvalidTokenError:
            raise _unauthorised("invalid token: not a JWT") from None
        # Checked again with the signature below; asking first spares the provider a key fetch for
        # every token of another issuer (another realm, another tenant).
        if claimed_issuer != self.issuer:
            raise _unauthorised("token issuer ('iss') is not one this platform trusts")
        key = self._key(kid)
        # The key decides the algorithm: an RSA key never verifies an ES256 token, and no JWKS key is HMAC.
        if key.algorithm_name != alg:
            raise _unauthorised(f"token algorithm {alg} does not match its signing key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                issuer=self.issuer,
                audience=self.audience,
                leeway=OIDC_LEEWAY_S,
                options={"require": ["exp", "sub", "iss", "aud"]},
            )
        except jwt.InvalidTokenError as exc:
            raise _refusal(exc, "invalid token: signature not made by the identity provider's key") from None
        return principal_from_claims(claims, names=self.names, max_lifetime_s=self.max_lifetime_s)

    def _key(self, kid: str) -> jwt.PyJWK:
        with self._lock:
            now = time.monotonic()
            stale = self._succeeded_at is None or now - self._succeeded_at >= self.cache_s
            if kid in self._keys and not stale:
                return self._keys[kid]
            if self._fetched_at is None or now - self._fetched_at >= self.min_refetch_s:
                self._refresh(now)
            key = self._keys.get(kid)
            have_keys = bool(self._keys)
        if key is not None:
            return key
        if not have_keys:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                detail="the identity provider's signing keys could not be fetched; try again shortly",
                headers={"Retry-After": str(max(1, int(self.min_refetch_s)))},
            )
        raise _unauthorised("token signed with a key the identity provider does not publish")

    def _refresh(self, now: float) -> None:
        self._fetched_at = now
        self.fetches += 1
        try:
            with httpx.Client(timeout=self.timeout_s, follow_redirects=False) as client:
                if self._jwks_uri is None:
                    discovery = client.get(self.issuer.rstrip("/") + "/.well-known/openid-configuration")
                    discovery.raise_for_status()
                    document = discovery.json()
                    # OpenID Connect Discovery 1.0, 4.3: the document must name the issuer we asked.
                    if document.get("issuer") != self.issuer or not isinstance(document.get("jwks_uri"), str):
                        return
                    self._jwks_uri = document["jwks_uri"]
                answer = client.get(self._jwks_uri)
                answer.raise_for_status()
                keys = answer.json().get("keys", [])
        except (httpx.HTTPError, ValueError, AttributeError):
            return  # keep the keys we had: a provider outage does not unseat tokens already verifiable
        fetched: dict[str, jwt.PyJWK] = {}
        for data in keys if isinstance(keys, list) else []:
            if not isinstance(data, dict) or data.get("use", "sig") != "sig" or not data.get("kid"):
                continue
            try:
                key = jwt.PyJWK(data)
            except jwt.PyJWTError:
                continue  # a key type we cannot use (e.g. an encryption key) is skipped, not fatal
            if key.algorithm_name in OIDC_ALGORITHMS:
                fetched[data["kid"]] = key
        if fetched:
            self._keys = fetched
            self._succeeded_at = now


class Authenticator:
    def __init__(
        self,
        secret: str,
        *,
        issuer: str | None = None,
        audience: str | None = None,
        max_lifetime_s: int = DEFAULT_MAX_LIFETIME_S,
        oidc: OidcVerifier | None = None,
    ) -> None:
        self._secret = secret
        self._issuer = issuer
        self._audience = audience
        self._max_lifetime_s = max_lifetime_s
        self.oidc = oidc

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> Authenticator:
        oidc = None
        if settings.oidc_issuer:
            names = ClaimNames(
                settings.oidc_claim_role,
                settings.oidc_claim_pcn_id,
                settings.oidc_claim_organisation_id,
                settings.oidc_claim_practice_id,
            )
            oidc = OidcVerifier(
                settings.oidc_issuer, settings.oidc_audience, names=names, max_lifetime_s=settings.jwt_max_lifetime_s
            )
        return cls(
            settings.jwt_secret.get_secret_value(),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            max_lifetime_s=settings.jwt_max_lifetime_s,
            oidc=oidc,
        )

    def __call__(self, request: Request) -> Principal:
        header = request.headers.get("authorization")
        if not header:
            raise _unauthorised("missing Authorization: Bearer <token> header")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorised("Authorization header must be 'Bearer <token>'")
        return self.decode(token.strip())

    def decode(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise _unauthorised("invalid token: not a JWT") from None
        if header.get("alg") == "HS256":
            return decode_token(
                token, self._secret, issuer=self._issuer, audience=self._audience, max_lifetime_s=self._max_lifetime_s
            )
        if self.oidc is None:
            raise _unauthorised("invalid token: this platform accepts HS256 tokens only (no SOCIALRX_OIDC_ISSUER set)")
        return self.oidc.decode(token, header)


async def authenticate(request: Request) -> Principal:
    """The one authentication dependency: every protected route goes through it.

    The shared edge authenticates before the body is read and leaves the principal in the request's
    state; the route's dependency reuses it, so a token is verified once per request. `async` so
    FastAPI calls it in the event loop rather than in a worker thread (a thread hop per request)."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        authenticator: Authenticator = request.app.state.authenticator
        principal = authenticator(request)
        request.state.principal = principal
    return principal


def require(*roles: str) -> Callable[..., Awaitable[Principal]]:
    """Dependency: an authenticated caller in one of `roles` (403 otherwise)."""

    async def dependency(principal: Principal = Depends(authenticate)) -> Principal:
        if principal.role not in roles:
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"this action needs the role {' or '.join(roles)}")
        return principal

    return dependency


def forbidden(message: str = "not permitted for your organisation or PCN") -> HTTPException:
    return HTTPException(status.HTTP_403_FORBIDDEN, detail=message)
