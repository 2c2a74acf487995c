"""The directory's rules: when a service accepts referrals, and how a referral's decision moves.

Standard library only.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import statistics
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta

DEFAULT_NEEDS = {
    "loneliness": "Loneliness and social isolation",
    "mental-wellbeing": "Mental wellbeing",
    "physical-activity": "Physical activity",
    "money-and-debt": "Money and debt",
    "housing": "Housing",
    "employment": "Employment, training and volunteering",
    "carers": "Support for carers",
    "arts-and-creativity": "Arts and creativity",
    "nature": "Nature and green spaces",
    "food": "Food",
}
# Ids of the directory's own ORUK resources are uuid5 of this namespace, so they are stable across
# databases (a seeded term has the same id everywhere) and are the UUIDs the standard asks for.
NAMESPACE = uuid.UUID("6f1d2b8e-3c1a-5e7d-9b40-2a6c1f0e8d55")
NEEDS_VOCABULARY = "socialrx-needs"
# A referral nobody answered for this long is declined with reason no_response.
AUTO_DECLINE_AFTER = timedelta(days=14)
WEBHOOK_EVENTS = ("referral.created", "referral.accepted", "referral.declined", "service.updated")

# Inbox states: received -> accepted | declined; accepted -> finished (the place is free again).
DECIDABLE = "received"


class DecisionConflict(Exception):
    """A second decision on the same referral."""


@dataclass(frozen=True)
class Gate:
    accepting_referrals: bool
    reason: str | None


def gate(status: str, capacity: int, safeguarding_valid_until: date | None, today: date) -> Gate:
    """Whether a service may take new referrals today, and if not, the first reason why."""
    if status != "active":
        return Gate(False, f"service status is {status!r}")
    if safeguarding_valid_until is None:
        return Gate(False, "no safeguarding policy on record")
    if safeguarding_valid_until < today:
        return Gate(False, f"safeguarding policy expired on {safeguarding_valid_until.isoformat()}")
    if capacity <= 0:
        return Gate(False, "no capacity: no places free")
    return Gate(True, None)


def decide(current: str, decision: str) -> str:
    """The inbox status after `decision` ('accepted' or 'declined'), or DecisionConflict."""
    if current != DECIDABLE:
        raise DecisionConflict(f"this referral was already {current}; a decision cannot be changed")
    return decision


def frees_a_place(outcome_status: str) -> bool:
    """A referral that ended (completed or disengaged) gives its place back; 'engaged' does not."""
    return outcome_status in ("completed", "disengaged")


def term_id(code: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"term/{code}"))


def taxonomy_id(vocabulary: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"taxonomy/{vocabulary}"))


def derived_id(service_id: str, kind: str) -> str:
    """Id of a sub-record (location, address, attribute) the directory keeps inside a service row."""
    return str(uuid.uuid5(NAMESPACE, f"{kind}/{service_id}"))


def slug(text: str) -> str:
    """A need code from a free-text term name ('Money & Debt' -> 'money-debt')."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:64]


def outward_code(postcode: str) -> str:
    """'SW1A 1AA' -> 'SW1A': the postcode district, the directory's unit of 'near'."""
    compact = postcode.replace(" ", "").upper()
    return compact[:-3] if len(compact) > 3 else compact


def overdue(referred_at: datetime, now: datetime) -> bool:
    """An undecided referral is declined automatically once AUTO_DECLINE_AFTER has passed."""
    return now - referred_at >= AUTO_DECLINE_AFTER


def page_envelope(total: int, page: int, per_page: int, size: int) -> dict:
    """The Open Referral page envelope (without `contents`)."""
    total_pages = math.ceil(total / per_page) if total else 0
    return {"total_items": total, "total_pages": total_pages, "page_number": page, "size": size,
            "first_page": page == 1, "last_page": page >= total_pages, "empty": size == 0}


@dataclass(frozen=True)
class Decision:
    status: str  # accepted | declined | finished
    reason: str | None
    reply_seconds: float


def referral_stats(decisions: list[Decision], pending: int) -> dict:
    """Acceptance rate and typical (median) reply time of one service.

    An automatic no_response decline counts against the acceptance rate but not in the reply time:
    nobody replied, so it says nothing about how fast the charity answers.
    """
    accepted = sum(1 for d in decisions if d.status in ("accepted", "finished"))
    replies = [d.reply_seconds for d in decisions if d.reason != "no_response"]
    return {
        "decided": len(decisions), "accepted": accepted, "declined": len(decisions) - accepted,
        "pending": pending,
        "acceptance_rate": round(accepted / len(decisions), 4) if decisions else None,
        "median_reply_hours": round(statistics.median(replies) / 3600, 2) if replies else None,
    }


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """HMAC-SHA256 over `<timestamp>.<body>`, hex: binding the time stops a captured call being replayed later."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def retry_delay_s(attempts: int, base_s: float, cap_s: float) -> float:
    """Exponential backoff after the `attempts`-th failure: base, 2*base, 4*base ... up to cap."""
    return min(base_s * 2 ** max(attempts - 1, 0), cap_s)
