"""Settings from the environment (pydantic-settings), with the variable names in ARCHITECTURE.md.

Each service subclasses `ServiceSettings` and names its own database variable
(`REFERRAL_INTAKE_DATABASE_URL`, `DIRECTORY_DATABASE_URL`, ...), so one shell can hold all four.
"""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Only for local use and tests (SOCIALRX_DEV_MODE=1); a service refuses to start with it otherwise.
DEV_JWT_SECRET = "socialrx-local-development-secret-change-me"
# An HS256 key shorter than the hash's output can be brute-forced offline from one token (RFC 7518 3.2).
MIN_JWT_SECRET_BYTES = 32


def jwt_secret_problem(secret: str, *, dev_mode: bool) -> str | None:
    """Why `secret` may not sign tokens here, or None. Shared by the services and the `socialrx` CLI."""
    if dev_mode:
        return None
    if secret == DEV_JWT_SECRET:
        return (
            "SOCIALRX_JWT_SECRET is the public development secret: set a random one of at least "
            f"{MIN_JWT_SECRET_BYTES} bytes (e.g. `openssl rand -hex 32`), or SOCIALRX_DEV_MODE=1 on a laptop"
        )
    if len(secret.encode()) < MIN_JWT_SECRET_BYTES:
        return (
            f"SOCIALRX_JWT_SECRET is shorter than {MIN_JWT_SECRET_BYTES} bytes: anyone holding one token could "
            "guess it; set a random one (e.g. `openssl rand -hex 32`)"
        )
    return None


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    kafka_bootstrap_servers: str = Field("127.0.0.1:9092", validation_alias="KAFKA_BOOTSTRAP_SERVERS")
    # Development mode: the public development secret and short keys are accepted (`make up`, the test harness).
    dev_mode: bool = Field(False, validation_alias="SOCIALRX_DEV_MODE")
    jwt_secret: SecretStr = Field(SecretStr(DEV_JWT_SECRET), validation_alias="SOCIALRX_JWT_SECRET")
    # When set, every HS256 token must carry this `iss` / `aud` (tokens minted elsewhere for other systems
    # sharing the key are then refused).
    jwt_issuer: str | None = Field(None, validation_alias="SOCIALRX_JWT_ISSUER")
    jwt_audience: str | None = Field(None, validation_alias="SOCIALRX_JWT_AUDIENCE")
    # Longest accepted token lifetime (`exp - iat`); a stolen long-lived token is a standing key.
    jwt_max_lifetime_s: int = Field(12 * 3600, gt=0, validation_alias="SOCIALRX_JWT_MAX_LIFETIME_S")
    # An OpenID provider whose RS256/ES256 access tokens are accepted beside the HS256 ones.
    oidc_issuer: str | None = Field(None, validation_alias="SOCIALRX_OIDC_ISSUER")
    oidc_audience: str = Field("socialrx", min_length=1, validation_alias="SOCIALRX_OIDC_AUDIENCE")
    oidc_claim_role: str = Field("role", min_length=1, validation_alias="SOCIALRX_OIDC_CLAIM_ROLE")
    oidc_claim_pcn_id: str = Field("pcn_id", min_length=1, validation_alias="SOCIALRX_OIDC_CLAIM_PCN_ID")
    oidc_claim_organisation_id: str = Field(
        "organisation_id", min_length=1, validation_alias="SOCIALRX_OIDC_CLAIM_ORGANISATION_ID"
    )
    oidc_claim_practice_id: str = Field("practice_id", min_length=1, validation_alias="SOCIALRX_OIDC_CLAIM_PRACTICE_ID")
    log_level: str = Field("INFO", validation_alias="LOG_LEVEL")
    http_host: str = Field("127.0.0.1", validation_alias="SOCIALRX_HTTP_HOST")
    http_port: int = Field(8000, validation_alias="SOCIALRX_HTTP_PORT")
    # Consumer group prefix: two platforms on one broker (tests beside `make up`) never share offsets.
    consumer_group_prefix: str = Field("socialrx", validation_alias="SOCIALRX_CONSUMER_GROUP_PREFIX")
    outbox_poll_interval_s: float = Field(0.5, validation_alias="SOCIALRX_OUTBOX_POLL_INTERVAL_S")
    database_url: str = "postgresql+asyncpg://socialrx@127.0.0.1:5432/socialrx"

    @field_validator("jwt_issuer", "jwt_audience", "oidc_issuer", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # Compose (`${VAR:-}`) and ConfigMaps pass an empty string for "not configured".
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _refuse_well_known_secrets(self) -> ServiceSettings:
        problem = jwt_secret_problem(self.jwt_secret.get_secret_value(), dev_mode=self.dev_mode)
        if problem:
            raise ValueError(problem)
        if self.oidc_issuer is not None and not self.oidc_issuer.startswith(
            ("https://", "http://") if self.dev_mode else ("https://",)
        ):
            # Keys fetched over plain HTTP could be swapped by anyone on the path: only on a laptop.
            raise ValueError(
                "SOCIALRX_OIDC_ISSUER must be the provider's https:// issuer URL, "
                "e.g. https://login.example.nhs.uk/realms/pcn (http:// only with SOCIALRX_DEV_MODE=1)"
            )
        return self

    def consumer_group(self, service: str) -> str:
        return f"{self.consumer_group_prefix}.{service}"


def database_url_env(service: str) -> str:
    """`funding-ledger` -> `FUNDING_LEDGER_DATABASE_URL`."""
    return service.upper().replace("-", "_") + "_DATABASE_URL"
