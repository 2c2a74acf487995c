"""What the directory does when a person or a clock asks: register organisations, add and change
services, decide referrals, publish services. One transaction each.

Used by the HTTP API, the event handlers and the auto-decline sweep, so each rule has one home. A
refusal is a typed error (`socialrx_shared.errors`); the shared app turns it into an HTTP answer.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timezone
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from socialrx_shared.errors import Conflict, Forbidden, Invalid, NotFound
from socialrx_shared.events import (
    ORGANISATION_REGISTERED,
    REFERRAL_ACCEPTED,
    REFERRAL_DECLINED,
    SERVICE_UPDATED,
    OrganisationRegistered,
    ReferralAccepted,
    ReferralDeclined,
    ServiceUpdated,
)
from socialrx_shared.runtime import ServiceRuntime

from . import domain
from .store import organizations, referral_inbox, services, taxonomy_terms
from .webhooks import publish

NOT_IN_INBOX = "no such referral in your organisation's inbox"


async def register_organization(rt: ServiceRuntime, fields: dict[str, Any]) -> dict[str, Any]:
    now = datetime.now(timezone.utc)
    row = {"id": str(uuid.uuid4()), **fields, "created_at": now, "updated_at": now}
    async with rt.transaction() as session:
        await session.execute(insert(organizations).values(**row))
        # Announced through the outbox with the row: the ledger funds only organisations it has heard of.
        await rt.stage(
            session,
            ORGANISATION_REGISTERED,
            OrganisationRegistered(organisation_id=row["id"], name=row["name"], registered_at=now),
        )
    return row


async def add_taxonomy_term(rt: ServiceRuntime, fields: dict[str, Any]) -> dict[str, Any]:
    row = {"id": str(uuid.uuid4()), **fields, "vocabulary": domain.NEEDS_VOCABULARY}
    async with rt.transaction() as session:
        if await session.scalar(select(taxonomy_terms.c.id).where(taxonomy_terms.c.code == fields["code"])):
            raise Conflict(f"the need code {fields['code']!r} already exists")
        await session.execute(insert(taxonomy_terms).values(**row))
    return row


async def _check_needs(session: AsyncSession, needs: list[str] | None) -> None:
    """Needs are the directory's taxonomy terms: a typo must not make a service unfindable."""
    if not needs:
        return
    found = await session.execute(select(taxonomy_terms.c.code).where(taxonomy_terms.c.code.in_(needs)))
    unknown = sorted(set(needs) - set(found.scalars()))
    if unknown:
        raise Invalid(
            f"unknown need code(s): {', '.join(unknown)}; GET /taxonomy_terms lists them, and an admin "
            "can add one with POST /taxonomy_terms"
        )


def _may_manage(role: str, own_organisation_id: str | None, organization_id: str) -> None:
    if not domain.may_manage(role, own_organisation_id, organization_id):
        raise Forbidden("a charity manages only its own organisation's services")


async def _service_row(session: AsyncSession, service_id: str) -> dict[str, Any]:
    return dict((await session.execute(select(services).where(services.c.id == service_id))).mappings().one())


async def add_service(
    rt: ServiceRuntime, role: str, own_organisation_id: str | None, fields: dict[str, Any], allow_duplicate: bool
) -> dict[str, Any]:
    """Add a service (its gate closed until `service.updated` says otherwise); the new row."""
    organization_id = fields["organization_id"]
    _may_manage(role, own_organisation_id, organization_id)
    now = datetime.now(timezone.utc)
    postcode = domain.normal_postcode(fields.get("postcode"))
    async with rt.transaction() as session:
        if not await session.scalar(select(organizations.c.id).where(organizations.c.id == organization_id)):
            raise Invalid(f"no organisation {organization_id!r}: create it first")
        await _check_needs(session, fields["needs"])
        duplicate = await session.scalar(
            select(services.c.id).where(
                services.c.organization_id == organization_id,
                func.lower(services.c.name) == fields["name"].lower(),
                services.c.postcode.is_not_distinct_from(postcode),
            )
        )
        if duplicate and not allow_duplicate:
            raise Conflict(
                "this organisation already has a service of this name at this postcode; update it, or "
                "pass allow_duplicate=true",
                existing_service_id=duplicate,
            )
        service_id = str(uuid.uuid4())
        await session.execute(
            insert(services).values(
                **{**fields, "description": fields.get("description") or "", "postcode": postcode},
                id=service_id,
                version=0,
                location_id=domain.derived_id(service_id, "location"),
                service_at_location_id=domain.derived_id(service_id, "service_at_location"),
                published_accepting=False,
                created_at=now,
                updated_at=now,
            )
        )
        await stage_service_updated(rt, session, service_id)
        return await _service_row(session, service_id)


async def change_service(
    rt: ServiceRuntime, role: str, own_organisation_id: str | None, service_id: str, changes: dict[str, Any]
) -> dict[str, Any]:
    """Change the given fields of a service and publish it again; the changed row."""
    if "postcode" in changes:
        changes = {**changes, "postcode": domain.normal_postcode(changes["postcode"])}
    for required in ("name", "needs", "capacity", "status"):
        if required in changes and changes[required] is None:
            raise Invalid(f"{required} cannot be removed")
    async with rt.transaction() as session:
        owner = await session.scalar(
            select(services.c.organization_id).where(services.c.id == service_id).with_for_update()
        )
        if owner is None:
            raise NotFound("no such service")
        _may_manage(role, own_organisation_id, owner)
        await _check_needs(session, changes.get("needs"))
        if changes:
            await session.execute(update(services).where(services.c.id == service_id).values(**changes))
        await stage_service_updated(rt, session, service_id)
        return await _service_row(session, service_id)


async def decide(
    rt: ServiceRuntime, organisation_id: str | None, referral_id: str, by: str, decline_reason: str | None = None
) -> ReferralAccepted | ReferralDeclined:
    """A charity accepts a referral in its own inbox (no reason) or declines it (with one)."""
    async with rt.transaction() as session:
        owner = await session.scalar(
            select(referral_inbox.c.organisation_id).where(referral_inbox.c.referral_id == referral_id)
        )
        if owner is None or owner != organisation_id:
            raise NotFound(NOT_IN_INBOX)
        if decline_reason is None:
            return await accept(rt, session, referral_id, by)
        return await decline(rt, session, referral_id, decline_reason, by)


async def stage_service_updated(
    rt: ServiceRuntime, session: AsyncSession, service_id: str, today: date | None = None
) -> ServiceUpdated:
    """Bump the service's version and stage `service.updated` with its gate as of `today`."""
    today = today or datetime.now(timezone.utc).date()
    row = (
        (await session.execute(select(services).where(services.c.id == service_id).with_for_update())).mappings().one()
    )
    gate = domain.gate(row["status"], row["capacity"], row["safeguarding_policy_valid_until"], today)
    now = datetime.now(timezone.utc)
    version = row["version"] + 1
    await session.execute(
        update(services)
        .where(services.c.id == service_id)
        .values(version=version, published_accepting=gate.accepting_referrals, updated_at=now)
    )
    event = ServiceUpdated(
        service_id=service_id,
        organisation_id=row["organization_id"],
        name=row["name"],
        status=row["status"],
        needs=row["needs"],
        capacity_available=max(row["capacity"], 0),
        safeguarding_policy_valid_until=row["safeguarding_policy_valid_until"],
        accepting_referrals=gate.accepting_referrals,
        not_accepting_reason=gate.reason,
        version=version,
        updated_at=now,
    )
    await publish(rt, session, SERVICE_UPDATED, event, row["organization_id"])
    return event


async def _lock_referral(session: AsyncSession, referral_id: str) -> dict:
    row = (
        (
            await session.execute(
                select(referral_inbox).where(referral_inbox.c.referral_id == referral_id).with_for_update()
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        raise NotFound(NOT_IN_INBOX)
    return dict(row)


async def accept(rt: ServiceRuntime, session: AsyncSession, referral_id: str, by: str) -> ReferralAccepted:
    row = await _lock_referral(session, referral_id)
    status = domain.inbox_status(row["status"], "accepted")
    now = datetime.now(timezone.utc)
    await session.execute(
        update(referral_inbox)
        .where(referral_inbox.c.referral_id == referral_id)
        .values(status=status, decided_at=now, decided_by=by)
    )
    # A place is taken: capacity falls (never below 0; an organisation may accept beyond it).
    await capacity_changed(session, row["service_id"], -1)
    event = ReferralAccepted(
        referral_id=referral_id,
        organisation_id=row["organisation_id"],
        service_id=row["service_id"],
        pcn_id=row["pcn_id"],
        accepted_at=now,
    )
    await publish(rt, session, REFERRAL_ACCEPTED, event, row["organisation_id"])
    return event


async def capacity_changed(session: AsyncSession, service_id: str, places: int) -> None:
    """Add `places` (never below 0) and mark the service's `service.updated` as due, in the caller's
    transaction. `publish_pending_service_updates` stages one event for all the changes made since the
    last: at flat out the directory publishes a few per second per service instead of two per
    referral, and consumers handle as few. The mark commits with the change, so none is lost."""
    await session.execute(
        update(services)
        .where(services.c.id == service_id)
        .values(capacity=func.greatest(services.c.capacity + places, 0), update_pending=True)
    )


async def publish_pending_service_updates(rt: ServiceRuntime, limit: int = 100) -> int:
    """Stage `service.updated` for every service whose capacity changed since its last one (one event
    each, with its newest state and version) and clear the marks, in one transaction. A service whose
    row another transaction holds is skipped (SKIP LOCKED) and comes next round, with that change."""
    async with rt.sessionmaker() as session, session.begin():
        pending = select(services.c.id).where(services.c.update_pending).limit(limit).with_for_update(skip_locked=True)
        due = (
            await session.scalars(
                update(services).where(services.c.id.in_(pending)).values(update_pending=False).returning(services.c.id)
            )
        ).all()
        for service_id in due:
            await stage_service_updated(rt, session, service_id)
    if due:
        rt.relay.wake()
    return len(due)


async def decline(
    rt: ServiceRuntime, session: AsyncSession, referral_id: str, reason: str, by: str, at: datetime | None = None
) -> ReferralDeclined:
    row = await _lock_referral(session, referral_id)
    status = domain.inbox_status(row["status"], "declined")
    now = at or datetime.now(timezone.utc)
    await session.execute(
        update(referral_inbox)
        .where(referral_inbox.c.referral_id == referral_id)
        .values(status=status, decided_at=now, decided_by=by, decline_reason=reason)
    )
    event = ReferralDeclined(
        referral_id=referral_id,
        organisation_id=row["organisation_id"],
        service_id=row["service_id"],
        pcn_id=row["pcn_id"],
        reason=reason,
        declined_at=now,
    )
    await publish(rt, session, REFERRAL_DECLINED, event, row["organisation_id"])
    return event
