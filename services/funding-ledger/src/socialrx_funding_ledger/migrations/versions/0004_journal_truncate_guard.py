"""the journal refuses TRUNCATE too

Revision ID: 0004_journal_truncate_guard
Revises: 0003_cap_arrears_indexes
Create Date: 2026-11-26 05:05:00
"""
from alembic import op

revision = '0004_journal_truncate_guard'
down_revision = '0003_cap_arrears_indexes'
branch_labels = None
depends_on = None

# Row triggers (0002) do not fire on TRUNCATE, which empties a table without deleting rows one by
# one: a statement-level BEFORE TRUNCATE trigger closes that door. journal_is_immutable() raises
# whatever the operation, so it serves both. (TRUNCATE journal_entries also needs CASCADE or
# journal_lines with it, and is refused the same way.)
TABLES = ("journal_entries", "journal_lines")


def upgrade() -> None:
    for table in TABLES:
        op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                   f"FOR EACH STATEMENT EXECUTE FUNCTION journal_is_immutable()")


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DROP TRIGGER {table}_no_truncate ON {table}")
