"""The directory's tables: organisations, services (ORUK shaped), taxonomy, and charities' inboxes;
and the reads the management API answers from."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    Row,
    String,
    Table,
    Text,
    Uuid,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from socialrx_shared.db import new_metadata, reliability_tables
from socialrx_shared.runtime import ServiceRuntime

from . import domain, unmet_need

metadata = new_metadata()
outbox, inbox = reliability_tables(metadata)

organizations = Table(
    "organizations",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", Text, nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("charity_number", String(20)),
    Column("email", String(320)),
    Column("website", String(500)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

services = Table(
    "services",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("organization_id", String(64), nullable=False, index=True),
    Column("name", Text, nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("needs", JSONB, nullable=False),
    Column("capacity", Integer, nullable=False),
    Column("safeguarding_policy_valid_until", Date),
    Column("status", String(20), nullable=False),
    Column("postcode", String(8)),
    Column("email", String(320)),
    Column("url", String(500)),
    # One location per service (ORUK service_at_location): enough for a community service's venue.
    Column("location_id", String(64)),
    Column("service_at_location_id", String(64)),
    Column("location_name", Text),
    Column("address_1", Text),
    Column("city", Text),
    Column("latitude", Float),
    Column("longitude", Float),
    # Bumped on every change; `service.updated` carries it so consumers keep the newest view.
    Column("version", Integer, nullable=False),
    # What the last `service.updated` said, so a daily check can publish when a gate flips by itself.
    Column("published_accepting", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # Capacity changed by an accept or a finished referral; `service.updated` not yet staged. Set in the
    # transaction of the change, cleared in the one that stages the event: many changes, one event.
    Column("update_pending", Boolean, nullable=False, server_default=text("false")),
)
Index("ix_services_identity", services.c.organization_id, services.c.name, services.c.postcode)
Index("ix_services_update_pending", services.c.id, postgresql_where=services.c.update_pending)

taxonomy_terms = Table(
    "taxonomy_terms",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("code", String(64), nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("vocabulary", String(64), nullable=False),
)

referral_inbox = Table(
    "referral_inbox",
    metadata,
    Column("referral_id", String(64), primary_key=True),
    Column("organisation_id", String(64), nullable=False),
    Column("service_id", String(64), nullable=False),
    Column("pcn_id", String(12), nullable=False),
    Column("needs", JSONB, nullable=False),
    Column("age_band", String(8), nullable=False),
    Column("postcode_district", String(4), nullable=False),
    Column("accessibility_needs", JSONB, nullable=False),
    Column("status", String(20), nullable=False),
    Column("decline_reason", String(40)),
    Column("referred_at", DateTime(timezone=True), nullable=False),
    Column("decided_at", DateTime(timezone=True)),
    Column("decided_by", String(200)),
    Column("place_released", Boolean, nullable=False, server_default="false"),
)
Index("ix_referral_inbox_org_status", referral_inbox.c.organisation_id, referral_inbox.c.status)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("organisation_id", String(64), nullable=False, index=True),
    Column("url", String(2000), nullable=False),
    Column("events", JSONB, nullable=False),
    # Kept to sign deliveries (HMAC needs the key itself); shown to the charity once, never logged.
    Column("secret", String(128), nullable=False),
    Column("active", Boolean, nullable=False, server_default="true"),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Written in the same transaction as the event it carries, so a restart loses no delivery.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("subscription_id", String(64), nullable=False, index=True),
    Column("organisation_id", String(64), nullable=False),
    Column("event_id", Uuid, nullable=False),
    Column("event_type", String(100), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("status", String(20), nullable=False),  # pending | delivered | failed
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("last_status_code", Integer),
    Column("last_error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("delivered_at", DateTime(timezone=True)),
)
Index(
    "ix_webhook_deliveries_due",
    webhook_deliveries.c.next_attempt_at,
    postgresql_where=webhook_deliveries.c.status == "pending",
)
Index("uq_webhook_deliveries_event", webhook_deliveries.c.subscription_id, webhook_deliveries.c.event_id, unique=True)

# One email per referral and reason, whatever the restarts and replicas: the unique key makes the
# second enqueue a no-op, and a sender claims a row with FOR UPDATE SKIP LOCKED.
email_notifications = Table(
    "email_notifications",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("referral_id", String(64), nullable=False),
    Column("reason", String(20), nullable=False),  # arrived | reminder
    Column("organisation_id", String(64), nullable=False),
    Column("status", String(20), nullable=False),  # pending | sent | skipped
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("last_error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True)),
)
Index(
    "uq_email_notifications_referral_reason",
    email_notifications.c.referral_id,
    email_notifications.c.reason,
    unique=True,
)
Index(
    "ix_email_notifications_due",
    email_notifications.c.next_attempt_at,
    postgresql_where=email_notifications.c.status == "pending",
)

# Unmet need: one row per referral-intake refusal (its id is stable across the link worker's retries, so it
# counts once).
referral_refusals = Table(
    "referral_refusals",
    metadata,
    Column("refusal_id", String(64), primary_key=True),
    Column("pcn_id", String(12), nullable=False),
    Column("organisation_id", String(64), nullable=False),
    Column("service_id", String(64), nullable=False),
    Column("needs", JSONB, nullable=False),
    Column("age_band", String(8), nullable=False),
    Column("postcode_district", String(4), nullable=False),
    Column("reason", String(40), nullable=False),
    Column("refused_at", DateTime(timezone=True), nullable=False, index=True),
)


async def inbox_page(
    rt: ServiceRuntime, organisation_id: str | None, status: str | None, page: int, per_page: int
) -> tuple[int, list[dict[str, Any]]]:
    """(how many, this page of them) of an organisation's inbox, oldest referral first."""
    query = select(referral_inbox).where(referral_inbox.c.organisation_id == organisation_id)
    if status:
        query = query.where(referral_inbox.c.status == status)
    async with rt.sessionmaker() as session:
        total = await session.scalar(select(func.count()).select_from(query.subquery()))
        rows = (
            (
                await session.execute(
                    query.order_by(referral_inbox.c.referred_at).offset((page - 1) * per_page).limit(per_page)
                )
            )
            .mappings()
            .all()
        )
    return total or 0, [dict(row) for row in rows]


async def decisions(rt: ServiceRuntime, service_id: str | None) -> Sequence[Row[Any]]:
    """Every inbox row's service, status, decline reason and reply time in seconds (`reply_s`)."""
    reply_s = func.extract("epoch", referral_inbox.c.decided_at - referral_inbox.c.referred_at)
    query = select(
        referral_inbox.c.service_id, referral_inbox.c.status, referral_inbox.c.decline_reason, reply_s.label("reply_s")
    )
    if service_id is not None:
        query = query.where(referral_inbox.c.service_id == service_id)
    async with rt.sessionmaker() as session:
        return (await session.execute(query)).all()


async def turned_away(
    rt: ServiceRuntime, from_: date, to: date, pcn_id: str | None, today: date
) -> tuple[list[unmet_need.Turned], list[unmet_need.ServiceGap]]:
    """Referrals turned away from `from_` to `to` (both included): refused by referral-intake, or declined
    for no capacity; only `pcn_id`'s if given. And the services that cannot take referrals `today` for
    capacity or safeguarding."""
    start = datetime.combine(from_, time.min, timezone.utc)
    end = datetime.combine(to + timedelta(days=1), time.min, timezone.utc)
    refused = select(referral_refusals).where(
        referral_refusals.c.refused_at >= start, referral_refusals.c.refused_at < end
    )
    declined = select(referral_inbox.c.needs, referral_inbox.c.postcode_district).where(
        referral_inbox.c.status == "declined",
        referral_inbox.c.decline_reason == "no_capacity",
        referral_inbox.c.decided_at >= start,
        referral_inbox.c.decided_at < end,
    )
    if pcn_id is not None:
        refused = refused.where(referral_refusals.c.pcn_id == pcn_id)
        declined = declined.where(referral_inbox.c.pcn_id == pcn_id)
    async with rt.sessionmaker() as session:
        turned = [
            unmet_need.Turned(tuple(r.needs), r.postcode_district, unmet_need.REFUSAL_COLUMN[r.reason])
            for r in (await session.execute(refused)).all()
        ]
        turned += [
            unmet_need.Turned(tuple(r.needs), r.postcode_district, "declined_no_capacity")
            for r in (await session.execute(declined)).all()
        ]
        service_rows = (
            await session.execute(
                select(
                    services.c.id,
                    services.c.name,
                    services.c.needs,
                    services.c.postcode,
                    services.c.status,
                    services.c.capacity,
                    services.c.safeguarding_policy_valid_until,
                )
            )
        ).all()
    gaps = []
    for s in service_rows:
        gate = domain.gate(s.status, s.capacity, s.safeguarding_policy_valid_until, today)
        if gate.reason is not None and unmet_need.capacity_or_safeguarding(gate.reason):
            district = domain.outward_code(s.postcode) if s.postcode else None
            gaps.append(unmet_need.ServiceGap(s.id, s.name, tuple(s.needs), district, gate.reason))
    return turned, gaps
