"""journal immutable in the database; agreement and settlement amounts checked

Revision ID: 0002_immutable_journal
Revises: 664f2c9389bb
Create Date: 2026-11-24 10:00:00
"""
from alembic import op

revision = '0002_immutable_journal'
down_revision = '664f2c9389bb'
branch_labels = None
depends_on = None

# Entries are corrected by reversing entries, never edited: the database itself refuses an
# UPDATE or DELETE of a posted entry or line, whatever code (or person) tries.
FUNCTION = """
CREATE FUNCTION journal_is_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'journal entries are immutable: post a reversing entry instead (% on %)', TG_OP, TG_TABLE_NAME
    USING ERRCODE = 'restrict_violation';
END $$;
"""

CHECKS = {
    "agreements": {
        "amounts_not_negative": "per_referral_pence >= 0 AND per_outcome_pence >= 0 AND "
                                "block_grant_pence_per_period >= 0 AND (cap_pence_per_year IS NULL OR cap_pence_per_year >= 0)",
        "dates_in_order": "ends_on IS NULL OR ends_on >= starts_on",
        "known_period": "period IN ('monthly', 'quarterly')",
    },
    "settlements": {
        "amounts_sane": "amount_pence > 0 AND unallocated_pence >= 0 AND unallocated_pence <= amount_pence",
    },
    "payments": {
        "amounts_not_negative": "amount_pence >= 0 AND refused_over_cap_pence >= 0",
    },
}


def upgrade() -> None:
    op.execute(FUNCTION)
    for table in ("journal_entries", "journal_lines"):
        op.execute(f"CREATE TRIGGER {table}_immutable BEFORE UPDATE OR DELETE ON {table} "
                   f"FOR EACH ROW EXECUTE FUNCTION journal_is_immutable()")
    for table, checks in CHECKS.items():
        for name, condition in checks.items():
            op.create_check_constraint(op.f(f"ck_{table}_{name}"), table, condition)


def downgrade() -> None:
    for table, checks in CHECKS.items():
        for name in checks:
            op.drop_constraint(op.f(f"ck_{table}_{name}"), table, type_="check")
    for table in ("journal_entries", "journal_lines"):
        op.execute(f"DROP TRIGGER {table}_immutable ON {table}")
    op.execute("DROP FUNCTION journal_is_immutable()")
