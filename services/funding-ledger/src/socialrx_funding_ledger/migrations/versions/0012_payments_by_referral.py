"""payments found by their referral

Revision ID: 0012_payments_by_referral
Revises: 0011_report_projections
Create Date: 2026-11-26 14:20:00

Deciding a referral's outcome fee reads that referral's fees. Without this index PostgreSQL walked
every payment of the agreement to find them, a cost that grew with the agreement's history.
"""
from alembic import op

revision = '0012_payments_by_referral'
down_revision = '0011_report_projections'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_payments_referral_basis', 'payments', ['referral_id', 'basis'])


def downgrade() -> None:
    op.drop_index('ix_payments_referral_basis', table_name='payments')
