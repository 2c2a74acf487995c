"""outcome corrections and report indexes

An outcome gets a revision and the time it was last corrected; what a correction replaced is kept
in outcome_corrections. Indexes for report scans by PCN and organisation, and measures by referral.

Revision ID: d8fba0d90603
Revises: d15ca86ce9ba
Create Date: 2026-11-24 03:09:55.603936
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = 'd8fba0d90603'
down_revision = 'd15ca86ce9ba'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('outcome_corrections',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('outcome_id', sa.String(length=64), nullable=False),
    sa.Column('replaced_revision', sa.Integer(), nullable=False),
    sa.Column('previous', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('reason', sa.String(length=500), nullable=False),
    sa.Column('corrected_by', sa.String(length=200), nullable=False),
    sa.Column('corrected_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outcome_corrections'))
    )
    op.create_index(op.f('ix_outcome_corrections_outcome_id'), 'outcome_corrections', ['outcome_id'], unique=False)
    op.create_index('ix_measures_referral_id', 'measures', ['referral_id'], unique=False)
    op.add_column('outcomes', sa.Column('revision', sa.Integer(), server_default=sa.text('1'), nullable=False))
    op.add_column('outcomes', sa.Column('corrected_at', sa.DateTime(timezone=True), nullable=True))
    op.create_index('ix_referral_view_organisation_id', 'referral_view', ['organisation_id'], unique=False)
    op.create_index('ix_referral_view_pcn_id', 'referral_view', ['pcn_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_referral_view_pcn_id', table_name='referral_view')
    op.drop_index('ix_referral_view_organisation_id', table_name='referral_view')
    op.drop_column('outcomes', 'corrected_at')
    op.drop_column('outcomes', 'revision')
    op.drop_index('ix_measures_referral_id', table_name='measures')
    op.drop_index(op.f('ix_outcome_corrections_outcome_id'), table_name='outcome_corrections')
    op.drop_table('outcome_corrections')
