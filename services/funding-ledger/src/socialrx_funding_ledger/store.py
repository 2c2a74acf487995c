"""The funding ledger's tables: agreements, a double-entry journal, payments due, settlements."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
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
    func,
)
from sqlalchemy.dialects.postgresql import JSONB

from socialrx_shared.db import new_metadata, reliability_tables

metadata = new_metadata()
outbox, inbox = reliability_tables(metadata)

agreements = Table(
    "agreements",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("pcn_id", String(12), nullable=False),
    Column("organisation_id", String(64), nullable=False),
    Column("per_referral_pence", BigInteger, nullable=False),
    Column("per_outcome_pence", BigInteger, nullable=False),
    Column("outcome_statuses", JSONB, nullable=False),
    Column("block_grant_pence_per_period", BigInteger, nullable=False),
    Column("cap_pence_per_year", BigInteger),
    Column("period", String(10), nullable=False),
    Column("days_after_period_end", Integer, nullable=False),
    Column("starts_on", Date, nullable=False),
    Column("ends_on", Date),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("created_by", String(200), nullable=False),
    CheckConstraint(
        "per_referral_pence >= 0 AND per_outcome_pence >= 0 AND block_grant_pence_per_period >= 0 AND "
        "(cap_pence_per_year IS NULL OR cap_pence_per_year >= 0)",
        name="amounts_not_negative",
    ),
    CheckConstraint("ends_on IS NULL OR ends_on >= starts_on", name="dates_in_order"),
    CheckConstraint("period IN ('monthly', 'quarterly')", name="known_period"),
)
Index("ix_agreements_parties", agreements.c.pcn_id, agreements.c.organisation_id)

# Every version of an agreement's terms, kept: version 1 is the terms it was made with; a change
# (PATCH /agreements/{id}) adds one, effective from a date. Work is accrued under the version in
# force on its business date, and accruals already made keep the terms they were made under.
agreement_versions = Table(
    "agreement_versions",
    metadata,
    Column("agreement_id", String(64), ForeignKey("agreements.id"), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("effective_from", Date, nullable=False),
    Column("per_referral_pence", BigInteger, nullable=False),
    Column("per_outcome_pence", BigInteger, nullable=False),
    Column("outcome_statuses", JSONB, nullable=False),
    Column("block_grant_pence_per_period", BigInteger, nullable=False),
    Column("cap_pence_per_year", BigInteger),
    Column("ends_on", Date),
    Column("reason", Text),
    Column("changed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("changed_by", String(200), nullable=False),
)

# Immutable once written: a mistake is reversed by a new entry. `cause_key` names the event or
# request that caused the entry, so the same cause never posts twice.
journal_entries = Table(
    "journal_entries",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("cause_key", String(200), nullable=False, unique=True),
    Column("business_date", Date, nullable=False),
    Column("memo", Text, nullable=False),
    Column("posted_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

journal_lines = Table(
    "journal_lines",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("entry_id", BigInteger, ForeignKey("journal_entries.id"), nullable=False, index=True),
    Column("account", String(200), nullable=False, index=True),
    Column("debit_pence", BigInteger, nullable=False),
    Column("credit_pence", BigInteger, nullable=False),
    CheckConstraint(
        "debit_pence >= 0 AND credit_pence >= 0 AND (debit_pence = 0) <> (credit_pence = 0)", name="one_side_positive"
    ),
)

payments = Table(
    "payments",
    metadata,
    Column("payment_id", String(64), primary_key=True),
    Column("cause_key", String(200), nullable=False, unique=True),
    Column("agreement_id", String(64), nullable=False),
    Column("pcn_id", String(12), nullable=False),
    Column("organisation_id", String(64), nullable=False),
    Column("referral_id", String(64)),
    Column("basis", String(20), nullable=False),
    Column("amount_pence", BigInteger, nullable=False),
    Column("open_pence", BigInteger, nullable=False),
    Column("period", String(16), nullable=False),
    Column("due_date", Date, nullable=False),
    Column("business_date", Date, nullable=False),
    # The instant of the cause (accepted_at, recorded_at): orders a settlement within a business day.
    Column("caused_at", DateTime(timezone=True)),
    Column("refused_over_cap_pence", BigInteger, nullable=False, server_default="0"),
    # The whole amount once a correction took the payment back (payment_reversals says how).
    Column("reversed_pence", BigInteger, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("open_pence >= 0 AND open_pence <= amount_pence", name="open_within_amount"),
    CheckConstraint("reversed_pence = 0 OR reversed_pence = amount_pence", name="reversed_wholly_or_not"),
    CheckConstraint("amount_pence >= 0 AND refused_over_cap_pence >= 0", name="amounts_not_negative"),
)
Index("ix_payments_org_due", payments.c.organisation_id, payments.c.due_date)
# The cap's running sum per agreement and financial year (ledger.accrued_in_financial_year).
Index("ix_payments_agreement_business_date", payments.c.agreement_id, payments.c.business_date)
Index("ix_payments_pcn_due", payments.c.pcn_id, payments.c.due_date)
Index("ix_payments_referral_basis", payments.c.referral_id, payments.c.basis)

# Referrals this ledger knows were accepted: outcomes are paid under the agreement in force when
# their referral was accepted.
accepted_referrals = Table(
    "accepted_referrals",
    metadata,
    Column("referral_id", String(64), primary_key=True),
    Column("pcn_id", String(12), nullable=False),
    Column("organisation_id", String(64), nullable=False),
    Column("accepted_on", Date, nullable=False),
    Column("accepted_at", DateTime(timezone=True)),
    # None: no agreement covered it when it was accepted (a back-dated agreement may cover it later).
    Column("agreement_id", String(64)),
)

# The newest revision of every outcome seen, accepted or not yet, covered by an agreement or not:
# what a referral's outcome fee is owed on is decided from these facts, whatever order they came in.
outcomes = Table(
    "outcomes",
    metadata,
    Column("outcome_id", String(64), primary_key=True),
    Column("referral_id", String(64), nullable=False, index=True),
    Column("revision", Integer, nullable=False),
    Column("event", JSONB, nullable=False),
)

# Organisations the ledger knows exist, learnt from the directory's events (organisation.registered,
# service.updated, referral.accepted): agreements and settlements name only these.
organisations = Table(
    "organisations",
    metadata,
    Column("organisation_id", String(64), primary_key=True),
    Column("name", Text),
    Column("learnt_from", String(40), nullable=False),
    Column("learnt_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# A payment taken back by a correction: one reversing entry, at most once per payment.
payment_reversals = Table(
    "payment_reversals",
    metadata,
    Column("payment_id", String(64), ForeignKey("payments.payment_id"), primary_key=True),
    Column("cause_key", String(200), nullable=False, unique=True),
    Column("pcn_id", String(12), nullable=False),
    Column("organisation_id", String(64), nullable=False),
    Column("reversed_pence", BigInteger, nullable=False),
    Column("open_cancelled_pence", BigInteger, nullable=False),
    Column("overpaid_pence", BigInteger, nullable=False),  # held as a credit for the organisation
    Column("business_date", Date, nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(
        "open_cancelled_pence >= 0 AND overpaid_pence >= 0 AND open_cancelled_pence + overpaid_pence = reversed_pence",
        name="parts_add_up",
    ),
)
Index("ix_payment_reversals_pcn_org", payment_reversals.c.pcn_id, payment_reversals.c.organisation_id)

settlements = Table(
    "settlements",
    metadata,
    Column("settlement_id", String(64), primary_key=True),
    Column("cause_key", String(200), nullable=False, unique=True),
    Column("pcn_id", String(12), nullable=False),
    Column("organisation_id", String(64), nullable=False),
    Column("amount_pence", BigInteger, nullable=False),
    Column("unallocated_pence", BigInteger, nullable=False),
    Column("paid_on", Date, nullable=False),
    Column("reference", String(140), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("pcn_id", "organisation_id", "reference", name="uq_settlements_pcn_org_reference"),
    CheckConstraint(
        "amount_pence > 0 AND unallocated_pence >= 0 AND unallocated_pence <= amount_pence", name="amounts_sane"
    ),
)

allocations = Table(
    "allocations",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("settlement_id", String(64), ForeignKey("settlements.settlement_id"), nullable=False, index=True),
    Column("payment_id", String(64), ForeignKey("payments.payment_id"), nullable=False, index=True),
    Column("amount_pence", BigInteger, nullable=False),
    CheckConstraint("amount_pence > 0", name="positive"),
)

# --- projections: what the reports read, kept up to date by the code that writes the journal -----
# (projection.py). Each is a sum of movements keyed by the dates a report filters on, so a report
# reads a few rows per organisation and day instead of every payment, allocation and reversal.

# Open amounts: for each payment's (organisation, due date, business date), what was accrued, paid
# against it and cancelled by a reversal, on the day the change counts from (`effective_on`: the
# later of the movement's own date and the payment's business date, which is when arrears first
# see the payment). What was open at the end of a day D is accrued - paid - cancelled over the rows
# with effective_on <= D (reports.arrears).
open_movements = Table(
    "open_movements",
    metadata,
    Column("pcn_id", String(12), primary_key=True),
    Column("organisation_id", String(64), primary_key=True),
    Column("due_date", Date, primary_key=True),
    Column("business_date", Date, primary_key=True),
    Column("effective_on", Date, primary_key=True),
    Column("accrued_pence", BigInteger, nullable=False, server_default="0"),
    Column("paid_pence", BigInteger, nullable=False, server_default="0"),
    Column("cancelled_pence", BigInteger, nullable=False, server_default="0"),
    CheckConstraint("accrued_pence >= 0 AND paid_pence >= 0 AND cancelled_pence >= 0", name="parts_not_negative"),
    CheckConstraint("effective_on >= business_date", name="effective_from_the_work"),
)

# Credit held for an organisation: money paid beyond what was open (on paid_on) and fees already paid
# that a correction took back (on the reversal's business date).
credit_movements = Table(
    "credit_movements",
    metadata,
    Column("pcn_id", String(12), primary_key=True),
    Column("organisation_id", String(64), primary_key=True),
    Column("effective_on", Date, primary_key=True),
    Column("credit_pence", BigInteger, nullable=False),
    CheckConstraint("credit_pence >= 0", name="credit_not_negative"),
)

# A statement's balance by day: work charged (by its business date), taken back (by the reversal's),
# paid (settlements, by paid_on). The opening balance of a statement is a sum over the days before it.
statement_days = Table(
    "statement_days",
    metadata,
    Column("pcn_id", String(12), primary_key=True),
    Column("organisation_id", String(64), primary_key=True),
    Column("on_date", Date, primary_key=True),
    Column("charged_pence", BigInteger, nullable=False, server_default="0"),
    Column("reversed_pence", BigInteger, nullable=False, server_default="0"),
    Column("paid_pence", BigInteger, nullable=False, server_default="0"),
    CheckConstraint("charged_pence >= 0 AND reversed_pence >= 0 AND paid_pence >= 0", name="parts_not_negative"),
)

# A charity's statement names no PCN: its opening balance reads by organisation and day.
Index("ix_statement_days_org_on_date", statement_days.c.organisation_id, statement_days.c.on_date)
# The statement's lines in its date range, by organisation and date.
Index("ix_payments_org_business_date", payments.c.organisation_id, payments.c.business_date)
Index("ix_payment_reversals_org_business_date", payment_reversals.c.organisation_id, payment_reversals.c.business_date)
Index("ix_settlements_org_paid_on", settlements.c.organisation_id, settlements.c.paid_on)
