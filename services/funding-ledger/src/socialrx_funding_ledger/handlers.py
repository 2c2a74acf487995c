"""How the ledger turns accepted referrals and recorded outcomes into money owed.

Events may arrive in any order: an outcome seen before its referral's acceptance waits in
`pending_outcomes` and is accrued when the acceptance arrives, so the final ledger is the same.
"""

from __future__ import annotations

from sqlalchemy import delete, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from socialrx_shared.consumer import EventConsumer
from socialrx_shared.events import OUTCOME_RECORDED, REFERRAL_ACCEPTED, Envelope, OutcomeRecorded, ReferralAccepted
from socialrx_shared.runtime import ServiceRuntime

from . import domain, ledger
from .store import accepted_referrals, agreements, pending_outcomes


async def accrue_outcome(rt: ServiceRuntime, session: AsyncSession, event: OutcomeRecorded, agreement_id: str | None) -> None:
    if agreement_id is None:
        return  # accepted outside any agreement: nothing is owed
    row = (await session.execute(select(agreements).where(agreements.c.id == agreement_id))).mappings().one()
    agreement = ledger.agreement_from_row(dict(row))
    amount = domain.fee(agreement, "outcome_recorded", event.status)
    # At most one outcome fee per referral per agreement, whichever qualifying outcome comes first.
    await ledger.accrue(rt, session, cause_key=f"outcome_recorded:{event.referral_id}:{agreement.id}",
                        agreement=agreement, basis="outcome_recorded", amount_pence=amount,
                        business_date=event.recorded_at.date(), referral_id=event.referral_id)


async def one_referral_at_a_time(session: AsyncSession, referral_id: str) -> None:
    """Two replicas may handle a referral's `referral.accepted` and its `outcome.recorded` at the same
    moment (different topics, so different partitions, so different group members). Without this
    lock each transaction misses the other's uncommitted row: the outcome is parked and never paid.
    With it the second waits for the first to commit, then sees its row (READ COMMITTED)."""
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                          {"key": f"ledger-referral:{referral_id}"})


def register(rt: ServiceRuntime) -> None:
    consumer: EventConsumer = rt.consumer

    @consumer.on(REFERRAL_ACCEPTED.topic)
    async def on_accepted(session: AsyncSession, envelope: Envelope, event: ReferralAccepted) -> None:
        await one_referral_at_a_time(session, event.referral_id)
        accepted_on = event.accepted_at.date()
        agreement = await ledger.agreement_in_force(session, event.pcn_id, event.organisation_id, accepted_on)
        inserted = await session.scalar(
            pg_insert(accepted_referrals).values(
                referral_id=event.referral_id, pcn_id=event.pcn_id, organisation_id=event.organisation_id,
                accepted_on=accepted_on, agreement_id=agreement.id if agreement else None,
            ).on_conflict_do_nothing(index_elements=["referral_id"]).returning(accepted_referrals.c.referral_id)
        )
        if inserted is None:
            return
        if agreement is not None:
            await ledger.accrue(rt, session, cause_key=f"referral_accepted:{event.referral_id}",
                                agreement=agreement, basis="referral_accepted",
                                amount_pence=domain.fee(agreement, "referral_accepted"),
                                business_date=accepted_on, referral_id=event.referral_id)
        waiting = (await session.execute(
            delete(pending_outcomes).where(pending_outcomes.c.referral_id == event.referral_id)
            .returning(pending_outcomes.c.event)
        )).scalars().all()
        for payload in sorted(waiting, key=lambda p: p["recorded_at"]):
            await accrue_outcome(rt, session, OutcomeRecorded.model_validate(payload),
                                 agreement.id if agreement else None)

    @consumer.on(OUTCOME_RECORDED.topic)
    async def on_outcome(session: AsyncSession, envelope: Envelope, event: OutcomeRecorded) -> None:
        await one_referral_at_a_time(session, event.referral_id)
        accepted = (await session.execute(
            select(accepted_referrals).where(accepted_referrals.c.referral_id == event.referral_id)
        )).mappings().first()
        if accepted is None:
            waiting = pg_insert(pending_outcomes).values(
                outcome_id=event.outcome_id, referral_id=event.referral_id, event=event.model_dump(mode="json"))
            # A correction of a waiting outcome replaces it (a higher revision); a redelivery does not.
            await session.execute(waiting.on_conflict_do_update(
                index_elements=["outcome_id"], set_={"event": waiting.excluded.event},
                where=pending_outcomes.c.event["revision"].as_integer() < waiting.excluded.event["revision"].as_integer(),
            ))
            return
        await accrue_outcome(rt, session, event, accepted["agreement_id"])
