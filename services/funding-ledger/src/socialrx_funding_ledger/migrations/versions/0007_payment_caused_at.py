"""payments keep the instant of their cause, for allocation order

Revision ID: 0007_payment_caused_at
Revises: 0006_outcome_fee_reversals
Create Date: 2026-11-26 05:40:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0007_payment_caused_at'
down_revision = '0006_outcome_fee_reversals'
branch_labels = None
depends_on = None


# Older payments have none (NULL): they keep ordering by business date, then id.
def upgrade() -> None:
    op.add_column('payments', sa.Column('caused_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column('payments', 'caused_at')
