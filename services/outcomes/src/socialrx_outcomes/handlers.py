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
        fields = {
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
        statement = pg_insert(referral_view).values(
            referral_id=event.referral_id, status=domain.referral_status(None, "created"), **fields
        )
        # A decision seen first already set the status (domain.referral_status): the creation only fills in
        # the details.
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=["referral_id"], set_={k: statement.excluded[k] for k in fields}
            )
        )

    async def decided(
        session: AsyncSession,
        event: ReferralAccepted | ReferralDeclined,
        status: domain.ReferralStatus,
        **extra: object,
    ) -> None:
        at_column = "accepted_at" if status == "accepted" else "declined_at"
        at = event.accepted_at if status == "accepted" else event.declined_at  # type: ignore[union-attr]
        values = {
            "pcn_id": event.pcn_id,
            "organisation_id": event.organisation_id,
            "service_id": event.service_id,
            at_column: at,
            **extra,
        }
        statement = pg_insert(referral_view).values(
            referral_id=event.referral_id, status=domain.referral_status(None, status), **values
        )
        # The row's status is worked out in the same statement (no read first); the CASE is the domain rule
        # written out for every status the row may hold.
        next_status = case(
            {current: domain.referral_status(current, status) for current in domain.REFERRAL_STATUSES},
            value=referral_view.c.status,
            else_=referral_view.c.status,
        )
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=["referral_id"],
                set_={**{k: statement.excluded[k] for k in values}, "status": next_status},
            )
        )

    @consumer.on(REFERRAL_ACCEPTED.topic)
    async def on_accepted(session: AsyncSession, envelope: Envelope, event: ReferralAccepted) -> None:
        await decided(session, event, "accepted")

    @consumer.on(REFERRAL_DECLINED.topic)
    async def on_declined(session: AsyncSession, envelope: Envelope, event: ReferralDeclined) -> None:
        await decided(session, event, "declined", decline_reason=event.reason)
