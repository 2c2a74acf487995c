"""a settlement reference is unique per PCN and organisation, not per organisation

Revision ID: 0005_settlement_ref_per_pcn
Revises: 0004_journal_truncate_guard
Create Date: 2026-11-26 05:06:00
"""
from alembic import op

revision = '0005_settlement_ref_per_pcn'
down_revision = '0004_journal_truncate_guard'
branch_labels = None
depends_on = None


# Two PCNs paying one charity may use the same bank reference (e.g. "APRIL"): each PCN's
# payments are its own. Widening the key cannot fail on existing rows.
def upgrade() -> None:
    op.drop_constraint('uq_settlements_org_reference', 'settlements', type_='unique')
    op.create_unique_constraint('uq_settlements_pcn_org_reference', 'settlements',
                                ['pcn_id', 'organisation_id', 'reference'])


def downgrade() -> None:
    op.drop_constraint('uq_settlements_pcn_org_reference', 'settlements', type_='unique')
    op.create_unique_constraint('uq_settlements_org_reference', 'settlements', ['organisation_id', 'reference'])
