"""The web app's settings, from the environment (names as documented in the README)."""

from __future__ import annotations

import secrets

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from socialrx_shared.settings import DEV_JWT_SECRET


class WebSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    http_host: str = Field("127.0.0.1", validation_alias="SOCIALRX_HTTP_HOST")
    http_port: int = Field(8000, validation_alias="SOCIALRX_HTTP_PORT")
    log_level: str = Field("INFO", validation_alias="LOG_LEVEL")
    referral_intake_url: str = Field("http://127.0.0.1:8001", validation_alias="SOCIALRX_WEB_REFERRAL_INTAKE_URL")
    directory_url: str = Field("http://127.0.0.1:8002", validation_alias="SOCIALRX_WEB_DIRECTORY_URL")
    outcomes_url: str = Field("http://127.0.0.1:8003", validation_alias="SOCIALRX_WEB_OUTCOMES_URL")
    funding_ledger_url: str = Field("http://127.0.0.1:8004", validation_alias="SOCIALRX_WEB_FUNDING_LEDGER_URL")
    dev_signin: bool = Field(False, validation_alias="SOCIALRX_DEV_SIGNIN")
    # Only the development sign-in mints tokens, so only it needs the platform's key.
    jwt_secret: SecretStr = Field(SecretStr(DEV_JWT_SECRET), validation_alias="SOCIALRX_JWT_SECRET")
    session_secret: SecretStr | None = Field(None, validation_alias="SOCIALRX_WEB_SESSION_SECRET")
    # None: Secure cookies unless the development sign-in is on (plain http on this machine).
    cookie_secure: bool | None = Field(None, validation_alias="SOCIALRX_WEB_COOKIE_SECURE")
    oidc_issuer: str | None = Field(None, validation_alias="SOCIALRX_OIDC_ISSUER")
    oidc_client_id: str | None = Field(None, validation_alias="SOCIALRX_OIDC_CLIENT_ID")
    oidc_client_secret: SecretStr | None = Field(None, validation_alias="SOCIALRX_OIDC_CLIENT_SECRET")
    oidc_scope: str = Field("openid profile", validation_alias="SOCIALRX_OIDC_SCOPE")
    api_timeout_s: float = Field(15.0, validation_alias="SOCIALRX_WEB_API_TIMEOUT_S")

    @model_validator(mode="after")
    def _secrets(self) -> WebSettings:
        if self.session_secret is not None and not self.session_secret.get_secret_value():
            self.session_secret = None  # an empty variable (compose's default) is no secret
        if self.session_secret is not None and len(self.session_secret.get_secret_value()) < 32:
            raise ValueError("SOCIALRX_WEB_SESSION_SECRET must be at least 32 characters (e.g. openssl rand -hex 32)")
        if self.session_secret is None:
            if not self.dev_signin:
                raise ValueError(
                    "SOCIALRX_WEB_SESSION_SECRET is required (a long random string) unless "
                    "SOCIALRX_DEV_SIGNIN=1 on a development machine"
                )
            # Development: a fresh key per start; signing in again after a restart is fine there.
            self.session_secret = SecretStr(secrets.token_urlsafe(48))
        if self.oidc_issuer and not (self.oidc_client_id and self.oidc_client_secret):
            raise ValueError("SOCIALRX_OIDC_ISSUER needs SOCIALRX_OIDC_CLIENT_ID and SOCIALRX_OIDC_CLIENT_SECRET")
        return self

    @property
    def dev_signin_allowed(self) -> bool:
        # Never beside a real identity provider: a configured issuer means this is not a dev machine.
        return self.dev_signin and not self.oidc_issuer

    @property
    def secure_cookies(self) -> bool:
        return self.cookie_secure if self.cookie_secure is not None else not self.dev_signin

    def api_urls(self) -> dict[str, str]:
        return {
            "referral-intake": self.referral_intake_url,
            "directory": self.directory_url,
            "outcomes": self.outcomes_url,
            "funding-ledger": self.funding_ledger_url,
        }
