"""How the ledger turns accepted referrals and recorded outcomes into money owed.

Events may arrive in any order and more than once. The ledger keeps the facts it has seen (every
accepted referral, with or without an agreement; the newest revision of every outcome) and decides
each referral's outcome fee from those facts alone, so any order of the same facts gives the same
money owed: an outcome seen before its acceptance waits in `outcomes` until the acceptance; a
correction that stops an outcome qualifying takes its fee back (a reversing entry, `payment.reversed`);
one that makes it qualify again owes it again (a new payment).
"""

from __future__ import annotations

import functools

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from socialrx_shared.consumer import EventConsumer
from socialrx_shared.events import (
    ORGANISATION_REGISTERED,
    OUTCOME_RECORDED,
    REFERRAL_ACCEPTED,
    SERVICE_UPDATED,
    Envelope,
    OrganisationRegistered,
    OutcomeRecorded,
    ReferralAccepted,
    ServiceUpdated,
)
from socialrx_shared.runtime import ServiceRuntime

from . import domain, handlers_batch, ledger
from .store import accepted_referrals, agreements, organisations, outcomes, payment_reversals, payments


def _fact(event: OutcomeRecorded) -> domain.OutcomeFact:
    return domain.OutcomeFact(event.outcome_id, event.status, event.recorded_at, event.corrected_at)


async def settle_outcome_fee(rt: ServiceRuntime, session: AsyncSession, referral_id: str) -> None:
    """Make the referral's outcome fee what its known outcomes say it is: owed once if one of them
    qualifies under the agreement the referral was accepted under, else not owed (taken back)."""
    accepted = (
        (await session.execute(select(accepted_referrals).where(accepted_referrals.c.referral_id == referral_id)))
        .mappings()
        .first()
    )
    if accepted is None or accepted["agreement_id"] is None:
        return  # not accepted yet (the outcomes wait), or accepted outside any agreement: nothing owed
    row = (
        (await session.execute(select(agreements).where(agreements.c.id == accepted["agreement_id"]))).mappings().one()
    )
    agreement = ledger.agreement_from_row(dict(row))
    events = (
        (await session.execute(select(outcomes.c.event).where(outcomes.c.referral_id == referral_id))).scalars().all()
    )
    facts = [_fact(OutcomeRecorded.model_validate(e)) for e in events]
    fees = (
        await session.execute(
            select(payments.c.payment_id, payment_reversals.c.payment_id.label("reversed"))
            .outerjoin(payment_reversals, payment_reversals.c.payment_id == payments.c.payment_id)
            .where(
                payments.c.referral_id == referral_id,
                payments.c.agreement_id == agreement.id,
                payments.c.basis == "outcome_recorded",
            )
            .order_by(payments.c.created_at, payments.c.payment_id)
        )
    ).all()
    # Each outcome is judged by the terms in force on the day it was recorded.
    judged = [
        (fact, await ledger.terms_on(session, agreement, domain.business_date_of(fact.recorded_at))) for fact in facts
    ]
    decision = domain.outcome_fee(
        referral_id, agreement, judged, len(fees), [fee.payment_id for fee in fees if fee.reversed is None]
    )
    if decision.qualifying is not None:
        assert decision.cause_key is not None and decision.terms is not None
        await ledger.accrue(
            rt,
            session,
            cause_key=decision.cause_key,
            agreement=decision.terms,
            basis="outcome_recorded",
            amount_pence=decision.terms.per_outcome_pence,
            business_date=domain.business_date_of(decision.qualifying.recorded_at),
            referral_id=referral_id,
            caused_at=decision.qualifying.recorded_at,
        )
    for payment_id in decision.take_back:
        assert decision.taken_back_on is not None
        await ledger.reverse_payment(
            rt, session, payment_id, business_date=decision.taken_back_on, reason=decision.reason
        )


async def learn_organisation(
    session: AsyncSession, organisation_id: str, learnt_from: str, name: str | None = None
) -> None:
    """Remember that the directory has this organisation (idempotent; a registration's name wins)."""
    known = pg_insert(organisations).values(organisation_id=organisation_id, name=name, learnt_from=learnt_from)
    if name is None:
        await session.execute(known.on_conflict_do_nothing(index_elements=["organisation_id"]))
    else:
        await session.execute(
            known.on_conflict_do_update(
                index_elements=["organisation_id"], set_={"name": name, "learnt_from": learnt_from}
            )
        )


async def on_accepted(rt: ServiceRuntime, session: AsyncSession, event: ReferralAccepted) -> None:
    await learn_organisation(session, event.organisation_id, "referral.accepted")
    accepted_on = domain.business_date_of(event.accepted_at)  # the UK day, not the UTC one
    agreement = await ledger.agreement_in_force(session, event.pcn_id, event.organisation_id, accepted_on)
    # Kept even when no agreement covers it: an agreement made later, back-dated, may.
    inserted = await session.scalar(
        pg_insert(accepted_referrals)
        .values(
            referral_id=event.referral_id,
            pcn_id=event.pcn_id,
            organisation_id=event.organisation_id,
            accepted_on=accepted_on,
            accepted_at=event.accepted_at,
            agreement_id=agreement.id if agreement else None,
        )
        .on_conflict_do_nothing(index_elements=["referral_id"])
        .returning(accepted_referrals.c.referral_id)
    )
    if inserted is None:
        return
    if agreement is not None:
        await accrue_referral_fee(rt, session, agreement, event.referral_id, accepted_on, event.accepted_at)
    await settle_outcome_fee(rt, session, event.referral_id)  # outcomes that came first


async def accrue_referral_fee(
    rt: ServiceRuntime, session: AsyncSession, agreement: domain.Agreement, referral_id: str, accepted_on, accepted_at
) -> None:
    terms = await ledger.terms_on(session, agreement, accepted_on)
    await ledger.accrue(
        rt,
        session,
        cause_key=domain.referral_accepted_key(referral_id),
        agreement=terms,
        basis="referral_accepted",
        amount_pence=domain.fee(terms, "referral_accepted"),
        business_date=accepted_on,
        referral_id=referral_id,
        caused_at=accepted_at,
    )


async def cover_past_work(rt: ServiceRuntime, session: AsyncSession, agreement: domain.Agreement) -> dict[str, int]:
    """A back-dated (or extended) agreement covers the referrals accepted inside its dates that no
    agreement covered, oldest first (the cap sees them in the order the work was done): their
    referral fees, and the outcome fees their known outcomes earn. Once each: a covered referral
    is no longer uncovered, and every fee is keyed by its cause."""
    query = select(accepted_referrals).where(
        accepted_referrals.c.pcn_id == agreement.pcn_id,
        accepted_referrals.c.organisation_id == agreement.organisation_id,
        accepted_referrals.c.agreement_id.is_(None),
        accepted_referrals.c.accepted_on >= agreement.starts_on,
    )
    if agreement.ends_on is not None:
        query = query.where(accepted_referrals.c.accepted_on <= agreement.ends_on)
    rows = (
        (
            await session.execute(
                query.order_by(
                    accepted_referrals.c.accepted_on, accepted_referrals.c.accepted_at, accepted_referrals.c.referral_id
                ).with_for_update()
            )
        )
        .mappings()
        .all()
    )
    outcome_fees = 0
    for row in rows:
        await session.execute(
            update(accepted_referrals)
            .where(accepted_referrals.c.referral_id == row["referral_id"])
            .values(agreement_id=agreement.id)
        )
        await accrue_referral_fee(rt, session, agreement, row["referral_id"], row["accepted_on"], row["accepted_at"])
        before = await _outcome_fee_count(session, row["referral_id"])
        await settle_outcome_fee(rt, session, row["referral_id"])
        outcome_fees += await _outcome_fee_count(session, row["referral_id"]) - before
    return {"referrals": len(rows), "outcome_fees": outcome_fees}


async def _outcome_fee_count(session: AsyncSession, referral_id: str) -> int:
    return await session.scalar(
        select(func.count())
        .select_from(payments)
        .where(payments.c.referral_id == referral_id, payments.c.basis == "outcome_recorded")
    )


async def on_outcome(rt: ServiceRuntime, session: AsyncSession, event: OutcomeRecorded) -> None:
    seen = pg_insert(outcomes).values(
        outcome_id=event.outcome_id,
        referral_id=event.referral_id,
        revision=event.revision,
        event=event.model_dump(mode="json"),
    )
    # The newest revision wins; a redelivery or an older revision arriving late changes nothing.
    changed = await session.scalar(
        seen.on_conflict_do_update(
            index_elements=["outcome_id"],
            set_={"revision": seen.excluded.revision, "event": seen.excluded.event},
            where=outcomes.c.revision < seen.excluded.revision,
        ).returning(outcomes.c.outcome_id)
    )
    if changed is not None:
        await settle_outcome_fee(rt, session, event.referral_id)


async def one_referral_at_a_time(session: AsyncSession, referral_id: str) -> None:
    """Two replicas may handle a referral's `referral.accepted` and its `outcome.recorded` at the same
    moment (different topics, so different partitions, so different group members). Without this
    lock each transaction misses the other's uncommitted row: the outcome is parked and never paid.
    With it the second waits for the first to commit, then sees its row (READ COMMITTED)."""
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": f"ledger-referral:{referral_id}"}
    )


# Records per consumed batch: a set-based batch costs about the same number of statements at any size.
LEDGER_BATCH_RECORDS = 1000

# Taken by each consumed batch and by the commands that decide fees (agreements covering past work).
BATCH_LOCK = "ledger-consumer-batch"


def register(rt: ServiceRuntime) -> None:
    consumer: EventConsumer = rt.consumer
    # Accruals of one organisation add to the same projection rows and, when capped, lock the same
    # agreement: two replicas' batches would deadlock on them (`make chaos` saw 109 in 15 minutes).
    consumer.batch_lock = BATCH_LOCK
    # A batch's accepted referrals and outcomes decided in memory and written set-based; the handlers
    # below stay for the records of a failed batch, applied one by one.
    consumer.batch_handler = functools.partial(handlers_batch.apply, rt)
    consumer.max_batch = LEDGER_BATCH_RECORDS

    @consumer.on(REFERRAL_ACCEPTED.topic)
    async def accepted(session: AsyncSession, envelope: Envelope, event: ReferralAccepted) -> None:
        await one_referral_at_a_time(session, event.referral_id)
        await on_accepted(rt, session, event)

    @consumer.on(OUTCOME_RECORDED.topic)
    async def outcome(session: AsyncSession, envelope: Envelope, event: OutcomeRecorded) -> None:
        await one_referral_at_a_time(session, event.referral_id)
        await on_outcome(rt, session, event)

    @consumer.on(ORGANISATION_REGISTERED.topic)
    async def registered(session: AsyncSession, envelope: Envelope, event: OrganisationRegistered) -> None:
        await learn_organisation(session, event.organisation_id, "organisation.registered", event.name)

    @consumer.on(SERVICE_UPDATED.topic)
    async def service_updated(session: AsyncSession, envelope: Envelope, event: ServiceUpdated) -> None:
        # Organisations added before organisation.registered existed are learnt from their services.
        await learn_organisation(session, event.organisation_id, "service.updated")
