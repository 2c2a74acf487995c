"""The directory's rules: when a service accepts referrals, and how a referral's decision moves.

Standard library only (and the shared pure disclosure rule).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import re
import socket
import statistics
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal, get_args
from urllib.parse import unquote, urlsplit

from socialrx_shared import disclosure
from socialrx_shared.errors import Conflict

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
# The organisation is emailed this long before an unanswered referral would be declined.
REMINDER_BEFORE_DECLINE = timedelta(days=2)
WEBHOOK_EVENTS = ("referral.created", "referral.accepted", "referral.declined", "service.updated")

# A referral's status as the directory (a charity's inbox) sees it; the one rule is `inbox_status`.
InboxStatus = Literal["received", "accepted", "declined", "finished"]
INBOX_STATUSES: tuple[InboxStatus, ...] = get_args(InboxStatus)
# What can happen to a referral in an inbox: it arrives, its charity (or the clock) decides, it ends.
InboxChange = Literal["referred", "accepted", "declined", "ended"]
DECIDABLE: InboxStatus = "received"


class DecisionConflict(Conflict):
    """A second decision on the same referral."""


def inbox_status(current: InboxStatus | None, change: InboxChange) -> InboxStatus:
    """The inbox status after `change`: received -> accepted | declined; accepted -> finished (its place is
    free again). A referral that arrives twice keeps its status; a second decision is a DecisionConflict;
    an ending of a referral that was never accepted changes nothing."""
    if change == "referred":
        return current or DECIDABLE
    if current is None:
        raise ValueError(f"{change!r} of a referral that never arrived")
    if change == "ended":
        return "finished" if current == "accepted" else current
    if current != DECIDABLE:
        raise DecisionConflict(f"this referral was already {current}; a decision cannot be changed")
    return change


def auto_decline_at(status: InboxStatus, referred_at: datetime) -> datetime | None:
    """When an unanswered referral will be declined automatically (None once it is answered)."""
    return referred_at + AUTO_DECLINE_AFTER if status == DECIDABLE else None


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


def may_manage(role: str, own_organisation_id: str | None, organization_id: str) -> bool:
    """An admin manages every organisation's services; a charity only its own."""
    return role != "charity" or own_organisation_id == organization_id


def normal_postcode(value: str | None) -> str | None:
    """'ls14ap' or 'LS1 4AP' -> 'LS1 4AP': one spelling, so the same place matches itself."""
    if value is None:
        return None
    compact = value.replace(" ", "").upper()
    return f"{compact[:-3]} {compact[-3:]}"


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


def page_envelope(total: int, page: int, per_page: int, size: int) -> dict[str, int | bool]:
    """The Open Referral page envelope (without `contents`)."""
    total_pages = math.ceil(total / per_page) if total else 0
    return {
        "total_items": total,
        "total_pages": total_pages,
        "page_number": page,
        "size": size,
        "first_page": page == 1,
        "last_page": page >= total_pages,
        "empty": size == 0,
    }


@dataclass(frozen=True)
class Decision:
    status: str  # accepted | declined | finished
    reason: str | None
    reply_seconds: float


def referral_stats(decisions: list[Decision], pending: int) -> dict[str, Any]:
    """Acceptance rate and typical (median) reply time of one service, as it may be published.

    An automatic no_response decline counts against the acceptance rate but not in the reply time:
    nobody replied, so it says nothing about how fast the charity answers.

    The counts are about people, and the endpoint is open: they follow the disclosure rule
    (socialrx_shared.disclosure: 1-7 hidden as '*', others rounded to 5, accepted + declined =
    decided protected together). The rate is worked out from the shown counts (an exact rate would
    give the exact counts back), and neither rate nor median is shown when the counts behind it are hidden.
    """
    accepted = sum(1 for d in decisions if d.status in ("accepted", "finished"))
    replies = [d.reply_seconds for d in decisions if d.reason != "no_response"]
    true = {"decided": len(decisions), "accepted": accepted, "declined": len(decisions) - accepted, "pending": pending}
    shown = disclosure.protect(true, [(["accepted", "declined"], "decided")])
    rate = None
    if isinstance(shown["accepted"], int) and isinstance(shown["decided"], int) and shown["decided"]:
        rate = round(min(shown["accepted"] / shown["decided"], 1.0), 2)
    median = None
    if len(replies) > disclosure.LARGEST_SUPPRESSED and shown["decided"] != disclosure.SUPPRESSED:
        median = round(statistics.median(replies) / 3600, 1)
    return {**shown, "acceptance_rate": rate, "median_reply_hours": median}


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """HMAC-SHA256 over `<timestamp>.<body>`, hex: binding the time stops a captured call being replayed later."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def retry_delay_s(attempts: int, base_s: float, cap_s: float) -> float:
    """Exponential backoff after the `attempts`-th failure: base, 2*base, 4*base ... up to cap."""
    return min(base_s * 2.0 ** max(attempts - 1, 0), cap_s)


# Names that only mean something inside a network: a webhook must go to the public internet.
INTERNAL_NAME_SUFFIXES = (
    ".localhost",
    ".local",
    ".localdomain",
    ".internal",
    ".intranet",
    ".lan",
    ".home.arpa",
    ".svc",
    ".cluster.local",
    ".corp",
)


def literal_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host written as a number means, or None for a name.

    Besides dotted quads and IPv6, the C resolver takes the old inet_aton forms ('0x7f000001',
    '2130706433', '127.1', '0177.0.0.1'): they are addresses too, and must be checked as such.
    """
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    if re.fullmatch(r"[0-9a-fA-FxX.]+", host) and re.search(r"[0-9]", host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def address_refusal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why a webhook may not be sent to this address, or None for a public unicast address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for kind, flagged in (
        ("loopback", address.is_loopback),
        ("private", address.is_private),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
        ("reserved", address.is_reserved),
    ):
        if flagged:
            return f"it points at a {kind} address ({address}), inside a network"
    if not address.is_global:  # shared (100.64/10), documentation and benchmarking ranges ...
        return f"it points at an address that is not public ({address})"
    return None


def host_refusal(host: str) -> str | None:
    """Why a webhook URL's host is refused by its form alone (before resolving it), or None."""
    name = host.strip("[]").rstrip(".").lower()
    literal = literal_address(name)
    if literal is not None:
        return address_refusal(literal)
    if name == "localhost" or name.endswith(INTERNAL_NAME_SUFFIXES):
        return f"it names a host inside a network ({name})"
    if "." not in name:
        return f"it names a host without a domain ({name}), which only resolves inside a network"
    return None


def reminder_due(referred_at: datetime, now: datetime) -> bool:
    """An undecided referral's reminder is due REMINDER_BEFORE_DECLINE before it would be declined."""
    return now - referred_at >= AUTO_DECLINE_AFTER - REMINDER_BEFORE_DECLINE


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    implicit_tls: bool  # smtps:// (port 465 by default); smtp:// uses STARTTLS when the server offers it
    username: str | None
    password: str | None


def smtp_target(url: str) -> SmtpTarget:
    """`smtp://host:port`, `smtps://user:pass@host:465` -> where and how to send; ValueError otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ValueError("SOCIALRX_SMTP_URL must look like smtp://host:port or smtps://user:password@host:465")
    implicit = parts.scheme == "smtps"
    return SmtpTarget(
        parts.hostname,
        parts.port or (465 if implicit else 25),
        implicit,
        unquote(parts.username) if parts.username else None,
        unquote(parts.password) if parts.password else None,
    )


def notification_email(reason: str, web_base_url: str) -> tuple[str, str]:
    """Subject and body of an organisation's notification: that there is something to look at, and where.

    Nothing about the person or the referral (no name, NHS number, postcode, age, needs, not even an
    id): an inbox is not a safe place for them, and the charity sees it all after signing in.
    """
    link = web_base_url.rstrip("/") + "/charity/inbox"
    if reason == "arrived":
        return (
            "A new referral is waiting for you on socialrx",
            "A link worker has referred someone to one of your services.\n\n"
            f"Please sign in to accept or decline it:\n{link}\n",
        )
    if reason == "reminder":
        days = REMINDER_BEFORE_DECLINE.days
        return (
            f"A referral will be declined automatically in {days} days",
            f"A referral to one of your services has not been answered. In {days} days it will be declined "
            "automatically, and the person will be told no one could take it.\n\n"
            f"Please sign in to accept or decline it:\n{link}\n",
        )
    raise ValueError(f"unknown notification reason {reason!r}")
