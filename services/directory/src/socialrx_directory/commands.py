"""What the directory does when a person or a clock asks: decide referrals, publish services.

Used by the HTTP API, the event handlers and the auto-decline sweep, so each rule has one home.
"""

from __future__ import annotations

from datetime import date, datetime, timezone

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from socialrx_shared.events import (
    REFERRAL_ACCEPTED, REFERRAL_DECLINED, SERVICE_UPDATED, ReferralAccepted, ReferralDeclined, ServiceUpdated,
)
from socialrx_shared.runtime import ServiceRuntime

from . import domain
from .webhooks import publish
from .store import referral_inbox, services


class NotFound(Exception):
    pass


async def stage_service_updated(rt: ServiceRuntime, session: AsyncSession, service_id: str,
                                today: date | None = None) -> ServiceUpdated:
    """Bump the service's version and stage `service.updated` with its gate as of `today`."""
    today = today or datetime.now(timezone.utc).date()
    row = (await session.execute(select(services).where(services.c.id == service_id).with_for_update())).mappings().one()
    gate = domain.gate(row["status"], row["capacity"], row["safeguarding_policy_valid_until"], today)
    now = datetime.now(timezone.utc)
    version = row["version"] + 1
    await session.execute(
        update(services).where(services.c.id == service_id)
        .values(version=version, published_accepting=gate.accepting_referrals, updated_at=now)
    )
    event = ServiceUpdated(
        service_id=service_id, organisation_id=row["organization_id"], name=row["name"], status=row["status"],
        needs=row["needs"], capacity_available=max(row["capacity"], 0),
        safeguarding_policy_valid_until=row["safeguarding_policy_valid_until"],
        accepting_referrals=gate.accepting_referrals, not_accepting_reason=gate.reason, version=version,
        updated_at=now,
    )
    await publish(rt, session, SERVICE_UPDATED, event, row["organization_id"])
    return event


async def _lock_referral(session: AsyncSession, referral_id: str) -> dict:
    row = (
        await session.execute(select(referral_inbox).where(referral_inbox.c.referral_id == referral_id).with_for_update())
    ).mappings().first()
    if row is None:
        raise NotFound(referral_id)
    return dict(row)


async def accept(rt: ServiceRuntime, session: AsyncSession, referral_id: str, by: str) -> ReferralAccepted:
    row = await _lock_referral(session, referral_id)
    domain.decide(row["status"], "accepted")
    now = datetime.now(timezone.utc)
    await session.execute(
        update(referral_inbox).where(referral_inbox.c.referral_id == referral_id)
        .values(status="accepted", decided_at=now, decided_by=by)
    )
    # A place is taken: capacity falls (never below 0; an organisation may accept beyond it).
    await capacity_changed(session, row["service_id"], -1)
    event = ReferralAccepted(referral_id=referral_id, organisation_id=row["organisation_id"],
                             service_id=row["service_id"], pcn_id=row["pcn_id"], accepted_at=now)
    await publish(rt, session, REFERRAL_ACCEPTED, event, row["organisation_id"])
    return event


async def capacity_changed(session: AsyncSession, service_id: str, places: int) -> None:
    """Add `places` (never below 0) and mark the service's `service.updated` as due, in the caller's
    transaction. `publish_pending_service_updates` stages one event for all the changes made since the
    last: at flat out the directory publishes a few per second per service instead of two per
    referral, and consumers handle as few. The mark commits with the change, so none is lost."""
    await session.execute(
        update(services).where(services.c.id == service_id)
        .values(capacity=func.greatest(services.c.capacity + places, 0), update_pending=True)
    )


async def publish_pending_service_updates(rt: ServiceRuntime, limit: int = 100) -> int:
    """Stage `service.updated` for every service whose capacity changed since its last one (one event
    each, with its newest state and version) and clear the marks, in one transaction. A service whose
    row another transaction holds is skipped (SKIP LOCKED) and comes next round, with that change."""
    async with rt.sessionmaker() as session, session.begin():
        due = (await session.scalars(
            update(services).where(services.c.id.in_(
                select(services.c.id).where(services.c.update_pending).limit(limit).with_for_update(skip_locked=True)))
            .values(update_pending=False).returning(services.c.id))).all()
        for service_id in due:
            await stage_service_updated(rt, session, service_id)
    if due:
        rt.relay.wake()
    return len(due)


async def decline(rt: ServiceRuntime, session: AsyncSession, referral_id: str, reason: str, by: str,
                  at: datetime | None = None) -> ReferralDeclined:
    row = await _lock_referral(session, referral_id)
    domain.decide(row["status"], "declined")
    now = at or datetime.now(timezone.utc)
    await session.execute(
        update(referral_inbox).where(referral_inbox.c.referral_id == referral_id)
        .values(status="declined", decided_at=now, decided_by=by, decline_reason=reason)
    )
    event = ReferralDeclined(referral_id=referral_id, organisation_id=row["organisation_id"],
                             service_id=row["service_id"], pcn_id=row["pcn_id"], reason=reason, declined_at=now)
    await publish(rt, session, REFERRAL_DECLINED, event, row["organisation_id"])
    return event
