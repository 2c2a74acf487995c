"""The outcomes service's tables: its view of referrals, outcome records and scored measures."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Float, Index, Integer, String, Table, text
from sqlalchemy.dialects.postgresql import JSONB

from socialrx_shared.db import new_metadata, reliability_tables

metadata = new_metadata()
outbox, inbox = reliability_tables(metadata)

# Built from referral events, which may arrive in any order: every column but the key may be
# filled by whichever event comes first.
referral_view = Table(
    "referral_view",
    metadata,
    Column("referral_id", String(64), primary_key=True),
    Column("pcn_id", String(12)),
    Column("practice_id", String(12)),
    Column("link_worker_id", String(64)),
    Column("organisation_id", String(64)),
    Column("service_id", String(64)),
    Column("needs", JSONB),
    Column("age_band", String(8)),
    Column("postcode_district", String(4)),
    Column("accessibility_needs", JSONB),
    Column("status", String(20), nullable=False),
    Column("decline_reason", String(40)),
    Column("created_at", DateTime(timezone=True)),
    Column("accepted_at", DateTime(timezone=True)),
    Column("declined_at", DateTime(timezone=True)),
)

outcomes = Table(
    "outcomes",
    metadata,
    Column("outcome_id", String(64), primary_key=True),
    Column("referral_id", String(64), nullable=False, index=True),
    Column("status", String(20), nullable=False),
    Column("sessions_attended", Integer, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("recorded_by", String(200), nullable=False),
    # 1 when first recorded; each explicit correction adds one (history in outcome_corrections).
    Column("revision", Integer, nullable=False, server_default=text("1")),
    Column("corrected_at", DateTime(timezone=True)),
)

# A correction replaces an outcome's status, sessions and measures in place (the outcome keeps its
# id, so consumers that key by outcome_id do not count it twice); what it replaced is kept here.
outcome_corrections = Table(
    "outcome_corrections",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("outcome_id", String(64), nullable=False, index=True),
    Column("replaced_revision", Integer, nullable=False),
    Column("previous", JSONB, nullable=False),
    Column("reason", String(500), nullable=False),
    Column("corrected_by", String(200), nullable=False),
    Column("corrected_at", DateTime(timezone=True), nullable=False),
)

measures = Table(
    "measures",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("outcome_id", String(64), nullable=False, index=True),
    Column("referral_id", String(64), nullable=False),
    Column("instrument", String(10), nullable=False),
    Column("phase", String(10), nullable=False),
    Column("answers", JSONB, nullable=False),
    Column("score", Float),
    Column("item_scores", JSONB, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
)
Index("ix_measures_referral_id", measures.c.referral_id)
# Reports select a PCN's referrals; admins and charities scan by organisation.
Index("ix_referral_view_pcn_id", referral_view.c.pcn_id)
Index("ix_referral_view_organisation_id", referral_view.c.organisation_id)
# One baseline per instrument and referral: a second is refused (a correction is explicit).
Index(
    "uq_measures_one_baseline",
    measures.c.referral_id,
    measures.c.instrument,
    unique=True,
    postgresql_where=text("phase = 'baseline'"),
)
