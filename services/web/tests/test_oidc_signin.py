"""Production sign-in: OpenID Connect (authorization code + PKCE) against a real Keycloak, in a real
browser; the access token it gets is what the web app sends to the APIs.

Needs the session fixture `oidc_provider` (issuer, client_id, client_secret, audience, users,
set_attribute, password_grant) that the harness gains with the services' JWKS support."""

from __future__ import annotations

import secrets
import uuid

import pytest
from web_pages import check_page, click

from socialrx_harness.platform import ServiceProcess, web_env
from socialrx_harness.procs import free_port


@pytest.fixture(scope="module")
def oidc_web(platform, oidc_provider, tmp_path_factory) -> str:
    """A second web app, configured for the identity provider (so its development sign-in is off)."""
    port = free_port()
    env = web_env(
        port=port,
        service_urls={s: p.url for s, p in platform.services.items()},
        jwt_secret="unused",
        extra={
            "SOCIALRX_DEV_SIGNIN": "0",
            "SOCIALRX_OIDC_ISSUER": oidc_provider.issuer,
            "SOCIALRX_OIDC_CLIENT_ID": oidc_provider.client_id,
            "SOCIALRX_OIDC_CLIENT_SECRET": oidc_provider.client_secret,
            "SOCIALRX_WEB_SESSION_SECRET": secrets.token_urlsafe(48),
            "SOCIALRX_WEB_COOKIE_SECURE": "0",
        },
    )
    env.pop("SOCIALRX_JWT_SECRET")
    oidc_provider.allow_redirect(f"http://127.0.0.1:{port}/auth/callback")
    process = ServiceProcess("web", port, env, tmp_path_factory.mktemp("oidc-web") / "web.log")
    process.start()
    try:
        process.wait_ready(60)
        yield process.url
    finally:
        process.stop()


def test_a_finance_officer_signs_in_with_the_identity_provider(oidc_web, oidc_provider, browser) -> None:
    pcn_id = "Q" + uuid.uuid4().hex[:5].upper()
    oidc_provider.set_attribute("finance", "pcn_id", pcn_id)
    username, password = oidc_provider.users["finance"]
    page = browser.new_page()
    page.goto(oidc_web)
    assert "Development sign-in" not in page.content()
    click(page, "a:has-text('Sign in')")
    page.fill("#username", username)
    page.fill("#password", password)
    click(page, "#kc-login")
    page.wait_for_url(f"{oidc_web}/arrears")
    assert f"Finance officer, PCN {pcn_id}" in page.content()
    assert page.inner_text("#total-owed") == "£0.00"  # the ledger accepted the provider's token
    check_page(page)
    assert page.goto(f"{oidc_web}/dev/sign-in").status == 404
    page.goto(f"{oidc_web}/arrears")
    click(page, "button:has-text('Sign out')")
    assert page.goto(f"{oidc_web}/arrears").url.rstrip("/") == oidc_web
    page.close()
