"""The directory's rules: when a service accepts referrals, and how a referral's decision moves.

Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

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
