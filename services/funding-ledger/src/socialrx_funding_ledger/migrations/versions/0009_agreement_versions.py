"""agreement versions (changes kept); accepted referrals keep their instant

Revision ID: 0009_agreement_versions
Revises: 0008_known_organisations
Create Date: 2026-11-26 05:30:00
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0009_agreement_versions'
down_revision = '0008_known_organisations'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'agreement_versions',
        sa.Column('agreement_id', sa.String(length=64), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('effective_from', sa.Date(), nullable=False),
        sa.Column('per_referral_pence', sa.BigInteger(), nullable=False),
        sa.Column('per_outcome_pence', sa.BigInteger(), nullable=False),
        sa.Column('outcome_statuses', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column('block_grant_pence_per_period', sa.BigInteger(), nullable=False),
        sa.Column('cap_pence_per_year', sa.BigInteger(), nullable=True),
        sa.Column('ends_on', sa.Date(), nullable=True),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.Column('changed_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('changed_by', sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(['agreement_id'], ['agreements.id'],
                                name=op.f('fk_agreement_versions_agreement_id_agreements')),
        sa.PrimaryKeyConstraint('agreement_id', 'version', name=op.f('pk_agreement_versions')),
    )
    # Every existing agreement's terms become its version 1.
    op.execute("INSERT INTO agreement_versions (agreement_id, version, effective_from, per_referral_pence, "
               "per_outcome_pence, outcome_statuses, block_grant_pence_per_period, cap_pence_per_year, ends_on, "
               "reason, changed_at, changed_by) "
               "SELECT id, 1, starts_on, per_referral_pence, per_outcome_pence, outcome_statuses, "
               "block_grant_pence_per_period, cap_pence_per_year, ends_on, 'agreed', created_at, created_by "
               "FROM agreements")
    op.add_column('accepted_referrals', sa.Column('accepted_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column('accepted_referrals', 'accepted_at')
    op.drop_table('agreement_versions')
