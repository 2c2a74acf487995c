"""Posting to the double-entry journal, and accruing what a PCN owes. Where a payment falls due.

Accounts (per PCN and organisation):
- `expense:<pcn>`              debit when work is owed for (the PCN's social prescribing cost)
- `payable:<pcn>:<org>`        credit when owed, debit when paid: its credit balance is what is owed
- `bank:<pcn>`                 credit when the PCN pays
- `credit:<pcn>:<org>`         debit when the PCN pays more than is open: a credit held for the
                               organisation (its debit balance), never lost

Every event this ledger publishes carries its cause in a Kafka header (`ledger-cause-key`); with
`payment.due`'s `business_date` and `refused_over_cap_pence`, that is all a rebuild from the
ledger's own topics needs (see rebuild.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from socialrx_shared.events import (
    PAYMENT_DUE,
    PAYMENT_REVERSED,
    PAYMENT_SETTLED,
    EventSpec,
    PaymentBasis,
    PaymentDue,
    PaymentReversed,
    PaymentSettled,
    Strict,
)
from socialrx_shared.runtime import ServiceRuntime

from . import domain
from .projection import Movements
from .store import (
    agreement_versions,
    agreements,
    allocations,
    journal_entries,
    journal_lines,
    payment_reversals,
    payments,
    settlements,
)

PAYMENT_NAMESPACE = uuid.UUID("6f1c1a52-7b1e-4c4a-9d38-5e0f0b9d8a11")


# The account names live in domain.py; these two stay reachable here for the ledger's readers.
payable_account = domain.payable_account
credit_account = domain.credit_account


HEADER_CAUSE = "ledger-cause-key"


class LedgerBroken(RuntimeError):
    """A money invariant would break: the transaction is rolled back. Raised, never asserted,
    so `python -O` cannot turn the check off."""


async def stage(
    rt: ServiceRuntime | None, session: AsyncSession, spec: EventSpec, data: Strict, ledger_headers: dict[str, str]
) -> None:
    """The shared outbox `stage`, with the ledger's own headers. `rt` None (a rebuild) publishes nothing."""
    if rt is not None:
        await rt.stage(session, spec, data, headers=ledger_headers)


def check_lines(cause_key: str, lines: list[tuple[str, int, int]]) -> None:
    """An entry's lines balance, and each is one-sided and positive (also for ledger_batch)."""
    debits = sum(d for _, d, _ in lines)
    credits = sum(c for _, _, c in lines)
    if debits != credits:
        raise LedgerBroken(f"unbalanced entry {cause_key}: debits {debits} != credits {credits}")
    if not all(d >= 0 and c >= 0 and (d == 0) != (c == 0) for _, d, c in lines):
        raise LedgerBroken(f"entry {cause_key}: every line must be one-sided and positive")


async def post_entry(
    session: AsyncSession, cause_key: str, business_date: date, memo: str, lines: list[tuple[str, int, int]]
) -> int | None:
    """Post one balanced entry; None (and nothing posted) if this cause was posted before."""
    check_lines(cause_key, lines)
    entry_id = await session.scalar(
        pg_insert(journal_entries)
        .values(cause_key=cause_key, business_date=business_date, memo=memo)
        .on_conflict_do_nothing(index_elements=["cause_key"])
        .returning(journal_entries.c.id)
    )
    if entry_id is None:
        return None
    await session.execute(
        insert(journal_lines),
        [{"entry_id": entry_id, "account": account, "debit_pence": d, "credit_pence": c} for account, d, c in lines],
    )
    return entry_id


def agreement_from_row(row: dict) -> domain.Agreement:
    return domain.Agreement(
        id=row["id"],
        pcn_id=row["pcn_id"],
        organisation_id=row["organisation_id"],
        per_referral_pence=row["per_referral_pence"],
        per_outcome_pence=row["per_outcome_pence"],
        outcome_statuses=tuple(row["outcome_statuses"]),
        block_grant_pence_per_period=row["block_grant_pence_per_period"],
        cap_pence_per_year=row["cap_pence_per_year"],
        period=row["period"],
        days_after_period_end=row["days_after_period_end"],
        starts_on=row["starts_on"],
        ends_on=row["ends_on"],
    )


async def agreement_in_force(
    session: AsyncSession, pcn_id: str, organisation_id: str, on: date
) -> domain.Agreement | None:
    """The pair's agreements, read; the one in force chosen by `domain.agreement_in_force`."""
    rows = (
        (
            await session.execute(
                select(agreements).where(
                    agreements.c.pcn_id == pcn_id,
                    agreements.c.organisation_id == organisation_id,
                    agreements.c.starts_on <= on,
                )
            )
        )
        .mappings()
        .all()
    )
    return domain.agreement_in_force((agreement_from_row(dict(r)) for r in rows), pcn_id, organisation_id, on)


async def terms_on(session: AsyncSession, agreement: domain.Agreement, on: date) -> domain.Agreement:
    """The agreement's changes that apply by `on`, read; the terms chosen by `domain.terms_on`."""
    versions = (
        (
            await session.execute(
                select(agreement_versions).where(
                    agreement_versions.c.agreement_id == agreement.id, agreement_versions.c.effective_from <= on
                )
            )
        )
        .mappings()
        .all()
    )
    return domain.terms_on(agreement, versions, on)


async def accrued_in_financial_year(session: AsyncSession, agreement_id: str, on: date) -> int:
    fy_start = domain.financial_year_start(on)
    total = await session.scalar(
        # A payment taken back no longer counts against the cap.
        select(func.coalesce(func.sum(payments.c.amount_pence - payments.c.reversed_pence), 0)).where(
            payments.c.agreement_id == agreement_id,
            payments.c.business_date >= fy_start,
            payments.c.business_date < date(fy_start.year + 1, 4, 1),
        )
    )
    return int(total)


async def accrue(
    rt: ServiceRuntime,
    session: AsyncSession,
    *,
    cause_key: str,
    agreement: domain.Agreement,
    basis: PaymentBasis,
    amount_pence: int,
    business_date: date,
    referral_id: str | None,
    caused_at: datetime | None = None,
) -> PaymentDue | None:
    """Record that the PCN owes for work done on `business_date`, and publish `payment.due`."""
    if amount_pence <= 0:
        return None
    owed, refused = amount_pence, 0
    if agreement.cap_pence_per_year is not None:
        # Serialise accruals of one capped agreement so two concurrent events cannot both fit
        # under the cap. Uncapped agreements need neither the lock nor the year's sum.
        await session.execute(select(agreements.c.id).where(agreements.c.id == agreement.id).with_for_update())
        accrued = await accrued_in_financial_year(session, agreement.id, business_date)
        owed, refused = domain.apply_cap(amount_pence, accrued, agreement.cap_pence_per_year)
    payment = payment_due(cause_key, agreement, basis, owed, refused, business_date, referral_id, caused_at)
    recorded = await record_payment(
        rt, session, payment, cause_key=cause_key, business_date=business_date, refused_over_cap_pence=refused
    )
    return payment if recorded else None


def payment_due(
    cause_key: str,
    agreement: domain.Agreement,
    basis: PaymentBasis,
    owed_pence: int,
    refused_pence: int,
    business_date: date,
    referral_id: str | None,
    caused_at: datetime | None,
) -> PaymentDue:
    """The payment an accrual owes (its id follows from its cause), for `accrue` and handlers_batch."""
    return PaymentDue(
        payment_id=str(uuid.uuid5(PAYMENT_NAMESPACE, cause_key)),
        agreement_id=agreement.id,
        pcn_id=agreement.pcn_id,
        organisation_id=agreement.organisation_id,
        referral_id=referral_id,
        basis=basis,
        amount_pence=owed_pence,
        period=domain.period_of(business_date, agreement.period).label,
        due_date=domain.due_date(business_date, agreement.period, agreement.days_after_period_end),
        business_date=business_date,
        refused_over_cap_pence=refused_pence,
        caused_at=caused_at,
    )


async def record_payment(
    rt: ServiceRuntime | None,
    session: AsyncSession,
    payment: PaymentDue,
    *,
    cause_key: str,
    business_date: date,
    refused_over_cap_pence: int,
) -> bool:
    """Post one payment due (live, or replayed by a rebuild); False if its cause was recorded before.

    A payment wholly refused by the cap is still recorded (0 owed) and published, so the refusal
    is reported and survives a rebuild; it posts no journal entry (an entry of 0 is no entry)."""
    inserted = await session.scalar(
        pg_insert(payments)
        .values(
            payment_id=payment.payment_id,
            cause_key=cause_key,
            agreement_id=payment.agreement_id,
            pcn_id=payment.pcn_id,
            organisation_id=payment.organisation_id,
            referral_id=payment.referral_id,
            basis=payment.basis,
            amount_pence=payment.amount_pence,
            open_pence=payment.amount_pence,
            period=payment.period,
            due_date=payment.due_date,
            business_date=business_date,
            caused_at=payment.caused_at,
            refused_over_cap_pence=refused_over_cap_pence,
        )
        .on_conflict_do_nothing(index_elements=["cause_key"])
        .returning(payments.c.payment_id)
    )
    if inserted is None:
        return False  # this cause was accrued before
    if payment.amount_pence > 0:
        posted = await post_entry(
            session,
            cause_key,
            business_date,
            f"{payment.basis} {payment.referral_id or payment.period}",
            [
                (domain.expense_account(payment.pcn_id), payment.amount_pence, 0),
                (payable_account(payment.pcn_id, payment.organisation_id), 0, payment.amount_pence),
            ],
        )
        if posted is None:
            raise LedgerBroken(f"journal already holds {cause_key} but payments did not")
        moves = Movements.new()
        moves.accrued(payment.pcn_id, payment.organisation_id, payment.due_date, business_date, payment.amount_pence)
        await moves.write(session)  # the reports' projections, in this same transaction
    await stage(rt, session, PAYMENT_DUE, payment, {HEADER_CAUSE: cause_key})
    return True


async def accrue_block_grant(
    rt: ServiceRuntime, session: AsyncSession, agreement: domain.Agreement, on: date
) -> PaymentDue | None:
    """The block grant of the period holding `on`, once per agreement and period, whenever asked."""
    business_date = domain.grant_business_date(agreement, on)
    if business_date is None:
        return None
    agreement = await terms_on(session, agreement, business_date)
    period = domain.period_of(on, agreement.period)
    return await accrue(
        rt,
        session,
        cause_key=domain.block_grant_key(agreement.id, period.label),
        agreement=agreement,
        basis="block_grant",
        amount_pence=agreement.block_grant_pence_per_period,
        business_date=business_date,
        referral_id=None,
    )


async def record_settlement(
    rt: ServiceRuntime | None, session: AsyncSession, settled: PaymentSettled, *, cause_key: str
) -> bool:
    """Record a payment from the PCN, its allocations and its held credit; False if recorded before.

    The caller has checked the allocations against open payments (and locked them)."""
    allocated_pence = sum(a.amount_pence for a in settled.allocations)
    unallocated_pence = settled.amount_pence - allocated_pence
    if unallocated_pence < 0:
        raise LedgerBroken(f"settlement {settled.settlement_id}: allocations exceed the amount paid")
    inserted = await session.scalar(
        pg_insert(settlements)
        .values(
            settlement_id=settled.settlement_id,
            cause_key=cause_key,
            pcn_id=settled.pcn_id,
            organisation_id=settled.organisation_id,
            amount_pence=settled.amount_pence,
            unallocated_pence=unallocated_pence,
            paid_on=settled.paid_on,
            reference=settled.reference,
        )
        .on_conflict_do_nothing()
        .returning(settlements.c.settlement_id)
    )
    if inserted is None:
        return False
    moves = Movements.new()
    moves.settled(settled.pcn_id, settled.organisation_id, settled.paid_on, settled.amount_pence, unallocated_pence)
    for allocation in settled.allocations:
        reduced = (
            await session.execute(
                update(payments)
                .where(
                    payments.c.payment_id == allocation.payment_id,
                    payments.c.organisation_id == settled.organisation_id,
                    payments.c.pcn_id == settled.pcn_id,
                    payments.c.open_pence >= allocation.amount_pence,
                )
                .values(open_pence=payments.c.open_pence - allocation.amount_pence)
                .returning(payments.c.due_date, payments.c.business_date)
            )
        ).first()
        if reduced is None:
            raise LedgerBroken(f"allocation to {allocation.payment_id} does not fit its open amount")
        moves.allocated(
            settled.pcn_id,
            settled.organisation_id,
            reduced.due_date,
            reduced.business_date,
            settled.paid_on,
            allocation.amount_pence,
        )
    await moves.write(session)  # the reports' projections, in this same transaction
    if settled.allocations:
        await session.execute(
            insert(allocations),
            [
                {"settlement_id": settled.settlement_id, "payment_id": a.payment_id, "amount_pence": a.amount_pence}
                for a in settled.allocations
            ],
        )
    lines = [(domain.bank_account(settled.pcn_id), 0, settled.amount_pence)]
    if allocated_pence:
        lines.append((payable_account(settled.pcn_id, settled.organisation_id), allocated_pence, 0))
    if unallocated_pence:
        lines.append((credit_account(settled.pcn_id, settled.organisation_id), unallocated_pence, 0))
    await post_entry(
        session, domain.settlement_key(settled.settlement_id), settled.paid_on, f"payment {settled.reference}", lines
    )
    await stage(rt, session, PAYMENT_SETTLED, settled, {HEADER_CAUSE: cause_key})
    return True


async def reverse_payment(
    rt: ServiceRuntime, session: AsyncSession, payment_id: str, *, business_date: date, reason: str
) -> PaymentReversed | None:
    """Take a whole payment back (a correction changed what is owed): what was still open is no
    longer owed; what had been paid is held as a credit for the organisation. None if it was
    taken back before."""
    row = (
        (await session.execute(select(payments).where(payments.c.payment_id == payment_id).with_for_update()))
        .mappings()
        .one()
    )
    if row["reversed_pence"] or await session.scalar(
        select(payment_reversals.c.payment_id).where(payment_reversals.c.payment_id == payment_id)
    ):
        return None
    reversed_ = reversal_of(row, business_date, reason)
    recorded = await record_reversal(rt, session, reversed_, cause_key=domain.payment_reversal_key(payment_id))
    return reversed_ if recorded else None


def reversal_of(payment: Mapping[str, Any], business_date: date, reason: str) -> PaymentReversed:
    """A whole payment taken back: its open part cancelled, its paid part held as credit."""
    return PaymentReversed(
        payment_id=payment["payment_id"],
        agreement_id=payment["agreement_id"],
        pcn_id=payment["pcn_id"],
        organisation_id=payment["organisation_id"],
        referral_id=payment["referral_id"],
        basis=payment["basis"],
        reversed_pence=payment["amount_pence"],
        open_cancelled_pence=payment["open_pence"],
        overpaid_pence=payment["amount_pence"] - payment["open_pence"],
        business_date=business_date,
        reason=reason,
    )


async def record_reversal(
    rt: ServiceRuntime | None, session: AsyncSession, event: PaymentReversed, *, cause_key: str
) -> bool:
    """Post a payment's reversal (live, or replayed by a rebuild): a new entry with the accrual's
    lines on the other side, the paid part moved to the organisation's credit. False if recorded before."""
    inserted = await session.scalar(
        pg_insert(payment_reversals)
        .values(
            payment_id=event.payment_id,
            cause_key=cause_key,
            pcn_id=event.pcn_id,
            organisation_id=event.organisation_id,
            reversed_pence=event.reversed_pence,
            open_cancelled_pence=event.open_cancelled_pence,
            overpaid_pence=event.overpaid_pence,
            business_date=event.business_date,
            reason=event.reason,
        )
        .on_conflict_do_nothing()
        .returning(payment_reversals.c.payment_id)
    )
    if inserted is None:
        return False
    changed = (
        await session.execute(
            update(payments)
            .where(
                payments.c.payment_id == event.payment_id,
                payments.c.reversed_pence == 0,
                payments.c.amount_pence == event.reversed_pence,
                payments.c.open_pence == event.open_cancelled_pence,
            )
            .values(reversed_pence=event.reversed_pence, open_pence=0)
            .returning(payments.c.due_date, payments.c.business_date)
        )
    ).first()
    if changed is None:
        raise LedgerBroken(f"reversal of {event.payment_id} does not match the payment's amount and open amount")
    moves = Movements.new()
    moves.reversed(
        event.pcn_id,
        event.organisation_id,
        changed.due_date,
        changed.business_date,
        event.business_date,
        event.reversed_pence,
        event.open_cancelled_pence,
        event.overpaid_pence,
    )
    await moves.write(session)  # the reports' projections, in this same transaction
    if event.reversed_pence:
        lines = [(domain.expense_account(event.pcn_id), 0, event.reversed_pence)]
        if event.open_cancelled_pence:
            lines.append((payable_account(event.pcn_id, event.organisation_id), event.open_cancelled_pence, 0))
        if event.overpaid_pence:
            lines.append((credit_account(event.pcn_id, event.organisation_id), event.overpaid_pence, 0))
        await post_entry(
            session,
            cause_key,
            event.business_date,
            f"reverses {event.basis} {event.referral_id or event.payment_id}: {event.reason}",
            lines,
        )
    await stage(rt, session, PAYMENT_REVERSED, event, {HEADER_CAUSE: cause_key})
    return True
