"""How the directory reacts to events: referrals land in inboxes; finished referrals free a place;
referral-intake's refusals are counted for the unmet-need report."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone

from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from socialrx_shared.consumer import EventConsumer
from socialrx_shared.events import (
    OUTCOME_RECORDED,
    REFERRAL_CREATED,
    REFERRAL_REFUSED,
    Envelope,
    OutcomeRecorded,
    ReferralCreated,
    ReferralRefused,
)
from socialrx_shared.runtime import ServiceRuntime

from . import domain, emails
from .commands import capacity_changed
from .store import referral_inbox, referral_refusals
from .webhooks import enqueue_many


def register(rt: ServiceRuntime) -> None:
    consumer: EventConsumer = rt.consumer

    @consumer.on(REFERRAL_CREATED.topic)
    async def on_created(session: AsyncSession, envelope: Envelope, event: ReferralCreated) -> None:
        await on_created_many(session, [(envelope, event)])

    @consumer.on_many(REFERRAL_CREATED.topic)
    async def on_created_many(session: AsyncSession, records: list[tuple[Envelope, ReferralCreated]]) -> None:
        """Referrals land in their organisations' inboxes (the first copy of one wins), with a
        statement per table for the whole run."""
        await session.execute(
            pg_insert(referral_inbox).on_conflict_do_nothing(index_elements=["referral_id"]),
            [
                {
                    "referral_id": event.referral_id,
                    "organisation_id": event.organisation_id,
                    "service_id": event.service_id,
                    "pcn_id": event.pcn_id,
                    "needs": event.needs,
                    "age_band": event.age_band,
                    "postcode_district": event.postcode_district,
                    "accessibility_needs": event.accessibility_needs,
                    "status": domain.inbox_status(None, "referred"),
                    "referred_at": event.created_at,
                }
                for _, event in records
            ],
        )
        # The charity's webhook gets the referral exactly as it travelled on Kafka.
        await enqueue_many(session, [(event.organisation_id, envelope) for envelope, event in records])
        if rt.settings.smtp_url:  # type: ignore[attr-defined]
            await emails.enqueue_many(
                session,
                [(event.referral_id, event.organisation_id) for _, event in records],
                "arrived",
                datetime.now(timezone.utc),
            )

    @consumer.on(OUTCOME_RECORDED.topic)
    async def on_outcome(session: AsyncSession, envelope: Envelope, event: OutcomeRecorded) -> None:
        await on_outcome_many(session, [(envelope, event)])

    @consumer.on_many(OUTCOME_RECORDED.topic)
    async def on_outcome_many(session: AsyncSession, records: list[tuple[Envelope, OutcomeRecorded]]) -> None:
        """A finished referral gives its place back, once: one UPDATE for the run's referrals, one for
        their services' capacity."""
        ending = sorted({event.referral_id for _, event in records if domain.frees_a_place(event.status)})
        if not ending:
            return
        released = (
            await session.execute(
                update(referral_inbox)
                .where(
                    referral_inbox.c.referral_id.in_(ending),
                    referral_inbox.c.status == "accepted",
                    referral_inbox.c.place_released.is_(False),
                )
                .values(place_released=True, status=domain.inbox_status("accepted", "ended"))
                .returning(referral_inbox.c.service_id)
            )
        ).scalars()
        # Not ours, not accepted, or its place already given back: nothing released for it.
        for service_id, places in sorted(Counter(released).items()):
            await capacity_changed(session, service_id, places)  # its service.updated is coalesced with others

    @consumer.on(REFERRAL_REFUSED.topic)
    async def on_refused(session: AsyncSession, envelope: Envelope, event: ReferralRefused) -> None:
        await session.execute(
            pg_insert(referral_refusals)
            .values(
                refusal_id=event.refusal_id,
                pcn_id=event.pcn_id,
                organisation_id=event.organisation_id,
                service_id=event.service_id,
                needs=event.needs,
                age_band=event.age_band,
                postcode_district=event.postcode_district,
                reason=event.reason,
                refused_at=event.refused_at,
            )
            .on_conflict_do_nothing(index_elements=["refusal_id"])
        )
