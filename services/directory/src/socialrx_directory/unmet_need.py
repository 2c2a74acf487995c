"""Unmet need, for commissioners: referrals refused or declined for the service's sake, by need code
and postcode district, under NHS England's small-number rule. Pure; standard library and the shared
disclosure rule only.

A referral for two needs is counted under each: rows do not add up to the referrals refused, but
each row's total is the sum of its own columns, which is what secondary suppression protects.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta

from socialrx_shared import disclosure
from socialrx_shared.errors import Invalid

COLUMNS = ("refused_no_capacity", "refused_safeguarding", "refused_not_active", "declined_no_capacity")
TOTAL = "total"

# The refusal reasons of `referral.refused`, as report columns.
REFUSAL_COLUMN = {
    "no_capacity": "refused_no_capacity",
    "safeguarding_policy_missing": "refused_safeguarding",
    "safeguarding_policy_expired": "refused_safeguarding",
    "not_active": "refused_not_active",
    "not_accepting": "refused_not_active",
}


@dataclass(frozen=True)
class Turned:
    """One referral turned away: its needs, district and the report column it counts in."""

    needs: tuple[str, ...]
    postcode_district: str
    column: str


@dataclass(frozen=True)
class ServiceGap:
    service_id: str
    name: str
    needs: tuple[str, ...]
    postcode_district: str | None
    reason: str  # why it takes no referrals today (the directory's gate)


def counts(turned: Iterable[Turned]) -> dict[tuple[str, str], dict[str, int]]:
    rows: dict[tuple[str, str], dict[str, int]] = {}
    for t in turned:
        for need in sorted(set(t.needs)):
            row = rows.setdefault((need, t.postcode_district), dict.fromkeys(COLUMNS, 0))
            row[t.column] += 1
    return rows


def report(turned: Iterable[Turned], gaps: Iterable[ServiceGap]) -> list[dict]:
    """Rows by need and district, counts protected, with the services there that cannot take referrals."""
    rows = counts(turned)
    cells: dict[tuple[str, str, str], int] = {}
    lines = []
    for (need, district), row in rows.items():
        for column in COLUMNS:
            cells[(need, district, column)] = row[column]
        cells[(need, district, TOTAL)] = sum(row.values())
        lines.append(([(need, district, c) for c in COLUMNS], (need, district, TOTAL)))
    shown = disclosure.protect(cells, lines)
    gaps = list(gaps)
    out = []
    for need, district in sorted(rows):
        out.append(
            {
                "need": need,
                "postcode_district": district,
                **{column: shown[(need, district, column)] for column in (*COLUMNS, TOTAL)},
                "services_not_taking_referrals": [
                    {"service_id": g.service_id, "name": g.name, "reason": g.reason}
                    for g in sorted(gaps, key=lambda g: g.service_id)
                    if need in g.needs and g.postcode_district == district
                ],
            }
        )
    return out


def capacity_or_safeguarding(reason: str | None) -> bool:
    """Gate reasons that are unmet need: no places, or no valid safeguarding policy."""
    return reason is not None and (reason.startswith("no capacity") or "safeguarding" in reason)


def period(from_: date | None, to: date | None, today: date) -> tuple[date, date]:
    """The report's days, both included: to defaults to today, from to a year before to. Refuses
    implausible years and a from after to (`Invalid`)."""
    to = to or today
    from_ = from_ or to - timedelta(days=365)
    for name, day in (("from", from_), ("to", to)):
        if not 2000 <= day.year <= 2100:
            raise Invalid(f"{name} ({day}) is not a plausible date (years 2000 to 2100)")
    if from_ > to:
        raise Invalid(f"from ({from_}) is after to ({to}); give from on or before to")
    return from_, to
