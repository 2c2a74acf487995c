"""Referral-intake's rules: pure functions over the standard library only.

- NHS numbers: 10 digits with a valid modulus-11 check digit.
- person_ref: keyed HMAC-SHA256 of the NHS number, so the same person gets the same reference and
  nobody without the key can turn it back into a number.
- The status machine as the link worker sees it (`next_status`): events may arrive in any order
  across topics, and the final status must not depend on that order.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import date, datetime, timedelta
from typing import Any, Literal, get_args

# A referral's status as the link worker sees it (its timeline); the one rule is `next_status`.
ReferralStatus = Literal["created", "accepted", "declined", "outcome_recorded"]
STATUSES: tuple[ReferralStatus, ...] = get_args(ReferralStatus)
INITIAL_STATUS: ReferralStatus = "created"

# How far along each status is. A status only moves forward, so a late `referral.accepted`
# after `outcome.recorded` changes nothing, and both orders end at `outcome_recorded`.
_RANK: dict[ReferralStatus, int] = {"created": 0, "accepted": 1, "declined": 1, "outcome_recorded": 2}

# Consent is recorded by a person at a device whose clock may run a little fast; beyond this it is
# a mistake (a wrong date typed, a wrong time zone), not skew.
CONSENT_CLOCK_SKEW = timedelta(minutes=5)

_POSTCODE = re.compile(r"^([A-Z]{1,2}[0-9][A-Z0-9]?) ?([0-9][A-Z]{2})$")
_AGE_BANDS = (
    (18, "0-17"),
    (25, "18-24"),
    (35, "25-34"),
    (45, "35-44"),
    (55, "45-54"),
    (65, "55-64"),
    (75, "65-74"),
    (85, "75-84"),
)


def nhs_number_problem(value: str) -> str | None:
    """Why `value` is not a valid NHS number, or None when it is."""
    digits = value.replace(" ", "")
    # [0-9], not \d: \d also matches other scripts' digits ('١٢٣...'), which int() would accept.
    if not re.fullmatch(r"[0-9]{10}", digits):
        return "an NHS number has 10 digits"
    total = sum(int(d) * weight for d, weight in zip(digits[:9], range(10, 1, -1), strict=False))
    check = 11 - total % 11
    if check == 11:
        check = 0
    if check == 10 or check != int(digits[9]):
        return "the NHS number's check digit is wrong (modulus 11): please re-check the number"
    return None


def normalise_nhs_number(value: str) -> str:
    return value.replace(" ", "")


def person_ref(key: bytes, nhs_number: str) -> str:
    return hmac.new(key, normalise_nhs_number(nhs_number).encode(), hashlib.sha256).hexdigest()


def link_worker_ref(key: bytes, sub: str) -> str:
    """A stable pseudonym of a link worker's token subject, which may be an email or `provider|id`.

    Identity providers' subjects can be personal data (an email) and need not fit our id pattern, so
    events and reports carry this keyed hash instead; the prefix separates it from `person_ref`, made
    with the same key, so the two can never collide."""
    return "lw-" + hmac.new(key, b"link-worker:" + sub.encode(), hashlib.sha256).hexdigest()[:40]


def normalise_postcode(value: str) -> str | None:
    """`sw1a1aa` -> `SW1A 1AA`; None if it is not a UK postcode."""
    compact = value.strip().upper().replace(" ", "")
    match = _POSTCODE.match(f"{compact[:-3]} {compact[-3:]}") if len(compact) >= 5 else None
    if not match:
        return None
    return f"{match.group(1)} {match.group(2)}"


def postcode_district(postcode: str) -> str:
    """The outward code only (`SW1A`): too coarse to find a person, fine for inclusion reports."""
    normalised = normalise_postcode(postcode)
    if normalised is None:
        raise ValueError("not a UK postcode")
    return normalised.split(" ")[0]


def age_on(date_of_birth: date, on: date) -> int:
    return on.year - date_of_birth.year - ((on.month, on.day) < (date_of_birth.month, date_of_birth.day))


def age_band(date_of_birth: date, on: date) -> str:
    age = age_on(date_of_birth, on)
    for upper, band in _AGE_BANDS:
        if age < upper:
            return band
    return "85+"


def next_status(current: ReferralStatus, event_status: ReferralStatus) -> ReferralStatus:
    """The referral's status after an event whose own status is `event_status`."""
    if event_status not in _RANK:
        raise ValueError(f"unknown status {event_status!r}")
    if current == "declined":
        return current  # a declined referral is closed: nothing later reopens it
    if event_status == "declined" and current != "created":
        return current
    return event_status if _RANK[event_status] > _RANK[current] else current


def service_refusal(service: dict[str, Any] | None) -> str | None:
    """Why a new referral to this service is refused, from referral-intake's own view of it."""
    if service is None:
        return "unknown service: the directory has not published it (check the service id)"
    if service["status"] != "active":
        return f"service is not active (status: {service['status']})"
    if not service["accepting_referrals"]:
        reason = service.get("not_accepting_reason") or "not accepting referrals"
        return f"service is not accepting referrals: {reason}"
    return None


def needs_problem(requested: list[str], served: list[str], known: set[str]) -> str | None:
    """Why these needs cannot go to a service serving `served`, or None.

    `known` is every need any published service serves: referral-intake learns the directory's
    taxonomy only through `service.updated`, so a need no service serves is, to it, not a need.
    """
    unknown = sorted(set(requested) - known - set(served))
    if unknown:
        return (
            f"need {', '.join(map(repr, unknown))} is not in the directory's needs taxonomy "
            "(see GET /taxonomy_terms on the directory)"
        )
    not_served = sorted(set(requested) - set(served))
    if not_served:
        return (
            f"this service does not serve {', '.join(map(repr, not_served))}; it serves "
            f"{', '.join(map(repr, sorted(served))) or 'no needs yet'}: choose a service that serves the need"
        )
    return None


def consent_problem(recorded_at: datetime, now: datetime) -> str | None:
    """Consent cannot be recorded in the future (beyond a few minutes of clock skew)."""
    if recorded_at > now + CONSENT_CLOCK_SKEW:
        return "consent.recorded_at is in the future: give the time the person consented (UTC, ISO 8601)"
    return None


def refusal_reason(service: dict[str, Any], today: date) -> str:
    """Why a published service refuses new referrals, as a code for the unmet-need count
    (the event `referral.refused`): the service's sake, never the request's fault."""
    if service["status"] != "active":
        return "not_active"
    valid_until = service.get("safeguarding_policy_valid_until")
    if valid_until is None:
        return "safeguarding_policy_missing"
    if valid_until < today:
        return "safeguarding_policy_expired"
    if service.get("capacity_available", 0) <= 0:
        return "no_capacity"
    return "not_accepting"
