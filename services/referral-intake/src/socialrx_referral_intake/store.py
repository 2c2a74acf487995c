"""referral-intake's tables. The only place a person's identifiable details are stored."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB

from socialrx_shared.db import new_metadata, reliability_tables

metadata = new_metadata()
outbox, inbox = reliability_tables(metadata)

referrals = Table(
    "referrals",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("pcn_id", String(12), nullable=False),
    Column("practice_id", String(12), nullable=False),
    Column("link_worker_id", String(64), nullable=False),
    Column("organisation_id", String(64), nullable=False),
    Column("service_id", String(64), nullable=False),
    Column("needs", JSONB, nullable=False),
    Column("accessibility_needs", JSONB, nullable=False),
    Column("person_ref", String(64), nullable=False),
    Column("age_band", String(8), nullable=False),
    Column("postcode_district", String(4), nullable=False),
    Column("status", String(20), nullable=False),
    Column("decline_reason", String(40)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("idempotency_key", String(200)),
    Column("request_hash", String(64)),
    UniqueConstraint("link_worker_id", "idempotency_key", name="uq_referrals_idempotency"),
)
Index("ix_referrals_pcn_status", referrals.c.pcn_id, referrals.c.status)

# Identifiable details, one row per referral: never copied into an event or a log line.
person_details = Table(
    "person_details",
    metadata,
    Column("referral_id", String(64), ForeignKey("referrals.id"), primary_key=True),
    Column("nhs_number", String(10), nullable=False),
    Column("given_name", String(200), nullable=False),
    Column("family_name", String(200), nullable=False),
    Column("date_of_birth", Date, nullable=False),
    Column("postcode", String(8), nullable=False),
    Column("phone", String(40)),
    Column("email", String(320)),
    Column("consent_recorded_at", DateTime(timezone=True), nullable=False),
)

timeline = Table(
    "referral_timeline",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("referral_id", String(64), ForeignKey("referrals.id"), nullable=False, index=True),
    Column("status", String(20), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("detail", JSONB, nullable=False),
    Column("event_id", Uuid, unique=True),
)

# referral-intake's own view of the directory's services, kept from `service.updated` events,
# so refusing a referral never needs a synchronous call to the directory.
services_view = Table(
    "services_view",
    metadata,
    Column("service_id", String(64), primary_key=True),
    Column("organisation_id", String(64), nullable=False),
    Column("name", Text, nullable=False),
    Column("status", String(20), nullable=False),
    Column("needs", JSONB, nullable=False),
    Column("capacity_available", Integer, nullable=False),
    Column("safeguarding_policy_valid_until", Date),
    Column("accepting_referrals", Boolean, nullable=False),
    Column("not_accepting_reason", Text),
    Column("version", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

contact_access_audit = Table(
    "contact_access_audit",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("referral_id", String(64), nullable=False, index=True),
    Column("sub", String(200), nullable=False),
    Column("role", String(20), nullable=False),
    Column("organisation_id", String(64)),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
