"""Insight rules: who pays on time, what late payment costs, what money is coming.

Standard library only; pure functions over facts the store reads. Money is integer pence; the one
division (interest, a likely fee) is exact with Fraction and rounded half-up once, per payment.

Sources of the rules:
- Prompt payment follows what public bodies publish under the Public Contracts Regulations 2015
  (reg. 113): the share of invoices paid within 30 days. We count from the agreed due date.
- Statutory interest: Late Payment of Commercial Debts (Interest) Act 1998, s.6 and the Late
  Payment of Commercial Debts (Rate of Interest) (No. 3) Order 2002: 8 percentage points over the
  Bank of England's official dealing rate (Bank Rate) in force on 30 June (interest starting
  July-December) or 31 December (interest starting January-June), fixed for the debt's life;
  s.5A fixed sums: £40 under £1,000, £70 from £1,000 to £9,999.99, £100 from £10,000.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

STATUTORY_MARGIN_BASIS_POINTS = 800
DAYS_IN_YEAR = 365  # the Act's interest is simple and daily over a 365-day year, leap years too
GRACE_DAYS = 30  # "within 30 days", as public bodies report prompt payment


def half_up(value: Fraction) -> int:
    """Nearest integer, halves away from zero (0.5p -> 1p): the rounding a person does by hand."""
    sign = -1 if value < 0 else 1
    value = abs(value)
    whole = value.numerator // value.denominator
    return sign * (whole + (1 if value - whole >= Fraction(1, 2) else 0))


def one_decimal(value: Fraction | float) -> float:
    """A share or a number of days for people to read: one decimal place, halves up."""
    exact = (
        Decimal(value.numerator) / Decimal(value.denominator) if isinstance(value, Fraction) else Decimal(str(value))
    )
    return float(exact.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


# --- prompt payment -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DuePayment:
    """A payment that fell due: settled_on is the day it was paid in full (None while open)."""

    pcn_id: str
    organisation_id: str
    amount_pence: int
    due_on: date
    settled_on: date | None
    open_pence: int


def days_late(payment: DuePayment) -> int | None:
    if payment.settled_on is None:
        return None
    return max((payment.settled_on - payment.due_on).days, 0)


def prompt_payment(payments: list[DuePayment], as_of: date) -> dict:
    """Counts and values by when each payment was settled against its due date, and the shares.

    One pass over the payments: a PCN's report over a year's payments is a few hundred thousand rows.
    """
    count = {name: 0 for name in ("on_time", "within_30_days", "later", "open")}
    pence = dict.fromkeys(count, 0)
    overdue_count = overdue_pence = open_pence = 0
    lateness: list[int] = []
    for p in payments:
        if p.settled_on is None:
            name = "open"
            open_pence += p.open_pence
            if p.due_on < as_of:
                overdue_count += 1
                overdue_pence += p.open_pence
        else:
            late = max((p.settled_on - p.due_on).days, 0)
            lateness.append(late)
            name = "on_time" if late == 0 else "within_30_days" if late <= GRACE_DAYS else "later"
        count[name] += 1
        pence[name] += p.amount_pence
    total_count, total_pence = len(payments), sum(pence.values())
    figures: dict = {"payments_due": total_count, "value_due_pence": total_pence}
    for name in count:
        figures[f"{name}_count"] = count[name]
        figures[f"{name}_pence"] = pence[name]
    # open_pence is the value of the payments not yet paid in full; open_unpaid_pence what of it is unpaid.
    figures |= {
        "open_overdue_count": overdue_count,
        "open_overdue_pence": overdue_pence,
        "open_unpaid_pence": open_pence,
    }

    def share(part: int, whole: int) -> float | None:
        # Open payments count as not paid on time: the share is of everything that fell due.
        return one_decimal(Fraction(100 * part, whole)) if whole else None

    figures |= {
        "on_time_share_by_number_percent": share(count["on_time"], total_count),
        "on_time_share_by_value_percent": share(pence["on_time"], total_pence),
        "within_30_days_share_by_number_percent": share(count["on_time"] + count["within_30_days"], total_count),
        "within_30_days_share_by_value_percent": share(pence["on_time"] + pence["within_30_days"], total_pence),
    }
    figures["settled_count"] = len(lateness)
    figures["mean_days_late"] = one_decimal(Fraction(sum(lateness), len(lateness))) if lateness else None
    figures["median_days_late"] = one_decimal(statistics.median(lateness)) if lateness else None
    return figures


def median_days_late(payments: list[DuePayment]) -> int:
    """A PCN's typical lateness so far, in whole days (halves up); 0 when nothing was settled yet."""
    lateness = [late for p in payments if (late := days_late(p)) is not None]
    return half_up(Fraction(statistics.median(lateness)).limit_denominator(2)) if lateness else 0


# --- statutory late-payment interest ------------------------------------------------------------


def interest_starts_on(due_on: date) -> date:
    """Statutory interest runs from the day after the day payment was due."""
    return due_on + timedelta(days=1)


def half_year_starting(day: date) -> date:
    return date(day.year, 1 if day.month <= 6 else 7, 1)


def reference_date(interest_starts: date) -> date:
    """The day whose Bank Rate fixes the debt's rate: 31 December before a January-June start,
    30 June before a July-December start."""
    if interest_starts.month <= 6:
        return date(interest_starts.year - 1, 12, 31)
    return date(interest_starts.year, 6, 30)


def compensation_pence(debt_pence: int) -> int:
    """The Act's fixed sum per debt (s.5A): £40 under £1,000, £70 under £10,000, £100 from £10,000."""
    if debt_pence < 100_000:
        return 4_000
    if debt_pence < 1_000_000:
        return 7_000
    return 10_000


def percent_to_basis_points(rate_percent: Decimal) -> int:
    basis_points = rate_percent * 100
    if basis_points != basis_points.to_integral_value():
        raise ValueError(f"{rate_percent}% is finer than a hundredth of a percentage point")
    return int(basis_points)


def statutory_interest_pence(
    amount_pence: int, due_on: date, paid: list[tuple[date, int]], as_of: date, bank_rate_basis_points: int
) -> int:
    """Simple interest at Bank Rate + 8 points on what was unpaid each day, from the day after
    `due_on` to `as_of` inclusive; a part paid on day d stops accruing from the day after d.

    `paid` is (paid_on, pence) of every part payment. Exact, then rounded half-up to the penny once.
    """
    rate = bank_rate_basis_points + STATUTORY_MARGIN_BASIS_POINTS
    pence_days = 0
    day = interest_starts_on(due_on)
    # Walk the days between payment dates: the balance is constant in between.
    changes = sorted({on + timedelta(days=1) for on, _ in paid if day <= on + timedelta(days=1) <= as_of})
    for until in [*changes, as_of + timedelta(days=1)]:
        if until <= day:
            continue
        balance = amount_pence - sum(pence for on, pence in paid if on < day)
        pence_days += max(balance, 0) * (until - day).days
        day = until
    return half_up(Fraction(pence_days * rate, 10_000 * DAYS_IN_YEAR))


# --- cash-flow forecast ---------------------------------------------------------------------------

OPEN_AT_DUE_DATE = "open_payment_at_due_date"
OPEN_MOVED_BY_LATENESS = "open_payment_moved_by_pcn_median_lateness"
LIKELY_OUTCOME_FEE = "likely_outcome_fee"


@dataclass(frozen=True)
class ExpectedReceipt:
    kind: str
    pcn_id: str
    expected_on: date
    amount_pence: int
    payment_id: str | None = None
    referral_count: int = 0


def expected_on(due_on: date, median_late_days: int | None) -> tuple[date, str]:
    """When an open payment is likely to arrive: its due date, moved by the PCN's median lateness."""
    if not median_late_days:
        return due_on, OPEN_AT_DUE_DATE
    return due_on + timedelta(days=median_late_days), OPEN_MOVED_BY_LATENESS


def likely_fee_pence(per_outcome_pence: int, referrals_waiting: int, with_fee: int, accepted: int) -> int:
    """The outcome fee times the share of accepted referrals that went on to a qualifying outcome,
    for the referrals still waiting: exact, rounded half-up once per line."""
    if not accepted or not referrals_waiting:
        return 0
    return half_up(Fraction(per_outcome_pence * referrals_waiting * with_fee, accepted))


def weekly(receipts: list[ExpectedReceipt], starts_on: date, weeks: int) -> list[dict]:
    """Receipts by week from `starts_on` (anything expected earlier, i.e. overdue, lands in week 1)."""
    out = []
    for index in range(weeks):
        first = starts_on + timedelta(days=7 * index)
        last = first + timedelta(days=6)
        lines = [r for r in receipts if (r.expected_on <= last if index == 0 else first <= r.expected_on <= last)]
        out.append(
            {
                "week": index + 1,
                "starts_on": first.isoformat(),
                "ends_on": last.isoformat(),
                "expected_pence": sum(r.amount_pence for r in lines),
                "lines": [
                    {
                        "kind": r.kind,
                        "pcn_id": r.pcn_id,
                        "expected_on": r.expected_on.isoformat(),
                        "amount_pence": r.amount_pence,
                        "payment_id": r.payment_id,
                        **({"referral_count": r.referral_count} if r.kind == LIKELY_OUTCOME_FEE else {}),
                    }
                    for r in lines
                ],
            }
        )
    return out
