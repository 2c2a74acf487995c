"""How outcomes reacts to events: its view of referrals, built from events that may come in any order.
(Recording and correcting outcomes are commands: commands.py.)"""

from __future__ import annotations

from sqlalchemy import case
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from socialrx_shared.consumer import EventConsumer
from socialrx_shared.events import (
    REFERRAL_ACCEPTED,
    REFERRAL_CREATED,
    REFERRAL_DECLINED,
    Envelope,
    ReferralAccepted,
    ReferralCreated,
    ReferralDeclined,
)
from socialrx_shared.runtime import ServiceRuntime

from . import domain
from .store import referral_view


def register(rt: ServiceRuntime) -> None:
    consumer: EventConsumer = rt.consumer

    @consumer.on(REFERRAL_CREATED.topic)
    async def on_created(session: AsyncSession, envelope: Envelope, event: ReferralCreated) -> None:
        await on_created_many(session, [(envelope, event)])

    @consumer.on_many(REFERRAL_CREATED.topic)
    async def on_created_many(session: AsyncSession, records: list[tuple[Envelope, ReferralCreated]]) -> None:
        """One upsert for the run: a later copy of a referral fills in the details as its upsert one by
        one would (the last wins), so each referral is sent once, as its last copy."""
        last = {event.referral_id: event for _, event in records}
        rows = [
            {
                "referral_id": event.referral_id,
                "status": domain.referral_status(None, "created"),
                "pcn_id": event.pcn_id,
                "practice_id": event.practice_id,
                "link_worker_id": event.link_worker_id,
                "organisation_id": event.organisation_id,
                "service_id": event.service_id,
                "needs": event.needs,
                "age_band": event.age_band,
                "postcode_district": event.postcode_district,
                "accessibility_needs": event.accessibility_needs,
                "created_at": event.created_at,
            }
            for event in last.values()
        ]
        statement = pg_insert(referral_view)
        # A decision seen first already set the status (domain.referral_status): the creation only fills in
        # the details.
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=["referral_id"],
                set_={k: statement.excluded[k] for k in rows[0] if k not in ("referral_id", "status")},
            ),
            rows,
        )

    async def decided(
        session: AsyncSession,
        events: list[ReferralAccepted] | list[ReferralDeclined],
        status: domain.ReferralStatus,
    ) -> None:
        """One upsert per run of decisions: each row's status is worked out in the statement (no read
        first); the CASE is the domain rule written out for every status the row may hold."""
        if len({event.referral_id for event in events}) < len(events):
            for event in events:  # a referral twice in the run: its copies in order, as one by one
                await decided(session, [event], status)  # type: ignore[arg-type]
            return
        at_column = "accepted_at" if status == "accepted" else "declined_at"
        rows = [
            {
                "referral_id": event.referral_id,
                "status": domain.referral_status(None, status),
                "pcn_id": event.pcn_id,
                "organisation_id": event.organisation_id,
                "service_id": event.service_id,
                at_column: event.accepted_at if isinstance(event, ReferralAccepted) else event.declined_at,
                **({"decline_reason": event.reason} if isinstance(event, ReferralDeclined) else {}),
            }
            for event in events
        ]
        statement = pg_insert(referral_view)
        next_status = case(
            {current: domain.referral_status(current, status) for current in domain.REFERRAL_STATUSES},
            value=referral_view.c.status,
            else_=referral_view.c.status,
        )
        changed = [k for k in rows[0] if k not in ("referral_id", "status")]
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=["referral_id"],
                set_={**{k: statement.excluded[k] for k in changed}, "status": next_status},
            ),
            rows,
        )

    @consumer.on(REFERRAL_ACCEPTED.topic)
    async def on_accepted(session: AsyncSession, envelope: Envelope, event: ReferralAccepted) -> None:
        await decided(session, [event], "accepted")

    @consumer.on_many(REFERRAL_ACCEPTED.topic)
    async def on_accepted_many(session: AsyncSession, records: list[tuple[Envelope, ReferralAccepted]]) -> None:
        await decided(session, [event for _, event in records], "accepted")

    @consumer.on(REFERRAL_DECLINED.topic)
    async def on_declined(session: AsyncSession, envelope: Envelope, event: ReferralDeclined) -> None:
        await decided(session, [event], "declined")

    @consumer.on_many(REFERRAL_DECLINED.topic)
    async def on_declined_many(session: AsyncSession, records: list[tuple[Envelope, ReferralDeclined]]) -> None:
        await decided(session, [event for _, event in records], "declined")
