"""outcome fees follow corrections: outcomes kept, payments reversible

Revision ID: 0006_outcome_fee_reversals
Revises: 0005_settlement_ref_per_pcn
Create Date: 2026-11-26 05:20:00
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0006_outcome_fee_reversals'
down_revision = '0005_settlement_ref_per_pcn'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('payments', sa.Column('reversed_pence', sa.BigInteger(), server_default='0', nullable=False))
    op.create_check_constraint(op.f('ck_payments_reversed_wholly_or_not'), 'payments',
                               'reversed_pence = 0 OR reversed_pence = amount_pence')
    op.create_table(
        'outcomes',
        sa.Column('outcome_id', sa.String(length=64), nullable=False),
        sa.Column('referral_id', sa.String(length=64), nullable=False),
        sa.Column('revision', sa.Integer(), nullable=False),
        sa.Column('event', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint('outcome_id', name=op.f('pk_outcomes')),
    )
    op.create_index(op.f('ix_outcomes_referral_id'), 'outcomes', ['referral_id'], unique=False)
    # Outcomes still waiting for their acceptance move over; outcomes accrued before this
    # migration are not known (a correction of one is still judged on its own newest revision).
    op.execute("INSERT INTO outcomes (outcome_id, referral_id, revision, event) "
               "SELECT outcome_id, referral_id, COALESCE((event->>'revision')::int, 1), event FROM pending_outcomes")
    op.drop_index(op.f('ix_pending_outcomes_referral_id'), table_name='pending_outcomes')
    op.drop_table('pending_outcomes')
    op.create_table(
        'payment_reversals',
        sa.Column('payment_id', sa.String(length=64), nullable=False),
        sa.Column('cause_key', sa.String(length=200), nullable=False),
        sa.Column('pcn_id', sa.String(length=12), nullable=False),
        sa.Column('organisation_id', sa.String(length=64), nullable=False),
        sa.Column('reversed_pence', sa.BigInteger(), nullable=False),
        sa.Column('open_cancelled_pence', sa.BigInteger(), nullable=False),
        sa.Column('overpaid_pence', sa.BigInteger(), nullable=False),
        sa.Column('business_date', sa.Date(), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.CheckConstraint('open_cancelled_pence >= 0 AND overpaid_pence >= 0 AND '
                           'open_cancelled_pence + overpaid_pence = reversed_pence',
                           name=op.f('ck_payment_reversals_parts_add_up')),
        sa.ForeignKeyConstraint(['payment_id'], ['payments.payment_id'],
                                name=op.f('fk_payment_reversals_payment_id_payments')),
        sa.PrimaryKeyConstraint('payment_id', name=op.f('pk_payment_reversals')),
        sa.UniqueConstraint('cause_key', name=op.f('uq_payment_reversals_cause_key')),
    )
    op.create_index('ix_payment_reversals_pcn_org', 'payment_reversals', ['pcn_id', 'organisation_id'])


def downgrade() -> None:
    op.drop_index('ix_payment_reversals_pcn_org', table_name='payment_reversals')
    op.drop_table('payment_reversals')
    op.create_table(
        'pending_outcomes',
        sa.Column('outcome_id', sa.String(length=64), nullable=False),
        sa.Column('referral_id', sa.String(length=64), nullable=False),
        sa.Column('event', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint('outcome_id', name=op.f('pk_pending_outcomes')),
    )
    op.create_index(op.f('ix_pending_outcomes_referral_id'), 'pending_outcomes', ['referral_id'], unique=False)
    op.drop_index(op.f('ix_outcomes_referral_id'), table_name='outcomes')
    op.drop_table('outcomes')
    op.drop_constraint(op.f('ck_payments_reversed_wholly_or_not'), 'payments', type_='check')
    op.drop_column('payments', 'reversed_pence')
