"""projections the reports read (open amounts, credit held, statement days), built from existing rows

Revision ID: 0011_report_projections
Revises: 0010_insight_reference_rates
Create Date: 2026-11-26 08:20:00

From here on ledger.record_payment / record_settlement / record_reversal keep them up to date in the
transaction that posts the journal (projection.py). The SELECTs below are projection.py's RECOMPUTE_*
as they were when this migration was written (copied, so a later change there cannot change history).
"""
from alembic import op
import sqlalchemy as sa

revision = '0011_report_projections'
down_revision = '0010_insight_reference_rates'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'open_movements',
        sa.Column('pcn_id', sa.String(length=12), nullable=False),
        sa.Column('organisation_id', sa.String(length=64), nullable=False),
        sa.Column('due_date', sa.Date(), nullable=False),
        sa.Column('business_date', sa.Date(), nullable=False),
        sa.Column('effective_on', sa.Date(), nullable=False),
        sa.Column('accrued_pence', sa.BigInteger(), server_default='0', nullable=False),
        sa.Column('paid_pence', sa.BigInteger(), server_default='0', nullable=False),
        sa.Column('cancelled_pence', sa.BigInteger(), server_default='0', nullable=False),
        sa.CheckConstraint('accrued_pence >= 0 AND paid_pence >= 0 AND cancelled_pence >= 0',
                           name=op.f('ck_open_movements_parts_not_negative')),
        sa.CheckConstraint('effective_on >= business_date', name=op.f('ck_open_movements_effective_from_the_work')),
        sa.PrimaryKeyConstraint('pcn_id', 'organisation_id', 'due_date', 'business_date', 'effective_on',
                                name=op.f('pk_open_movements')),
    )
    op.create_table(
        'credit_movements',
        sa.Column('pcn_id', sa.String(length=12), nullable=False),
        sa.Column('organisation_id', sa.String(length=64), nullable=False),
        sa.Column('effective_on', sa.Date(), nullable=False),
        sa.Column('credit_pence', sa.BigInteger(), nullable=False),
        sa.CheckConstraint('credit_pence >= 0', name=op.f('ck_credit_movements_credit_not_negative')),
        sa.PrimaryKeyConstraint('pcn_id', 'organisation_id', 'effective_on', name=op.f('pk_credit_movements')),
    )
    op.create_table(
        'statement_days',
        sa.Column('pcn_id', sa.String(length=12), nullable=False),
        sa.Column('organisation_id', sa.String(length=64), nullable=False),
        sa.Column('on_date', sa.Date(), nullable=False),
        sa.Column('charged_pence', sa.BigInteger(), server_default='0', nullable=False),
        sa.Column('reversed_pence', sa.BigInteger(), server_default='0', nullable=False),
        sa.Column('paid_pence', sa.BigInteger(), server_default='0', nullable=False),
        sa.CheckConstraint('charged_pence >= 0 AND reversed_pence >= 0 AND paid_pence >= 0',
                           name=op.f('ck_statement_days_parts_not_negative')),
        sa.PrimaryKeyConstraint('pcn_id', 'organisation_id', 'on_date', name=op.f('pk_statement_days')),
    )
    op.create_index('ix_statement_days_org_on_date', 'statement_days', ['organisation_id', 'on_date'])
    op.create_index('ix_payments_org_business_date', 'payments', ['organisation_id', 'business_date'])
    op.create_index('ix_payment_reversals_org_business_date', 'payment_reversals',
                    ['organisation_id', 'business_date'])
    op.create_index('ix_settlements_org_paid_on', 'settlements', ['organisation_id', 'paid_on'])
    op.execute("""
INSERT INTO open_movements (pcn_id, organisation_id, due_date, business_date, effective_on,
                            accrued_pence, paid_pence, cancelled_pence)
SELECT pcn_id, organisation_id, due_date, business_date, effective_on, sum(accrued), sum(paid), sum(cancelled)
FROM (
    SELECT pcn_id, organisation_id, due_date, business_date, business_date AS effective_on,
           amount_pence AS accrued, 0 AS paid, 0 AS cancelled
    FROM payments WHERE amount_pence > 0
    UNION ALL
    SELECT p.pcn_id, p.organisation_id, p.due_date, p.business_date, greatest(p.business_date, s.paid_on),
           0, a.amount_pence, 0
    FROM allocations a JOIN settlements s ON s.settlement_id = a.settlement_id
    JOIN payments p ON p.payment_id = a.payment_id
    UNION ALL
    SELECT p.pcn_id, p.organisation_id, p.due_date, p.business_date, greatest(p.business_date, r.business_date),
           0, 0, r.open_cancelled_pence
    FROM payment_reversals r JOIN payments p ON p.payment_id = r.payment_id WHERE r.open_cancelled_pence > 0
) m
GROUP BY pcn_id, organisation_id, due_date, business_date, effective_on
""")
    op.execute("""
INSERT INTO credit_movements (pcn_id, organisation_id, effective_on, credit_pence)
SELECT pcn_id, organisation_id, effective_on, sum(pence)
FROM (
    SELECT pcn_id, organisation_id, paid_on AS effective_on, unallocated_pence AS pence
    FROM settlements WHERE unallocated_pence > 0
    UNION ALL
    SELECT pcn_id, organisation_id, business_date, overpaid_pence FROM payment_reversals WHERE overpaid_pence > 0
) m
GROUP BY pcn_id, organisation_id, effective_on
""")
    op.execute("""
INSERT INTO statement_days (pcn_id, organisation_id, on_date, charged_pence, reversed_pence, paid_pence)
SELECT pcn_id, organisation_id, on_date, sum(charged), sum(reversed), sum(paid)
FROM (
    SELECT pcn_id, organisation_id, business_date AS on_date, amount_pence AS charged, 0 AS reversed, 0 AS paid
    FROM payments WHERE amount_pence > 0
    UNION ALL
    SELECT pcn_id, organisation_id, business_date, 0, reversed_pence, 0 FROM payment_reversals WHERE reversed_pence > 0
    UNION ALL
    SELECT pcn_id, organisation_id, paid_on, 0, 0, amount_pence FROM settlements
) m
GROUP BY pcn_id, organisation_id, on_date
""")


def downgrade() -> None:
    op.drop_index('ix_settlements_org_paid_on', table_name='settlements')
    op.drop_index('ix_payment_reversals_org_business_date', table_name='payment_reversals')
    op.drop_index('ix_payments_org_business_date', table_name='payments')
    op.drop_index('ix_statement_days_org_on_date', table_name='statement_days')
    op.drop_table('statement_days')
    op.drop_table('credit_movements')
    op.drop_table('open_movements')
