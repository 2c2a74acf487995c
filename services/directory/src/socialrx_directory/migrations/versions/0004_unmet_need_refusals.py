"""referral refusals (referral.refused) counted as unmet need

Revision ID: 0004_unmet_need_refusals
Revises: 5c2e8d1a7f30
Create Date: 2026-11-26 05:45:00
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0004_unmet_need_refusals'
down_revision = '5c2e8d1a7f30'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'referral_refusals',
        sa.Column('refusal_id', sa.String(length=64), nullable=False),
        sa.Column('pcn_id', sa.String(length=12), nullable=False),
        sa.Column('organisation_id', sa.String(length=64), nullable=False),
        sa.Column('service_id', sa.String(length=64), nullable=False),
        sa.Column('needs', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column('age_band', sa.String(length=8), nullable=False),
        sa.Column('postcode_district', sa.String(length=4), nullable=False),
        sa.Column('reason', sa.String(length=40), nullable=False),
        sa.Column('refused_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('refusal_id', name=op.f('pk_referral_refusals')),
    )
    op.create_index(op.f('ix_referral_refusals_refused_at'), 'referral_refusals', ['refused_at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_referral_refusals_refused_at'), table_name='referral_refusals')
    op.drop_table('referral_refusals')
