"""services.update_pending: service.updated coalesced (one event for many changes of capacity)

Revision ID: 0005_service_update_pending
Revises: 0004_unmet_need_refusals
Create Date: 2026-11-26 08:20:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0005_service_update_pending'
down_revision = '0004_unmet_need_refusals'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('services', sa.Column('update_pending', sa.Boolean(), server_default=sa.false(), nullable=False))
    op.create_index('ix_services_update_pending', 'services', ['id'], unique=False,
                    postgresql_where=sa.text('update_pending'))


def downgrade() -> None:
    op.drop_index('ix_services_update_pending', table_name='services', postgresql_where=sa.text('update_pending'))
    op.drop_column('services', 'update_pending')
