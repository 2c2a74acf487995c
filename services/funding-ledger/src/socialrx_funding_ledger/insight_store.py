"""Reads behind the insight reports, and the reference-rate table. Reads only, but for adding a rate."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from sqlalchemy import (
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Numeric,
    String,
    Table,
    Text,
    and_,
    func,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession

from . import insight
from .store import (
    accepted_referrals,
    agreements,
    allocations,
    metadata,
    outcomes,
    payment_reversals,
    payments,
    settlements,
)

# Bank Rate on each half-year's reference day (31 December before a half-year starting 1 January,
# 30 June before one starting 1 July). Data, shipped by migration 0010 with its source; admins add more.
reference_rates = Table(
    "reference_rates",
    metadata,
    Column("half_year_starting", Date, primary_key=True),
    Column("rate_percent", Numeric(6, 2), nullable=False),
    Column("source", Text, nullable=False),
    Column("added_by", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("rate_percent >= 0 AND rate_percent < 100", name="plausible_rate"),
    CheckConstraint(
        "EXTRACT(DAY FROM half_year_starting) = 1 AND EXTRACT(MONTH FROM half_year_starting) IN (1, 7)",
        name="starts_a_half_year",
    ),
)


def _settled_on():
    """The day each payment was paid in full: its last allocation's settlement date."""
    return (
        select(allocations.c.payment_id, func.max(settlements.c.paid_on).label("settled_on"))
        .join(settlements, settlements.c.settlement_id == allocations.c.settlement_id)
        .group_by(allocations.c.payment_id)
        .subquery()
    )


async def due_payments(
    session: AsyncSession,
    *,
    due_from: date | None = None,
    due_to: date | None = None,
    pcn_ids: list[str] | None = None,
    organisation_id: str | None = None,
    pcn_id: str | None = None,
) -> list[insight.DuePayment]:
    """Payments (not taken back by a correction) with their due date and the day they were settled."""
    settled = _settled_on()
    query = (
        select(
            payments.c.pcn_id,
            payments.c.organisation_id,
            payments.c.amount_pence,
            payments.c.due_date,
            payments.c.open_pence,
            settled.c.settled_on,
        )
        .outerjoin(settled, settled.c.payment_id == payments.c.payment_id)
        .where(payments.c.reversed_pence == 0, payments.c.amount_pence > 0)
    )
    if due_from:
        query = query.where(payments.c.due_date >= due_from)
    if due_to:
        query = query.where(payments.c.due_date <= due_to)
    if pcn_id:
        query = query.where(payments.c.pcn_id == pcn_id)
    if pcn_ids is not None:
        query = query.where(payments.c.pcn_id.in_(pcn_ids))
    if organisation_id:
        query = query.where(payments.c.organisation_id == organisation_id)
    return [
        insight.DuePayment(
            r.pcn_id,
            r.organisation_id,
            int(r.amount_pence),
            r.due_date,
            r.settled_on if r.open_pence == 0 else None,
            int(r.open_pence),
        )
        for r in (await session.execute(query)).all()
    ]


async def open_on(session: AsyncSession, organisation_id: str, as_of: date, pcn_id: str | None = None) -> list[dict]:
    """The organisation's payments still (partly) unpaid at the end of `as_of`, with their part payments."""
    rows = (
        (
            await session.execute(
                select(payments)
                .outerjoin(
                    payment_reversals,
                    and_(
                        payment_reversals.c.payment_id == payments.c.payment_id,
                        payment_reversals.c.business_date <= as_of,
                    ),
                )
                .where(
                    payments.c.organisation_id == organisation_id,
                    payments.c.business_date <= as_of,
                    payments.c.amount_pence > 0,
                    payment_reversals.c.payment_id.is_(None),
                    payments.c.pcn_id == pcn_id if pcn_id else True,
                )
                .order_by(payments.c.due_date, payments.c.payment_id)
            )
        )
        .mappings()
        .all()
    )
    paid_rows = (
        await session.execute(
            select(allocations.c.payment_id, settlements.c.paid_on, allocations.c.amount_pence)
            .join(settlements, settlements.c.settlement_id == allocations.c.settlement_id)
            .where(settlements.c.organisation_id == organisation_id, settlements.c.paid_on <= as_of)
        )
    ).all()
    paid: dict[str, list[tuple[date, int]]] = {}
    for row in paid_rows:
        paid.setdefault(row.payment_id, []).append((row.paid_on, int(row.amount_pence)))
    out = []
    for row in rows:
        parts = paid.get(row["payment_id"], [])
        unpaid = int(row["amount_pence"]) - sum(p for _, p in parts)
        if unpaid > 0:
            out.append({**dict(row), "paid": parts, "unpaid_pence": unpaid})
    return out


async def rates(session: AsyncSession) -> dict[date, Decimal]:
    return {r.half_year_starting: r.rate_percent for r in (await session.execute(select(reference_rates))).all()}


async def rate_rows(session: AsyncSession) -> list[dict]:
    rows = (await session.execute(select(reference_rates).order_by(reference_rates.c.half_year_starting))).mappings()
    return [
        {
            "half_year_starting": r["half_year_starting"].isoformat(),
            "rate_percent": f"{r['rate_percent']:.2f}",
            "source": r["source"],
        }
        for r in rows
    ]


async def acceptance_counts(session: AsyncSession, organisation_id: str) -> list[dict]:
    """Per PCN: referrals the organisation accepted, how many earned an outcome fee (not taken back),
    and which are still waiting for one, with the agreement they were accepted under."""
    fee_paid = (
        select(payments.c.referral_id)
        .distinct()
        .where(payments.c.basis == "outcome_recorded", payments.c.reversed_pence == 0, payments.c.amount_pence > 0)
        .subquery()
    )
    with_outcome = select(outcomes.c.referral_id).distinct().subquery()
    rows = (
        await session.execute(
            select(
                accepted_referrals.c.pcn_id,
                accepted_referrals.c.agreement_id,
                func.count().label("accepted"),
                func.count(fee_paid.c.referral_id).label("with_fee"),
                func.count()
                .filter(and_(fee_paid.c.referral_id.is_(None), with_outcome.c.referral_id.is_(None)))
                .label("waiting"),
            )
            .outerjoin(fee_paid, fee_paid.c.referral_id == accepted_referrals.c.referral_id)
            .outerjoin(with_outcome, with_outcome.c.referral_id == accepted_referrals.c.referral_id)
            .where(accepted_referrals.c.organisation_id == organisation_id)
            .group_by(accepted_referrals.c.pcn_id, accepted_referrals.c.agreement_id)
        )
    ).all()
    agreement_rows = {
        r["id"]: dict(r)
        for r in (
            await session.execute(select(agreements).where(agreements.c.organisation_id == organisation_id))
        ).mappings()
    }
    return [
        {
            "pcn_id": r.pcn_id,
            "agreement": agreement_rows.get(r.agreement_id),
            "accepted": int(r.accepted),
            "with_fee": int(r.with_fee),
            "waiting": int(r.waiting),
        }
        for r in rows
    ]
