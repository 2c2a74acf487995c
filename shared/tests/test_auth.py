"""Tokens and secrets: what the services refuse, and RS256/ES256 tokens verified through a JWKS that
this test serves itself (a tiny local HTTP server), including key rotation and algorithm confusion."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import HTTPException
from pydantic import ValidationError

from socialrx_shared.auth import Authenticator, ClaimNames, OidcVerifier, decode_token, mint_token
from socialrx_shared.settings import DEV_JWT_SECRET, ServiceSettings

SECRET = "a-test-secret-that-is-longer-than-32-bytes"
AUDIENCE = "socialrx"


def _refused(call, status: int = 401) -> str:
    with pytest.raises(HTTPException) as caught:
        call()
    assert caught.value.status_code == status, caught.value.detail
    return caught.value.detail


# --- item 10: well-known secrets, iss/aud, lifetime, blank scope claims ---------------------------


def test_services_refuse_the_development_secret_and_short_keys_unless_in_dev_mode(monkeypatch) -> None:
    monkeypatch.delenv("SOCIALRX_DEV_MODE", raising=False)
    monkeypatch.delenv("SOCIALRX_JWT_SECRET", raising=False)
    with pytest.raises(ValidationError, match="public development secret"):
        ServiceSettings()
    with pytest.raises(ValidationError, match="shorter than 32 bytes"):
        ServiceSettings(jwt_secret="x" * 31)
    assert ServiceSettings(jwt_secret="x" * 32).jwt_secret.get_secret_value() == "x" * 32
    monkeypatch.setenv("SOCIALRX_DEV_MODE", "1")
    assert ServiceSettings().jwt_secret.get_secret_value() == DEV_JWT_SECRET
    assert ServiceSettings(jwt_secret="short").dev_mode


def test_an_oidc_issuer_over_plain_http_only_in_dev_mode(monkeypatch) -> None:
    monkeypatch.delenv("SOCIALRX_DEV_MODE", raising=False)
    with pytest.raises(ValidationError, match="https://"):
        ServiceSettings(jwt_secret=SECRET, oidc_issuer="http://idp.example/realms/pcn")
    assert ServiceSettings(jwt_secret=SECRET, oidc_issuer="https://idp.example/realms/pcn").oidc_audience == "socialrx"
    assert ServiceSettings(jwt_secret=SECRET, dev_mode=True, oidc_issuer="http://127.0.0.1:1/realms/x").oidc_issuer


def _hs(claims: dict, secret: str = SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def _good(**changes) -> dict:
    now = int(time.time())
    return {"sub": "lw-1", "role": "link_worker", "pcn_id": "U12345", "iat": now, "exp": now + 600, **changes}


def test_issuer_and_audience_are_checked_when_configured() -> None:
    both = dict(issuer="https://socialrx.example", audience="socialrx")
    ok = _hs(_good(iss="https://socialrx.example", aud="socialrx"))
    assert decode_token(ok, SECRET, **both).pcn_id == "U12345"
    assert "issuer" in _refused(lambda: decode_token(_hs(_good(iss="https://other", aud="socialrx")), SECRET, **both))
    assert "audience" in _refused(
        lambda: decode_token(_hs(_good(iss="https://socialrx.example", aud="x")), SECRET, **both)
    )
    assert "'iss'" in _refused(lambda: decode_token(_hs(_good(aud="socialrx")), SECRET, **both))
    assert "'aud'" in _refused(lambda: decode_token(_hs(_good(iss="https://socialrx.example")), SECRET, **both))
    # Not configured: tokens without (or with) iss/aud are accepted as before.
    assert decode_token(_hs(_good()), SECRET).sub == "lw-1"
    assert decode_token(ok, SECRET).sub == "lw-1"


def test_tokens_living_longer_than_the_maximum_are_refused() -> None:
    now = int(time.time())
    twelve_hours = 12 * 3600
    assert decode_token(_hs(_good(iat=now, exp=now + twelve_hours)), SECRET).role == "link_worker"
    detail = _refused(lambda: decode_token(_hs(_good(iat=now, exp=now + twelve_hours + 1)), SECRET))
    assert "longer than the 720 minutes" in detail
    # Without iat, the expiry itself must be within the maximum from now.
    no_iat = {k: v for k, v in _good(exp=now + twelve_hours + 3600).items() if k != "iat"}
    assert "without 'iat'" in _refused(lambda: decode_token(_hs(no_iat), SECRET))
    assert decode_token(_hs({**no_iat, "exp": now + 600}), SECRET).sub == "lw-1"
    assert "longer than the 60 minutes" in _refused(
        lambda: decode_token(_hs(_good(exp=now + 3601)), SECRET, max_lifetime_s=3600)
    )


@pytest.mark.parametrize("blank", ["", "   ", "\t"])
@pytest.mark.parametrize(
    ("role", "claim"),
    [
        ("link_worker", "pcn_id"),
        ("finance", "pcn_id"),
        ("charity", "organisation_id"),
        ("link_worker", "practice_id"),
        ("admin", "pcn_id"),
    ],
)
def test_empty_or_blank_scope_claims_are_refused(role: str, claim: str, blank: str) -> None:
    claims = _good(role=role, **{"organisation_id": "org-1", claim: blank})
    assert f"{claim!r} must be a non-empty string" in _refused(lambda: decode_token(_hs(claims), SECRET))


def test_subjects_may_be_emails_or_provider_ids_but_not_blank_or_huge() -> None:
    for sub in ("ada@example.nhs.uk", "auth0|5f7c8ec7", "x" * 200):
        assert decode_token(_hs(_good(sub=sub)), SECRET).sub == sub
    assert "non-empty" in _refused(lambda: decode_token(_hs(_good(sub=" ")), SECRET))
    assert "longer than 200" in _refused(lambda: decode_token(_hs(_good(sub="x" * 201)), SECRET))


def test_a_scope_claim_that_is_not_a_string_is_refused() -> None:
    assert "'pcn_id' must be a non-empty string" in _refused(lambda: decode_token(_hs(_good(pcn_id=["U1"])), SECRET))


# --- OpenID Connect: RS256/ES256 through the provider's JWKS --------------------------------------


class _Provider:
    """An issuer with a discovery document and a JWKS we can rotate, counting JWKS requests."""

    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.issuer = f"http://127.0.0.1:{self.server.server_port}/realms/test"
        self.jwks: dict = {"keys": []}
        self.jwks_requests = 0
        self.up = True
        self.private: dict[str, object] = {}
        self.add_key("rsa-1", rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256")

    def _handler(self):
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if not provider.up:
                    self.send_response(503)
                    self.end_headers()
                    return
                if self.path.endswith("/.well-known/openid-configuration"):
                    body = {"issuer": provider.issuer, "jwks_uri": provider.issuer + "/protocol/openid-connect/certs"}
                elif self.path.endswith("/certs"):
                    provider.jwks_requests += 1
                    body = provider.jwks
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args) -> None:
                pass

        return Handler

    def add_key(self, kid: str, private, alg: str, *, replace: bool = False) -> None:
        algorithm = jwt.get_algorithm_by_name(alg)
        public = json.loads(algorithm.to_jwk(private.public_key()))
        public.update(kid=kid, use="sig", alg=alg)
        self.jwks = {"keys": ([] if replace else self.jwks["keys"]) + [public]}
        self.private[kid] = private

    def token(self, kid: str = "rsa-1", alg: str = "RS256", **changes) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": "f:1b2c|ada@example.nhs.uk",
            "iat": now,
            "exp": now + 300,
            "role": "finance",
            "pcn_id": "U12345",
            **changes,
        }
        return jwt.encode(
            {k: v for k, v in claims.items() if v is not None}, self.private[kid], algorithm=alg, headers={"kid": kid}
        )


@pytest.fixture
def provider() -> Iterator[_Provider]:
    provider = _Provider()
    thread = threading.Thread(target=provider.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        provider.server.shutdown()
        provider.server.server_close()


def _authenticator(provider: _Provider, **options) -> Authenticator:
    return Authenticator(SECRET, oidc=OidcVerifier(provider.issuer, AUDIENCE, **options))


def test_rs256_and_es256_tokens_of_the_provider_are_accepted_beside_hs256(provider) -> None:
    provider.add_key("ec-1", ec.generate_private_key(ec.SECP256R1()), "ES256")
    auth = _authenticator(provider)
    rs = auth.decode(provider.token())
    assert (rs.role, rs.pcn_id, rs.sub) == ("finance", "U12345", "f:1b2c|ada@example.nhs.uk")
    assert (
        auth.decode(provider.token("ec-1", "ES256", role="charity", organisation_id="org-9")).organisation_id == "org-9"
    )
    assert auth.decode(mint_token(SECRET, sub="admin-1", role="admin")).role == "admin"
    assert provider.jwks_requests == 1  # cached


def test_nothing_is_fetched_until_an_rs256_token_arrives(provider) -> None:
    auth = _authenticator(provider)
    auth.decode(mint_token(SECRET, sub="admin-1", role="admin"))
    assert provider.jwks_requests == 0


def test_a_rotated_key_is_fetched_but_made_up_key_ids_do_not_hammer_the_provider(provider) -> None:
    verifier = OidcVerifier(provider.issuer, AUDIENCE, min_refetch_s=0.5)
    auth = Authenticator(SECRET, oidc=verifier)
    auth.decode(provider.token())
    time.sleep(0.6)
    provider.add_key("rsa-2", rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256", replace=True)
    assert auth.decode(provider.token("rsa-2")).role == "finance"  # unknown kid: refetched once
    assert provider.jwks_requests == 2
    for n in range(20):  # an attacker's invented key ids: at most one refetch per interval
        forged = jwt.encode(
            _good(iss=provider.issuer), provider.private["rsa-2"], algorithm="RS256", headers={"kid": f"nope-{n}"}
        )
        assert "does not publish" in _refused(lambda forged=forged: auth.decode(forged))
    assert provider.jwks_requests == 2
    # The retired key's tokens are refused once the provider stopped publishing it.
    assert "does not publish" in _refused(lambda: auth.decode(provider.token("rsa-1")))


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"iss": "http://127.0.0.1:1/realms/another"}, "issuer"),
        ({"aud": "another-client"}, "audience"),
        ({"exp": int(time.time()) - 120}, "expired"),
        ({"aud": None}, "'aud'"),
        ({"role": None}, "role"),
        ({"role": "finance", "pcn_id": None}, "needs the 'pcn_id' claim"),
        ({"pcn_id": " "}, "non-empty"),
        ({"exp": int(time.time()) + 13 * 3600}, "longer than"),
    ],
)
def test_provider_tokens_with_a_wrong_claim_are_refused(provider, changes: dict, expected: str) -> None:
    assert expected in _refused(lambda: _authenticator(provider).decode(provider.token(**changes)))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hand_signed_hs256(header: dict, claims: dict, key: bytes) -> str:
    """What an attacker builds (PyJWT itself refuses to use a public key as an HMAC secret)."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return signing_input + "." + _b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())


def test_algorithm_confusion_is_impossible(provider) -> None:
    provider.add_key("ec-1", ec.generate_private_key(ec.SECP256R1()), "ES256")
    auth = _authenticator(provider)
    public_pem = (
        provider.private["rsa-1"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    claims = {
        "iss": provider.issuer,
        "aud": AUDIENCE,
        "sub": "x",
        "role": "admin",
        "iat": int(time.time()),
        "exp": int(time.time()) + 60,
    }
    header = {"kid": "rsa-1"}
    # HS256 "signed" with the provider's public key, naming its RSA key: checked against our secret, fails.
    hs_with_public_key = _hand_signed_hs256({"alg": "HS256", "typ": "JWT", **header}, claims, public_pem)
    assert "HS256 token signed with this platform's key" in _refused(lambda: auth.decode(hs_with_public_key))
    # ES256 header naming the RSA key, and RS256 naming the EC key: the key decides, not the header.
    es_on_rsa = jwt.encode(claims, provider.private["ec-1"], algorithm="ES256", headers=header)
    assert "does not match its signing key" in _refused(lambda: auth.decode(es_on_rsa))
    rs_on_ec = jwt.encode(claims, provider.private["rsa-1"], algorithm="RS256", headers={"kid": "ec-1"})
    assert "does not match its signing key" in _refused(lambda: auth.decode(rs_on_ec))
    # Other algorithms and unsigned tokens are refused outright.
    none = jwt.encode(claims, None, algorithm="none", headers=header)
    assert "algorithm must be" in _refused(lambda: auth.decode(none))
    rs512 = jwt.encode(claims, provider.private["rsa-1"], algorithm="RS512", headers=header)
    assert "algorithm must be" in _refused(lambda: auth.decode(rs512))
    no_kid = jwt.encode(claims, provider.private["rsa-1"], algorithm="RS256")
    assert "'kid'" in _refused(lambda: auth.decode(no_kid))
    # Without a configured provider, RS256 tokens are refused with a reason.
    assert "HS256 tokens only" in _refused(lambda: Authenticator(SECRET).decode(provider.token()))


def test_a_provider_that_is_down_gives_503_and_our_own_tokens_still_work(provider) -> None:
    provider.up = False
    auth = _authenticator(provider, min_refetch_s=60)
    assert "could not be fetched" in _refused(lambda: auth.decode(provider.token()), status=503)
    assert "could not be fetched" in _refused(lambda: auth.decode(provider.token()), status=503)
    assert auth.decode(mint_token(SECRET, sub="admin-1", role="admin")).role == "admin"


def test_a_discovery_document_naming_another_issuer_is_not_trusted(provider) -> None:
    verifier = OidcVerifier(provider.issuer + "-other", AUDIENCE)
    verifier_issuer_mismatch = Authenticator(SECRET, oidc=verifier)
    # The discovery document found under the configured issuer names another issuer (OIDC Discovery 4.3).
    _refused(lambda: verifier_issuer_mismatch.decode(provider.token(iss=provider.issuer + "-other")), status=503)
    assert provider.jwks_requests == 0


def test_tokens_of_another_issuer_cost_no_key_fetch(provider) -> None:
    auth = _authenticator(provider, min_refetch_s=0)
    for n in range(5):
        token = provider.token(iss=f"http://127.0.0.1:1/realms/tenant-{n}")
        assert "issuer" in _refused(lambda token=token: auth.decode(token))
    assert provider.jwks_requests == 0


def test_claim_names_are_configurable(provider) -> None:
    verifier = OidcVerifier(provider.issuer, AUDIENCE, names=ClaimNames(role="socialrx.role", pcn_id="ods_pcn"))
    token = provider.token(
        role=None, pcn_id=None, socialrx={"role": "link_worker"}, ods_pcn="U99999", practice_id="B82005"
    )
    principal = Authenticator(SECRET, oidc=verifier).decode(token)
    assert (principal.role, principal.pcn_id, principal.practice_id) == ("link_worker", "U99999", "B82005")


def test_authenticator_from_settings_wires_the_provider(provider) -> None:
    settings = ServiceSettings(
        jwt_secret=SECRET,
        dev_mode=True,
        oidc_issuer=provider.issuer,
        oidc_claim_pcn_id="ods_pcn",
        jwt_max_lifetime_s=600,
    )
    auth = Authenticator.from_settings(settings)
    assert auth.decode(provider.token(pcn_id=None, ods_pcn="U55555")).pcn_id == "U55555"
    assert "longer than the 10 minutes" in _refused(lambda: auth.decode(provider.token(exp=int(time.time()) + 900)))
