"""The directory's settings (beside the shared ones), apart from the app so the importer's command line
can read them without importing the HTTP app (which imports the importer)."""

from __future__ import annotations

from pydantic import Field, field_validator

from socialrx_shared.settings import ServiceSettings

from . import domain

SERVICE = "directory"


class Settings(ServiceSettings):
    database_url: str = Field(
        "postgresql+asyncpg://postgres@127.0.0.1:5432/socialrx_directory",
        validation_alias="DIRECTORY_DATABASE_URL",
    )
    http_port: int = Field(8002, validation_alias="SOCIALRX_HTTP_PORT")
    # Expiry is by the day, so hourly is soon enough; auto-decline is by 14 days, so 10 minutes is.
    safeguarding_sweep_interval_s: float = Field(3600, gt=0, validation_alias="DIRECTORY_SAFEGUARDING_SWEEP_INTERVAL_S")
    auto_decline_sweep_interval_s: float = Field(600, gt=0, validation_alias="DIRECTORY_AUTO_DECLINE_SWEEP_INTERVAL_S")
    webhook_poll_interval_s: float = Field(1.0, gt=0, validation_alias="DIRECTORY_WEBHOOK_POLL_INTERVAL_S")
    # How often the capacity changes of accepts and finished referrals leave as one service.updated each.
    # 0.25 s: a poll costs the idle directory ~1% of a core at 0.1 s (measured), and a quarter second is
    # well inside what a capacity figure may lag by (it travels by event anyway).
    service_update_interval_s: float = Field(0.25, gt=0, validation_alias="DIRECTORY_SERVICE_UPDATE_INTERVAL_S")
    webhook_retry_base_s: float = Field(10.0, gt=0, validation_alias="DIRECTORY_WEBHOOK_RETRY_BASE_S")
    webhook_retry_cap_s: float = Field(3600.0, gt=0, validation_alias="DIRECTORY_WEBHOOK_RETRY_CAP_S")
    webhook_max_attempts: int = Field(12, ge=1, validation_alias="DIRECTORY_WEBHOOK_MAX_ATTEMPTS")
    # Plain-http webhook URLs only for local development and tests.
    webhook_allow_http: bool = Field(False, validation_alias="DIRECTORY_WEBHOOK_ALLOW_HTTP")
    # Webhooks to loopback/private/link-local addresses only for local development and tests: a charity
    # chooses the URL, and the directory must not be its way into the network it runs in.
    webhook_allow_private_networks: bool = Field(False, validation_alias="DIRECTORY_WEBHOOK_ALLOW_PRIVATE_NETWORKS")
    # The whole of one delivery (resolve, connect, send, answer) must fit in this.
    webhook_timeout_s: float = Field(10.0, gt=0, validation_alias="DIRECTORY_WEBHOOK_TIMEOUT_S")
    # Subscriptions delivered at once (each one's own events still go one at a time, in order).
    webhook_concurrency: int = Field(8, ge=1, le=100, validation_alias="DIRECTORY_WEBHOOK_CONCURRENCY")
    # Emails to organisations (a referral arrived; one will be declined in 2 days). None configured: none sent.
    smtp_url: str | None = Field(None, validation_alias="SOCIALRX_SMTP_URL")
    smtp_from: str = Field("socialrx <no-reply@socialrx.invalid>", validation_alias="SOCIALRX_SMTP_FROM")
    web_base_url: str = Field("http://127.0.0.1:8000", validation_alias="SOCIALRX_WEB_BASE_URL")
    email_poll_interval_s: float = Field(5.0, gt=0, validation_alias="DIRECTORY_EMAIL_POLL_INTERVAL_S")
    email_retry_base_s: float = Field(30.0, gt=0, validation_alias="DIRECTORY_EMAIL_RETRY_BASE_S")

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: str | None) -> str | None:
        if value:
            domain.smtp_target(value)  # refuse a malformed URL at start-up, not at the first email
        return value or None
