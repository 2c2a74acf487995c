"""Migration 0011 builds the reports' projections from the rows already in a ledger: a ledger at
0010 with payments, settlements, allocations and reversals, upgraded, holds projections equal to
their recomputation, and arrears read from them as before."""

from __future__ import annotations

import asyncio
from datetime import date

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from socialrx_funding_ledger import projection, reports
from socialrx_funding_ledger.rebuild import MIGRATIONS
from socialrx_shared.db import make_engine, make_sessionmaker

PCN, ORG = "PMIGR", "org-migr"


def _upgrade(url: str, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, revision)


async def test_migration_0011_builds_the_projections_from_existing_rows(postgres) -> None:
    url = postgres.new_database("ledger_migration")
    await asyncio.to_thread(_upgrade, url, "0010_insight_reference_rates")
    engine = make_engine(url, pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            for n, (amount, open_, business_date) in enumerate(
                ((5000, 2000, date(2026, 4, 10)), (12000, 0, date(2026, 5, 2)), (700, 700, date(2026, 6, 1)))
            ):
                await session.execute(
                    text(
                        "INSERT INTO payments (payment_id, cause_key, agreement_id, pcn_id, organisation_id, basis, "
                        "amount_pence, open_pence, period, due_date, business_date) VALUES (:id, :id, 'agr', :pcn, :org, "
                        "'referral_accepted', :amount, :open, '2026/27-Q1', :due, :business)"
                    ),
                    {
                        "id": f"p{n}",
                        "pcn": PCN,
                        "org": ORG,
                        "amount": amount,
                        "open": open_,
                        "due": date(2026, 7, 30),
                        "business": business_date,
                    },
                )
            await session.execute(
                text(
                    "INSERT INTO settlements (settlement_id, cause_key, pcn_id, organisation_id, amount_pence, "
                    "unallocated_pence, paid_on, reference) VALUES ('s1', 's1', :pcn, :org, 15500, 500, '2026-04-20', 'r')"
                ),
                {"pcn": PCN, "org": ORG},
            )
            await session.execute(
                text(
                    "INSERT INTO allocations (settlement_id, payment_id, amount_pence) VALUES "
                    "('s1', 'p0', 3000), ('s1', 'p1', 12000)"
                )
            )
            # p1, paid in full, is taken back: its 12000 becomes credit held.
            await session.execute(text("UPDATE payments SET reversed_pence = 12000 WHERE payment_id = 'p1'"))
            await session.execute(
                text(
                    "INSERT INTO payment_reversals (payment_id, cause_key, pcn_id, organisation_id, reversed_pence, "
                    "open_cancelled_pence, overpaid_pence, business_date, reason) VALUES "
                    "('p1', 'reversal:payment:p1', :pcn, :org, 12000, 0, 12000, '2026-06-15', 'corrected')"
                ),
                {"pcn": PCN, "org": ORG},
            )
        await asyncio.to_thread(_upgrade, url, "head")
        async with make_sessionmaker(engine)() as session:
            stored = await projection.stored(session)
            assert stored == await projection.recomputed(session)
            assert all(stored.values())  # something in each
            arrears = await reports.arrears(session, date(2026, 12, 31), pcn_id=PCN, organisation_id=None)
            # p0: 5000 - 3000 paid; p2: 700 open; p1 paid and taken back: 500 + 12000 held as credit.
            assert (arrears["total"]["owed_pence"], arrears["total"]["credit_held_pence"]) == (2700, 12500)
            early = await reports.arrears(session, date(2026, 4, 15), pcn_id=PCN, organisation_id=None)
            assert (early["total"]["owed_pence"], early["total"]["credit_held_pence"]) == (5000, 0)
    finally:
        await engine.dispose()
