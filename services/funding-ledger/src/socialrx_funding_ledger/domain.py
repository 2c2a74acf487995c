"""Ledger maths: UK financial-year periods, due dates, fees, caps, ageing, allocation.

Standard library only. Money is integer pence, never a float. The UK financial year starts on
1 April: 2026/27 runs from 2026-04-01 to 2027-03-31; M01 is April, Q1 is April-June.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

if TYPE_CHECKING:  # a type only: the domain imports nothing but the standard library when it runs
    from socialrx_shared.events import PaymentBasis

BUCKETS = ("not_due", "days_1_30", "days_31_60", "days_61_90", "days_over_90")

# PCNs and charities work, and count months, quarters and financial years, in UK local time:
# 00:30 BST on 1 July is July's (Q2's) work although it is still 30 June in UTC.
UK = ZoneInfo("Europe/London")


def business_date_of(at: datetime) -> date:
    """The UK calendar day an instant falls on (an aware datetime, any offset)."""
    if at.tzinfo is None:
        raise ValueError("a business date needs an aware datetime (with its UTC offset)")
    return at.astimezone(UK).date()


def today_in_uk(now: datetime | None = None) -> date:
    return business_date_of(now or datetime.now(timezone.utc))


# Accounts of the journal (see ledger.py for what each holds). Named here, once, because a balance is
# found by its account's exact name.
def expense_account(pcn_id: str) -> str:
    return f"expense:{pcn_id}"


def bank_account(pcn_id: str) -> str:
    return f"bank:{pcn_id}"


def payable_account(pcn_id: str, organisation_id: str) -> str:
    return f"payable:{pcn_id}:{organisation_id}"


def credit_account(pcn_id: str, organisation_id: str) -> str:
    return f"credit:{pcn_id}:{organisation_id}"


# Cause keys: every journal entry is keyed by what caused it, so the same cause posts once, whatever
# the redeliveries, retries and replays. A key, once written, must never change its spelling.
def referral_accepted_key(referral_id: str) -> str:
    return f"referral_accepted:{referral_id}"


def outcome_recorded_key(referral_id: str, agreement_id: str) -> str:
    return f"outcome_recorded:{referral_id}:{agreement_id}"


def block_grant_key(agreement_id: str, period_label: str) -> str:
    return f"block_grant:{agreement_id}:{period_label}"


def settlement_key(settlement_id: str) -> str:
    """The journal entry of a settlement (a payment the PCN made)."""
    return f"settlement:{settlement_id}"


def settlement_request_key(pcn_id: str, organisation_id: str, reference: str, idempotency_key: str | None) -> str:
    """What makes two settlement requests the same one: their Idempotency-Key, else their remittance reference."""
    if idempotency_key:
        return f"settlement:key:{pcn_id}:{idempotency_key}"
    return f"settlement:ref:{pcn_id}:{organisation_id}:{reference}"


def payment_key(payment_id: str) -> str:
    """The accrual entry of a payment, when the cause it was posted under is not known (older events)."""
    return f"payment:{payment_id}"


def payment_reversal_key(payment_id: str) -> str:
    return f"reversal:payment:{payment_id}"


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


def agreement_in_force(
    agreements: Iterable[Agreement], pcn_id: str, organisation_id: str, on: date
) -> Agreement | None:
    """The pair's agreement covering `on`; of two, the one that started later (agreements of a pair
    never overlap once made, so this only decides between a closed one and its successor's start)."""
    covering = [a for a in agreements if (a.pcn_id, a.organisation_id) == (pcn_id, organisation_id) and a.covers(on)]
    return max(covering, key=lambda a: a.starts_on, default=None)


def terms_on(agreement: Agreement, versions: Iterable[Mapping[str, Any]], on: date) -> Agreement:
    """The agreement with the fees, statuses, grant and cap in force on `on`: of the changes that
    apply to that day, the newest (a later change may be back-dated further than an earlier one)."""
    applying = [v for v in versions if v["effective_from"] <= on]
    if not applying:
        return agreement
    return with_version(agreement, max(applying, key=lambda v: v["version"]))


def with_version(agreement: Agreement, version: Mapping[str, Any]) -> Agreement:
    """The agreement with the fees, statuses, grant and cap of one of its versions."""
    return replace(
        agreement,
        per_referral_pence=version["per_referral_pence"],
        per_outcome_pence=version["per_outcome_pence"],
        outcome_statuses=tuple(version["outcome_statuses"]),
        block_grant_pence_per_period=version["block_grant_pence_per_period"],
        cap_pence_per_year=version["cap_pence_per_year"],
    )


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


def fee(agreement: Agreement, basis: PaymentBasis, outcome_status: str | None = None) -> int:
    if basis == "referral_accepted":
        return agreement.per_referral_pence
    if basis == "outcome_recorded":
        return agreement.per_outcome_pence if outcome_status in agreement.outcome_statuses else 0
    if basis == "block_grant":
        return agreement.block_grant_pence_per_period
    raise ValueError(f"unknown basis {basis!r}")


@dataclass(frozen=True)
class OutcomeFact:
    """The newest revision the ledger has seen of one outcome of a referral."""

    outcome_id: str
    status: str
    recorded_at: datetime
    corrected_at: datetime | None = None


def qualifying_outcome(agreement: Agreement, facts: list[OutcomeFact]) -> OutcomeFact | None:
    """The outcome a referral's outcome fee is owed for: the earliest recorded whose newest
    revision has a status the agreement pays for; None when none has (then no fee is owed,
    and one accrued earlier is taken back)."""
    paying = [f for f in facts if f.status in agreement.outcome_statuses and agreement.per_outcome_pence > 0]
    return min(paying, key=lambda f: (f.recorded_at, f.outcome_id), default=None)


def correction_date(facts: list[OutcomeFact]) -> date:
    """The UK day a fee is taken back on: the newest correction (or recording) among the facts,
    so the date follows from the facts, not from when the ledger happened to read them."""
    return business_date_of(max(f.corrected_at or f.recorded_at for f in facts))


@dataclass(frozen=True)
class OutcomeFeeDecision:
    """What a referral's known outcomes make of its outcome fee: owe it (under `cause_key`, on the
    terms in force when `qualifying` was recorded), take the live fees back, or nothing."""

    cause_key: str | None = None
    terms: Agreement | None = None
    qualifying: OutcomeFact | None = None
    take_back: tuple[str, ...] = ()
    taken_back_on: date | None = None
    reason: str = ""


def outcome_fee(
    referral_id: str,
    agreement: Agreement,
    judged: list[tuple[OutcomeFact, Agreement]],
    fee_count: int,
    live_fee_ids: list[str],
) -> OutcomeFeeDecision:
    """The one rule for a referral's outcome fee (handlers.settle_outcome_fee, handlers_batch).

    `judged`: each known outcome with the agreement's terms on the day it was recorded; `fee_count`:
    outcome fees ever accrued for the referral under this agreement, `live_fee_ids` those not taken back.
    Owed once if an outcome qualifies; a fee owed again after a reversal is a new cause (`key:<n>`)."""
    candidates = [(fact, terms) for fact, terms in judged if qualifying_outcome(terms, [fact]) is not None]
    qualifying, terms = min(candidates, key=lambda c: (c[0].recorded_at, c[0].outcome_id), default=(None, agreement))
    if qualifying is not None and not live_fee_ids:
        key = outcome_recorded_key(referral_id, agreement.id)
        return OutcomeFeeDecision(key if not fee_count else f"{key}:{fee_count + 1}", terms, qualifying)
    facts = [fact for fact, _ in judged]
    if qualifying is None and live_fee_ids and facts:
        # (A fee with no outcome known here predates the outcomes table: left as it is.)
        newest = max(facts, key=lambda f: f.corrected_at or f.recorded_at)
        return OutcomeFeeDecision(
            take_back=tuple(live_fee_ids),
            taken_back_on=correction_date(facts),
            reason=f"outcome {newest.outcome_id} is now {newest.status}, which this agreement does not pay for",
        )
    return OutcomeFeeDecision()


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
    # When its cause happened (accepted_at, recorded_at): a referral's fee before its outcome fee
    # when both fall due together on the same business day. None for payments older than this field.
    caused_at: datetime | None = None

    def allocation_order(self) -> tuple[date, date, datetime, str]:
        caused_at = self.caused_at or datetime.combine(self.business_date, datetime.min.time(), timezone.utc)
        return (self.due_date, self.business_date, caused_at, self.payment_id)


@dataclass
class Allocation:
    allocations: list[tuple[str, int]] = field(default_factory=list)
    unallocated_pence: int = 0  # an overpayment: held as a credit for the organisation


def allocate_oldest_first(amount_pence: int, open_payments: list[OpenPayment]) -> Allocation:
    """Pay the earliest due first, then the earliest business date, then the earliest cause
    (its time: accepted_at before recorded_at), and only then by id."""
    assert amount_pence >= 0
    result = Allocation()
    remaining = amount_pence
    for payment in sorted(open_payments, key=OpenPayment.allocation_order):
        if remaining == 0:
            break
        take = min(remaining, payment.open_pence)
        if take > 0:
            result.allocations.append((payment.payment_id, take))
            remaining -= take
    result.unallocated_pence = remaining
    assert sum(p for _, p in result.allocations) + remaining == amount_pence
    return result


# --- block grants ---------------------------------------------------------------------------


def grant_business_date(agreement: Agreement, on: date) -> date | None:
    """The date a block grant for the period holding `on` is accrued on, or None if the agreement
    is not in force at any time in that period. A grant is owed for a whole period the agreement
    touches (no pro-rating): the first day of the period the agreement covers."""
    period = period_of(on, agreement.period)
    if agreement.starts_on > period.ends_on or (agreement.ends_on is not None and agreement.ends_on < period.starts_on):
        return None
    return max(period.starts_on, agreement.starts_on)


# --- settlements ----------------------------------------------------------------------------


def check_allocations(amount_pence: int, given: list[tuple[str, int]], open_pence_by_id: dict[str, int]) -> str | None:
    """Why allocations a finance officer gave cannot be applied, or None if they can."""
    seen: set[str] = set()
    for payment_id, pence in given:
        if payment_id in seen:
            return f"payment {payment_id} is allocated twice"
        seen.add(payment_id)
        if pence <= 0:
            return f"allocation to {payment_id} must be more than 0 pence"
        if payment_id not in open_pence_by_id:
            return f"payment {payment_id} is not an open payment of this organisation in your PCN"
        if pence > open_pence_by_id[payment_id]:
            return f"allocation of {pence} pence to {payment_id} exceeds its open {open_pence_by_id[payment_id]} pence"
    allocated = sum(p for _, p in given)
    if allocated > amount_pence:
        return f"allocations total {allocated} pence, more than the {amount_pence} pence paid"
    return None


# --- arrears --------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenItem:
    open_pence: int
    due_date: date
    business_date: date


def age_open_items(items: list[OpenItem], as_of: date) -> dict[str, int]:
    buckets = dict.fromkeys(BUCKETS, 0)
    for item in items:
        buckets[age_bucket(item.due_date, as_of)] += item.open_pence
    return buckets


def days_outstanding(items: list[OpenItem], as_of: date) -> dict[str, int | None]:
    """The charity's exposure: how long it has carried the cost of work not yet paid for, counted
    from the work's business date (not the due date): the oldest, and the pence-weighted mean."""
    live = [i for i in items if i.open_pence > 0]
    if not live:
        return {"oldest_days_outstanding": None, "weighted_days_outstanding": None}
    ages = [(max((as_of - i.business_date).days, 0), i.open_pence) for i in live]
    total_pence = sum(p for _, p in ages)
    weighted = sum(days * pence for days, pence in ages)
    return {
        "oldest_days_outstanding": max(d for d, _ in ages),
        "weighted_days_outstanding": (weighted + total_pence // 2) // total_pence,
    }  # rounded half up


# --- money formatting -----------------------------------------------------------------------

# A spreadsheet runs a cell starting with one of these as a formula (OWASP "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(text: str) -> str:
    """Text a spreadsheet shows as text: a leading ' stops `=HYPERLINK(...)` in a reference running."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def pounds(pence: int) -> str:
    """Pence as pounds with two decimals, exactly (no float): -1234 -> "-12.34"."""
    sign = "-" if pence < 0 else ""
    whole, part = divmod(abs(pence), 100)
    return f"{sign}{whole}.{part:02d}"


# --- reconciliation -------------------------------------------------------------------------

REMITTANCE_HEADER = ("paid_on", "organisation_id", "amount_pence", "reference")
MAX_REFERENCE = 140


@dataclass(frozen=True)
class RemittanceLine:
    line: int  # 1-based line number in the file, the header being line 1
    paid_on: date
    organisation_id: str
    amount_pence: int
    reference: str


@dataclass(frozen=True)
class MalformedLine:
    line: int
    reference: str | None
    error: str


# ASCII only: str.isdigit() and int() also take "١٢٣" (Arabic-Indic 123) and "²", and
# date.fromisoformat() also takes "20260401" and "2026-W14-3"; a remittance is plain YYYY-MM-DD and pence.
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_PENCE = re.compile(r"[0-9]{1,12}")
_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
FIRST_YEAR, LAST_YEAR = 2000, 2100


def parse_remittance_row(line: int, row: list[str]) -> RemittanceLine | MalformedLine:
    reference = row[3].strip() if len(row) > 3 else None
    if len(row) != len(REMITTANCE_HEADER):
        return MalformedLine(line, reference, f"expected {len(REMITTANCE_HEADER)} columns, found {len(row)}")
    paid_on_text, organisation_id, amount_text, _ = (cell.strip() for cell in row)
    try:
        if not _ISO_DATE.fullmatch(paid_on_text):
            raise ValueError
        paid_on = date.fromisoformat(paid_on_text)
    except ValueError:
        return MalformedLine(line, reference, f"paid_on {paid_on_text!r} is not an ISO date written YYYY-MM-DD")
    if not FIRST_YEAR <= paid_on.year <= LAST_YEAR:
        return MalformedLine(
            line, reference, f"paid_on {paid_on_text} is not a plausible date (years {FIRST_YEAR} to {LAST_YEAR})"
        )
    if not _PENCE.fullmatch(amount_text):
        return MalformedLine(
            line, reference, f"amount_pence {amount_text!r} is not a whole number of pence written with the digits 0-9"
        )
    amount_pence = int(amount_text)
    if amount_pence <= 0 or amount_pence > 1_000_000_000:
        return MalformedLine(line, reference, f"amount_pence {amount_pence} is out of range (1 to 1000000000)")
    if not _ID.fullmatch(organisation_id):
        return MalformedLine(line, reference, "organisation_id must be 1 to 64 letters, digits or . _ : -")
    if not reference or len(reference) > MAX_REFERENCE:
        return MalformedLine(line, reference, f"reference is empty or longer than {MAX_REFERENCE} characters")
    return RemittanceLine(line, paid_on, organisation_id, amount_pence, reference)


@dataclass(frozen=True)
class Recorded:
    """A settlement already in the ledger, as reconciliation compares it."""

    settlement_id: str
    amount_pence: int


def reconcile(
    lines: list[RemittanceLine | MalformedLine],
    recorded: dict[tuple[str, str], Recorded],
    open_by_org: dict[str, list[OpenPayment]],
) -> list[dict[str, Any]]:
    """Classify each remittance line. A line is compared first with the settlement of the same
    organisation and reference; failing that, with the organisation's open payments (lines earlier
    in the file use them up first, as posting them would).

    matched: equals a recorded settlement, or can be allocated in full to open payments.
    part_matched: a recorded settlement with another amount, or more than is open (the rest
      would be held as a credit).
    unmatched: no such settlement and nothing open for that organisation.
    duplicate: an earlier line of the file has the same organisation and reference.
    malformed: unreadable; says why.
    """
    remaining = {org: {p.payment_id: p for p in payments} for org, payments in open_by_org.items()}
    seen: dict[tuple[str, str], int] = {}
    results: list[dict[str, Any]] = []
    for item in lines:
        if isinstance(item, MalformedLine):
            results.append({"line": item.line, "reference": item.reference, "status": "malformed", "error": item.error})
            continue
        base = {
            "line": item.line,
            "reference": item.reference,
            "organisation_id": item.organisation_id,
            "amount_pence": item.amount_pence,
            "paid_on": item.paid_on.isoformat(),
        }
        key = (item.organisation_id, item.reference)
        if key in seen:
            results.append(base | {"status": "duplicate", "duplicate_of_line": seen[key]})
            continue
        seen[key] = item.line
        results.append(base | _match_one(item, recorded.get(key), remaining.setdefault(item.organisation_id, {})))
    return results


def _match_one(
    item: RemittanceLine, recorded: Recorded | None, open_payments: dict[str, OpenPayment]
) -> dict[str, Any]:
    if recorded is not None:
        if recorded.amount_pence == item.amount_pence:
            return {"status": "matched", "settlement_id": recorded.settlement_id, "recorded": True}
        return {
            "status": "part_matched",
            "settlement_id": recorded.settlement_id,
            "recorded": True,
            "recorded_amount_pence": recorded.amount_pence,
            "difference_pence": item.amount_pence - recorded.amount_pence,
        }
    allocation = allocate_oldest_first(item.amount_pence, list(open_payments.values()))
    if not allocation.allocations:
        return {"status": "unmatched", "recorded": False, "error": "no settlement with this reference and nothing open"}
    for payment_id, pence in allocation.allocations:  # later lines see what this one would use
        payment = open_payments[payment_id]
        open_payments[payment_id] = replace(payment, open_pence=payment.open_pence - pence)
    proposed = [{"payment_id": pid, "amount_pence": pence} for pid, pence in allocation.allocations]
    status = "matched" if allocation.unallocated_pence == 0 else "part_matched"
    return {
        "status": status,
        "recorded": False,
        "allocations": proposed,
        "matched_pence": item.amount_pence - allocation.unallocated_pence,
        "unmatched_pence": allocation.unallocated_pence,
    }
