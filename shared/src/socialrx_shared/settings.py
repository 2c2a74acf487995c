"""Settings from the environment (pydantic-settings), with the variable names in ARCHITECTURE.md.

Each service subclasses `ServiceSettings` and names its own database variable
(`REFERRAL_INTAKE_DATABASE_URL`, `DIRECTORY_DATABASE_URL`, ...), so one shell can hold all four.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# Only for local use and tests; `make up` prints a warning when it is in force.
DEV_JWT_SECRET = "socialrx-local-development-secret-change-me"


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    kafka_bootstrap_servers: str = Field("127.0.0.1:9092", validation_alias="KAFKA_BOOTSTRAP_SERVERS")
    jwt_secret: SecretStr = Field(SecretStr(DEV_JWT_SECRET), validation_alias="SOCIALRX_JWT_SECRET")
    log_level: str = Field("INFO", validation_alias="LOG_LEVEL")
    http_host: str = Field("127.0.0.1", validation_alias="SOCIALRX_HTTP_HOST")
    http_port: int = Field(8000, validation_alias="SOCIALRX_HTTP_PORT")
    # Consumer group prefix: two platforms on one broker (tests beside `make up`) never share offsets.
    consumer_group_prefix: str = Field("socialrx", validation_alias="SOCIALRX_CONSUMER_GROUP_PREFIX")
    outbox_poll_interval_s: float = Field(0.5, validation_alias="SOCIALRX_OUTBOX_POLL_INTERVAL_S")
    database_url: str = "postgresql+asyncpg://socialrx@127.0.0.1:5432/socialrx"

    def consumer_group(self, service: str) -> str:
        return f"{self.consumer_group_prefix}.{service}"


def database_url_env(service: str) -> str:
    """`funding-ledger` -> `FUNDING_LEDGER_DATABASE_URL`."""
    return service.upper().replace("-", "_") + "_DATABASE_URL"
