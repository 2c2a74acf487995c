"""organisations the ledger knows exist

Revision ID: 0008_known_organisations
Revises: 0007_payment_caused_at
Create Date: 2026-11-26 05:20:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0008_known_organisations'
down_revision = '0007_payment_caused_at'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'organisations',
        sa.Column('organisation_id', sa.String(length=64), nullable=False),
        sa.Column('name', sa.Text(), nullable=True),
        sa.Column('learnt_from', sa.String(length=40), nullable=False),
        sa.Column('learnt_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('organisation_id', name=op.f('pk_organisations')),
    )
    # Organisations that accepted a referral exist (the directory said so). Agreements are not
    # evidence: they were taken on trust before this table, which is the defect it closes.
    op.execute("INSERT INTO organisations (organisation_id, learnt_from) "
               "SELECT DISTINCT organisation_id, 'referral.accepted' FROM accepted_referrals")


def downgrade() -> None:
    op.drop_table('organisations')
