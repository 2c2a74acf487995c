"""Email notifications to organisations: one per referral and reason

Revision ID: 5c2e8d1a7f30
Revises: 9bf7b6562055
Create Date: 2026-11-26 05:15:00
"""
from alembic import op
import sqlalchemy as sa

revision = '5c2e8d1a7f30'
down_revision = '9bf7b6562055'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('email_notifications',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('referral_id', sa.String(length=64), nullable=False),
    sa.Column('reason', sa.String(length=20), nullable=False),
    sa.Column('organisation_id', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_email_notifications'))
    )
    op.create_index('uq_email_notifications_referral_reason', 'email_notifications', ['referral_id', 'reason'], unique=True)
    op.create_index('ix_email_notifications_due', 'email_notifications', ['next_attempt_at'], unique=False,
                    postgresql_where=sa.text("status = 'pending'"))


def downgrade() -> None:
    op.drop_index('ix_email_notifications_due', table_name='email_notifications', postgresql_where=sa.text("status = 'pending'"))
    op.drop_index('uq_email_notifications_referral_reason', table_name='email_notifications')
    op.drop_table('email_notifications')
