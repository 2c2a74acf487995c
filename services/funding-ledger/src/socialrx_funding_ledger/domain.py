"""Ledger maths: UK financial-year periods, due dates, fees, caps, ageing, allocation.

Standard library only. Money is integer pence, never a float. The UK financial year starts on
1 April: 2026/27 runs from 2026-04-01 to 2027-03-31; M01 is April, Q1 is April-June.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import date, timedelta

BUCKETS = ("not_due", "days_1_30", "days_31_60", "days_61_90", "days_over_90")


@dataclass(frozen=True)
class Period:
    label: str  # e.g. "2026/27-Q3" or "2026/27-M08"
    starts_on: date
    ends_on: date


@dataclass(frozen=True)
class Agreement:
    id: str
    pcn_id: str
    organisation_id: str
    per_referral_pence: int
    per_outcome_pence: int
    outcome_statuses: tuple[str, ...]
    block_grant_pence_per_period: int
    cap_pence_per_year: int | None
    period: str  # "monthly" | "quarterly"
    days_after_period_end: int
    starts_on: date
    ends_on: date | None = None

    def covers(self, on: date) -> bool:
        return self.starts_on <= on and (self.ends_on is None or on <= self.ends_on)


def financial_year_start(on: date) -> date:
    return date(on.year if on.month >= 4 else on.year - 1, 4, 1)


def financial_year_label(on: date) -> str:
    start = financial_year_start(on).year
    return f"{start}/{(start + 1) % 100:02d}"


def _add_months(first_of_month: date, months: int) -> date:
    index = first_of_month.year * 12 + first_of_month.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def period_of(on: date, kind: str) -> Period:
    """The payment period (of the UK financial year) that `on` falls in."""
    fy_start = financial_year_start(on)
    months_in = (on.year - fy_start.year) * 12 + on.month - fy_start.month  # 0..11
    if kind == "monthly":
        starts_on = _add_months(fy_start, months_in)
        ends_on = date(starts_on.year, starts_on.month, calendar.monthrange(starts_on.year, starts_on.month)[1])
        return Period(f"{financial_year_label(on)}-M{months_in + 1:02d}", starts_on, ends_on)
    if kind == "quarterly":
        quarter = months_in // 3
        starts_on = _add_months(fy_start, quarter * 3)
        last_month = _add_months(starts_on, 2)
        ends_on = date(last_month.year, last_month.month, calendar.monthrange(last_month.year, last_month.month)[1])
        return Period(f"{financial_year_label(on)}-Q{quarter + 1}", starts_on, ends_on)
    raise ValueError(f"period must be monthly or quarterly, not {kind!r}")


def due_date(business_date: date, kind: str, days_after_period_end: int) -> date:
    """Work done in a period falls due `days_after_period_end` days after that period ends."""
    return period_of(business_date, kind).ends_on + timedelta(days=days_after_period_end)


def fee(agreement: Agreement, basis: str, outcome_status: str | None = None) -> int:
    if basis == "referral_accepted":
        return agreement.per_referral_pence
    if basis == "outcome_recorded":
        return agreement.per_outcome_pence if outcome_status in agreement.outcome_statuses else 0
    if basis == "block_grant":
        return agreement.block_grant_pence_per_period
    raise ValueError(f"unknown basis {basis!r}")


def apply_cap(amount_pence: int, accrued_this_year_pence: int, cap_pence_per_year: int | None) -> tuple[int, int]:
    """(owed, refused): beyond the yearly cap nothing more is owed, and what is refused is kept."""
    if cap_pence_per_year is None:
        return amount_pence, 0
    room = max(cap_pence_per_year - accrued_this_year_pence, 0)
    owed = min(amount_pence, room)
    return owed, amount_pence - owed


def age_bucket(due_on: date, as_of: date) -> str:
    """Days past due: the due date itself is not yet overdue."""
    days_late = (as_of - due_on).days
    if days_late <= 0:
        return "not_due"
    if days_late <= 30:
        return "days_1_30"
    if days_late <= 60:
        return "days_31_60"
    if days_late <= 90:
        return "days_61_90"
    return "days_over_90"


@dataclass(frozen=True)
class OpenPayment:
    payment_id: str
    open_pence: int
    due_date: date
    business_date: date


@dataclass
class Allocation:
    allocations: list[tuple[str, int]] = field(default_factory=list)
    unallocated_pence: int = 0  # an overpayment: held as a credit for the organisation


def allocate_oldest_first(amount_pence: int, open_payments: list[OpenPayment]) -> Allocation:
    """Pay the earliest due first, then the earliest cause (business date), then by id."""
    assert amount_pence >= 0
    result = Allocation()
    remaining = amount_pence
    for payment in sorted(open_payments, key=lambda p: (p.due_date, p.business_date, p.payment_id)):
        if remaining == 0:
            break
        take = min(remaining, payment.open_pence)
        if take > 0:
            result.allocations.append((payment.payment_id, take))
            remaining -= take
    result.unallocated_pence = remaining
    assert sum(p for _, p in result.allocations) + remaining == amount_pence
    return result
