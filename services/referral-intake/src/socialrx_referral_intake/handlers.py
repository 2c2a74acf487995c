"""How referral-intake reacts to other services' events. Where a referral's status changes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from socialrx_shared.consumer import EventConsumer, Handler, ManyHandler
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


@dataclass(frozen=True)
class StatusEvent:
    """What another service said happened to a referral, as its timeline records it."""

    envelope: Envelope
    referral_id: str
    status: ReferralStatus
    at: datetime
    detail: dict
    decline_reason: str | None = None


async def apply_status_event(session: AsyncSession, event: StatusEvent) -> None:
    """Record the event in the referral's timeline and move its status forward (never back)."""
    await apply_status_events(session, [event])


async def apply_status_events(session: AsyncSession, events: list[StatusEvent]) -> None:
    """`apply_status_event` for many, in order, with three statements in all: the referrals read and
    locked at once, each status moved in memory by the domain rule, the timeline rows inserted at
    once, and each referral whose status moved updated once with where the moves left it."""
    ids = sorted({e.referral_id for e in events})
    current: dict[str, str] = dict(
        (
            await session.execute(
                select(referrals.c.id, referrals.c.status)
                .where(referrals.c.id.in_(ids))
                .order_by(referrals.c.id)
                .with_for_update()
            )
        ).all()
    )
    rows, changed = [], {}
    for e in events:
        if e.referral_id not in current:
            # Not one of ours (another deployment on the same broker, or created before a restore).
            log.info("event for an unknown referral ignored", status=e.status)
            continue
        rows.append(
            {
                "referral_id": e.referral_id,
                "status": e.status,
                "at": e.at,
                "detail": e.detail,
                "event_id": e.envelope.id,
            }
        )
        new_status = next_status(current[e.referral_id], e.status)  # type: ignore[arg-type]
        if new_status != current[e.referral_id]:
            current[e.referral_id] = new_status
            values = changed.setdefault(e.referral_id, {"decline_reason": None, "reason_given": False})
            values.update(status=new_status, updated_at=e.at)
            if new_status == "declined":
                values.update(decline_reason=e.decline_reason, reason_given=True)
    if rows:
        await session.execute(pg_insert(timeline).on_conflict_do_nothing(index_elements=["event_id"]), rows)
    if changed:
        await session.execute(
            text(
                "UPDATE referrals r SET status = t.status, updated_at = t.updated_at, "
                "decline_reason = CASE WHEN t.reason_given THEN t.decline_reason ELSE r.decline_reason END "
                "FROM unnest(CAST(:ids AS varchar[]), CAST(:statuses AS varchar[]), "
                "CAST(:updated AS timestamptz[]), CAST(:reasons AS varchar[]), CAST(:given AS boolean[])) "
                "AS t(id, status, updated_at, decline_reason, reason_given) WHERE r.id = t.id"
            ),
            {
                "ids": list(changed),
                "statuses": [v["status"] for v in changed.values()],
                "updated": [v["updated_at"] for v in changed.values()],
                "reasons": [v["decline_reason"] for v in changed.values()],
                "given": [v["reason_given"] for v in changed.values()],
            },
        )


def _accepted(envelope: Envelope, event: ReferralAccepted) -> StatusEvent:
    return StatusEvent(
        envelope, event.referral_id, "accepted", event.accepted_at, {"organisation_id": event.organisation_id}
    )


def _declined(envelope: Envelope, event: ReferralDeclined) -> StatusEvent:
    return StatusEvent(
        envelope,
        event.referral_id,
        "declined",
        event.declined_at,
        {"organisation_id": event.organisation_id, "reason": event.reason},
        decline_reason=event.reason,
    )


def _outcome(envelope: Envelope, event: OutcomeRecorded) -> StatusEvent:
    return StatusEvent(
        envelope,
        event.referral_id,
        "outcome_recorded",
        event.recorded_at,
        {"outcome_id": event.outcome_id, "outcome_status": event.status, "sessions_attended": event.sessions_attended},
    )


def _one(status_event: Callable[[Envelope, Any], StatusEvent]) -> Handler:
    async def handle(session: AsyncSession, envelope: Envelope, event: Any) -> None:
        await apply_status_event(session, status_event(envelope, event))

    return handle


def _many(status_event: Callable[[Envelope, Any], StatusEvent]) -> ManyHandler:
    async def handle(session: AsyncSession, records: list[tuple[Envelope, Any]]) -> None:
        await apply_status_events(session, [status_event(envelope, event) for envelope, event in records])

    return handle


def register(rt: ServiceRuntime) -> None:
    consumer: EventConsumer = rt.consumer

    # Each topic's events, one by one (a failed batch's) or as a run of a batch (`on_many`).
    for spec, status_event in (
        (REFERRAL_ACCEPTED, _accepted),
        (REFERRAL_DECLINED, _declined),
        (OUTCOME_RECORDED, _outcome),
    ):
        consumer.on(spec.topic)(_one(status_event))
        consumer.on_many(spec.topic)(_many(status_event))

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
