"""structlog JSON logging, bound with event id / referral id / trace id, with redaction.

Personal details and secrets must never reach a log line (rule 5). `redact` drops the value of any
key that names one, wherever a developer puts it, so a careless `log.info(..., person=...)` is safe.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

SENSITIVE_KEYS = frozenset(
    {
        "nhs_number", "given_name", "family_name", "name_of_person", "date_of_birth", "dob",
        "postcode", "address", "phone", "email", "person", "contact",
        "authorization", "token", "jwt", "secret", "password", "jwt_secret", "person_ref_key",
        "signing_secret",
    }
)
REDACTED = "[redacted]"


def redact(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    for key in list(event_dict):
        if key.lower() in SENSITIVE_KEYS:
            event_dict[key] = REDACTED
    return event_dict


def configure_logging(service: str, level: str = "INFO") -> None:
    logging.basicConfig(format="%(message)s", stream=sys.stdout, level=level.upper(), force=True)
    # aiokafka is chatty at INFO about group joins; warnings still show.
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
