"""Posting to the double-entry journal, and accruing what a PCN owes. Where a payment falls due.

Accounts (per PCN and organisation):
- `expense:<pcn>`              debit when work is owed for (the PCN's social prescribing cost)
- `payable:<pcn>:<org>`        credit when owed, debit when paid: its credit balance is what is owed
- `bank:<pcn>`                 credit when the PCN pays
"""

from __future__ import annotations

import uuid
from datetime import date

from sqlalchemy import func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from socialrx_shared.events import PAYMENT_DUE, PaymentDue
from socialrx_shared.runtime import ServiceRuntime

from . import domain
from .store import agreements, journal_entries, journal_lines, payments

PAYMENT_NAMESPACE = uuid.UUID("6f1c1a52-7b1e-4c4a-9d38-5e0f0b9d8a11")


def payable_account(pcn_id: str, organisation_id: str) -> str:
    return f"payable:{pcn_id}:{organisation_id}"


async def post_entry(session: AsyncSession, cause_key: str, business_date: date, memo: str,
                     lines: list[tuple[str, int, int]]) -> int | None:
    """Post one balanced entry; None (and nothing posted) if this cause was posted before."""
    debits = sum(d for _, d, _ in lines)
    credits = sum(c for _, _, c in lines)
    assert debits == credits, f"unbalanced entry {cause_key}: debits {debits} != credits {credits}"
    assert all(d >= 0 and c >= 0 and (d == 0) != (c == 0) for _, d, c in lines), "a line is one-sided and positive"
    entry_id = await session.scalar(
        pg_insert(journal_entries).values(cause_key=cause_key, business_date=business_date, memo=memo)
        .on_conflict_do_nothing(index_elements=["cause_key"]).returning(journal_entries.c.id)
    )
    if entry_id is None:
        return None
    await session.execute(insert(journal_lines), [
        {"entry_id": entry_id, "account": account, "debit_pence": d, "credit_pence": c} for account, d, c in lines
    ])
    return entry_id


def agreement_from_row(row: dict) -> domain.Agreement:
    return domain.Agreement(
        id=row["id"], pcn_id=row["pcn_id"], organisation_id=row["organisation_id"],
        per_referral_pence=row["per_referral_pence"], per_outcome_pence=row["per_outcome_pence"],
        outcome_statuses=tuple(row["outcome_statuses"]), block_grant_pence_per_period=row["block_grant_pence_per_period"],
        cap_pence_per_year=row["cap_pence_per_year"], period=row["period"],
        days_after_period_end=row["days_after_period_end"], starts_on=row["starts_on"], ends_on=row["ends_on"],
    )


async def agreement_in_force(session: AsyncSession, pcn_id: str, organisation_id: str, on: date) -> domain.Agreement | None:
    row = (await session.execute(
        select(agreements).where(
            agreements.c.pcn_id == pcn_id, agreements.c.organisation_id == organisation_id,
            agreements.c.starts_on <= on, (agreements.c.ends_on.is_(None)) | (agreements.c.ends_on >= on),
        ).order_by(agreements.c.starts_on.desc()).limit(1)
    )).mappings().first()
    return agreement_from_row(dict(row)) if row else None


async def accrued_in_financial_year(session: AsyncSession, agreement_id: str, on: date) -> int:
    fy_start = domain.financial_year_start(on)
    total = await session.scalar(
        select(func.coalesce(func.sum(payments.c.amount_pence), 0)).where(
            payments.c.agreement_id == agreement_id, payments.c.business_date >= fy_start,
            payments.c.business_date < date(fy_start.year + 1, 4, 1))
    )
    return int(total)


async def accrue(rt: ServiceRuntime, session: AsyncSession, *, cause_key: str, agreement: domain.Agreement,
                 basis: str, amount_pence: int, business_date: date, referral_id: str | None) -> PaymentDue | None:
    """Record that the PCN owes for work done on `business_date`, and publish `payment.due`."""
    if amount_pence <= 0:
        return None
    # Serialise accruals of one agreement so two concurrent events cannot both fit under the cap.
    await session.execute(select(agreements.c.id).where(agreements.c.id == agreement.id).with_for_update())
    accrued = await accrued_in_financial_year(session, agreement.id, business_date)
    owed, refused = domain.apply_cap(amount_pence, accrued, agreement.cap_pence_per_year)
    period = domain.period_of(business_date, agreement.period)
    payment = PaymentDue(
        payment_id=str(uuid.uuid5(PAYMENT_NAMESPACE, cause_key)), agreement_id=agreement.id,
        pcn_id=agreement.pcn_id, organisation_id=agreement.organisation_id, referral_id=referral_id, basis=basis,
        amount_pence=owed, period=period.label,
        due_date=domain.due_date(business_date, agreement.period, agreement.days_after_period_end),
    )
    inserted = await session.scalar(
        pg_insert(payments).values(
            payment_id=payment.payment_id, cause_key=cause_key, agreement_id=agreement.id, pcn_id=agreement.pcn_id,
            organisation_id=agreement.organisation_id, referral_id=referral_id, basis=basis, amount_pence=owed,
            open_pence=owed, period=period.label, due_date=payment.due_date, business_date=business_date,
            refused_over_cap_pence=refused,
        ).on_conflict_do_nothing(index_elements=["cause_key"]).returning(payments.c.payment_id)
    )
    if inserted is None:
        return None  # this cause was accrued before
    if owed > 0:
        await post_entry(session, cause_key, business_date, f"{basis} {referral_id or period.label}", [
            (f"expense:{agreement.pcn_id}", owed, 0),
            (payable_account(agreement.pcn_id, agreement.organisation_id), 0, owed),
        ])
        await rt.stage(session, PAYMENT_DUE, payment)
    return payment
