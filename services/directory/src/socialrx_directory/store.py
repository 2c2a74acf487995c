"""The directory's tables: organisations, services (ORUK shaped), taxonomy, and charities' inboxes."""

from __future__ import annotations

from sqlalchemy import (BigInteger, Boolean, Column, Date, DateTime, Float, Index, Integer, LargeBinary, String, Table,
                        Text, Uuid, text)
from sqlalchemy.dialects.postgresql import JSONB

from socialrx_shared.db import new_metadata, reliability_tables

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
Index("ix_webhook_deliveries_due", webhook_deliveries.c.next_attempt_at,
      postgresql_where=webhook_deliveries.c.status == "pending")
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
Index("uq_email_notifications_referral_reason", email_notifications.c.referral_id, email_notifications.c.reason,
      unique=True)
Index("ix_email_notifications_due", email_notifications.c.next_attempt_at,
      postgresql_where=email_notifications.c.status == "pending")

# Unmet need: one row per referral-intake refusal (its id is stable across the link worker's retries, so it counts once).
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
