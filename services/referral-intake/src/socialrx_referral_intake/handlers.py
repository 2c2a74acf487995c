"""How referral-intake reacts to other services' events. Where a referral's status changes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from socialrx_shared.consumer import EventConsumer
from socialrx_shared.events import (
    OUTCOME_RECORDED,
    REFERRAL_ACCEPTED,
    REFERRAL_DECLINED,
    SERVICE_UPDATED,
    Envelope,
    OutcomeRecorded,
    ReferralAccepted,
    ReferralDeclined,
    ServiceUpdated,
)
from socialrx_shared.logging import get_logger
from socialrx_shared.runtime import ServiceRuntime

from .domain import ReferralStatus, next_status
from .store import referrals, services_view, timeline

log = get_logger(__name__)


async def apply_status_event(
    session: AsyncSession,
    envelope: Envelope,
    referral_id: str,
    status: ReferralStatus,
    at: datetime,
    detail: dict,
    decline_reason: str | None = None,
) -> None:
    """Record the event in the referral's timeline and move its status forward (never back)."""
    current = await session.scalar(select(referrals.c.status).where(referrals.c.id == referral_id).with_for_update())
    if current is None:
        # Not one of ours (another deployment on the same broker, or created before a restore).
        log.info("event for an unknown referral ignored", status=status)
        return
    await session.execute(
        pg_insert(timeline)
        .values(referral_id=referral_id, status=status, at=at, detail=detail, event_id=envelope.id)
        .on_conflict_do_nothing(index_elements=["event_id"])
    )
    new_status = next_status(current, status)
    values: dict = {"updated_at": at} if new_status != current else {}
    if new_status != current:
        values["status"] = new_status
        if new_status == "declined":
            values["decline_reason"] = decline_reason
        await session.execute(update(referrals).where(referrals.c.id == referral_id).values(**values))


def register(rt: ServiceRuntime) -> None:
    consumer: EventConsumer = rt.consumer

    @consumer.on(REFERRAL_ACCEPTED.topic)
    async def on_accepted(session: AsyncSession, envelope: Envelope, event: ReferralAccepted) -> None:
        await apply_status_event(
            session,
            envelope,
            event.referral_id,
            "accepted",
            event.accepted_at,
            {"organisation_id": event.organisation_id},
        )

    @consumer.on(REFERRAL_DECLINED.topic)
    async def on_declined(session: AsyncSession, envelope: Envelope, event: ReferralDeclined) -> None:
        await apply_status_event(
            session,
            envelope,
            event.referral_id,
            "declined",
            event.declined_at,
            {"organisation_id": event.organisation_id, "reason": event.reason},
            decline_reason=event.reason,
        )

    @consumer.on(OUTCOME_RECORDED.topic)
    async def on_outcome(session: AsyncSession, envelope: Envelope, event: OutcomeRecorded) -> None:
        await apply_status_event(
            session,
            envelope,
            event.referral_id,
            "outcome_recorded",
            event.recorded_at,
            {
                "outcome_id": event.outcome_id,
                "outcome_status": event.status,
                "sessions_attended": event.sessions_attended,
            },
        )

    @consumer.on(SERVICE_UPDATED.topic)
    async def on_service_updated(session: AsyncSession, envelope: Envelope, event: ServiceUpdated) -> None:
        row = event.model_dump(exclude={"not_accepting_reason"}) | {"not_accepting_reason": event.not_accepting_reason}
        statement = pg_insert(services_view).values(**row)
        # Keep the newest view: a replayed older update must not overwrite a newer one.
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=["service_id"],
                set_={k: statement.excluded[k] for k in row if k != "service_id"},
                where=services_view.c.version <= statement.excluded.version,
            )
        )
