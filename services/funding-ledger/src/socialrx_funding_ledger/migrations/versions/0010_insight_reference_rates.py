"""reference rates for statutory late-payment interest, shipped with their source

Revision ID: 0010_insight_reference_rates
Revises: 0009_agreement_versions
Create Date: 2026-11-26 05:40:00

Bank Rate (the Bank of England's official dealing rate) in force on each reference day: 31 December
for the half-year starting the next 1 January, 30 June for the half-year starting 1 July. Sources, as
read on 2026-11-26 (this machine had no live web; each value is as those pages print it):
- 2011-01 to 2024-01: payontime.co.uk, "How to calculate late payment interest and compensation",
  reference-rate table, https://payontime.co.uk/how-to-calculate-late-payment-interest-and-compensation
- 2025-07 (4.25%) and 2026-01 (3.75%, after the MPC's cut of 18 December 2025): The Access Group,
  "Late payment interest updates December 2025",
  https://help-proclaim.theaccessgroup.com/en/articles/13185069-debt-debtors-case-type-late-payment-interest-updates-december-2025
Half-years starting 2024-07-01 and 2025-01-01 are left out on purpose: no source we could read states
them, and a rate is never guessed. Interest on a debt in a half-year with no rate is reported as
unknown until an admin adds it (POST /reference-rates), which is checked against the Bank of England's
"Official Bank Rate history" (https://www.bankofengland.co.uk/boeapps/database/Bank-Rate.asp).
"""
from alembic import op
import sqlalchemy as sa

revision = '0010_insight_reference_rates'
down_revision = '0009_agreement_versions'
branch_labels = None
depends_on = None

PAYONTIME = "payontime.co.uk reference-rate table (Bank Rate on the reference day)"
ACCESS = "The Access Group, late payment interest updates December 2025 (Bank Rate on the reference day)"
# Bank Rate was 5.25% from August 2023 until the cut to 5% on 1 August 2024, and 4.75% from 7 November
# 2024 until the cut to 4.5% in February 2025, so on 30 June 2024 and 31 December 2024 respectively.
MSE = "MoneySavingExpert news 13 November 2024 (5.25% until August 2024; 4.75% from 7 November 2024)"

RATES = [
    # Bank Rate stayed at 0.50% from March 2009 to August 2016.
    *[(f"{year}-{month}-01", "0.50", PAYONTIME) for year in range(2011, 2017) for month in ("01", "07")],
    ("2017-01-01", "0.25", PAYONTIME),
    ("2017-07-01", "0.25", PAYONTIME),
    ("2018-01-01", "0.50", PAYONTIME),
    ("2018-07-01", "0.50", PAYONTIME),
    ("2019-01-01", "0.75", PAYONTIME),
    ("2019-07-01", "0.75", PAYONTIME),
    ("2020-01-01", "0.75", PAYONTIME),
    ("2020-07-01", "0.10", PAYONTIME),
    ("2021-01-01", "0.10", PAYONTIME),
    ("2021-07-01", "0.10", PAYONTIME),
    ("2022-01-01", "0.25", PAYONTIME),
    ("2022-07-01", "1.25", PAYONTIME),
    ("2023-01-01", "3.50", PAYONTIME),
    ("2023-07-01", "5.00", PAYONTIME),
    ("2024-01-01", "5.25", PAYONTIME),
    ("2024-07-01", "5.25", MSE),
    ("2025-01-01", "4.75", MSE),
    ("2025-07-01", "4.25", ACCESS),
    ("2026-01-01", "3.75", ACCESS),
]


def upgrade() -> None:
    table = op.create_table(
        'reference_rates',
        sa.Column('half_year_starting', sa.Date(), nullable=False),
        sa.Column('rate_percent', sa.Numeric(6, 2), nullable=False),
        sa.Column('source', sa.Text(), nullable=False),
        sa.Column('added_by', sa.String(length=200), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.CheckConstraint('rate_percent >= 0 AND rate_percent < 100', name=op.f('ck_reference_rates_plausible_rate')),
        sa.CheckConstraint('EXTRACT(DAY FROM half_year_starting) = 1 AND EXTRACT(MONTH FROM half_year_starting) IN (1, 7)',
                           name=op.f('ck_reference_rates_starts_a_half_year')),
        sa.PrimaryKeyConstraint('half_year_starting', name=op.f('pk_reference_rates')),
    )
    from datetime import date
    from decimal import Decimal
    op.bulk_insert(table, [{"half_year_starting": date.fromisoformat(day), "rate_percent": Decimal(rate),
                            "source": source, "added_by": "migration 0010"} for day, rate, source in RATES])


def downgrade() -> None:
    op.drop_table('reference_rates')
