"""Random sequences of accruals, settlements and duplicates through the real ledger code on the
real PostgreSQL: the books always balance, nothing open goes below 0, open = owed - paid, and
replaying the same causes posts nothing new. Each example runs in a transaction rolled back after."""

from __future__ import annotations

import asyncio
import functools
from datetime import date, timedelta
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, insert, select

from socialrx_funding_ledger import commands, domain, ledger
from socialrx_funding_ledger.rebuild import MIGRATIONS
from socialrx_funding_ledger.store import (
    agreements,
    journal_entries,
    journal_lines,
    organisations,
    outbox,
    payments,
    settlements,
)
from socialrx_shared.db import make_engine, make_sessionmaker, run_migrations
from socialrx_shared.outbox import stage

PCN, ORG = "PROP1", "org-prop"
START = date(2026, 4, 1)

ops = st.lists(
    st.one_of(
        st.tuples(st.just("accept"), st.integers(0, 7), st.integers(0, 364)),
        st.tuples(st.just("outcome"), st.integers(0, 7), st.sampled_from(["completed", "engaged"])),
        st.tuples(st.just("grant"), st.integers(0, 364), st.just(0)),
        st.tuples(st.just("settle"), st.integers(1, 40_000), st.integers(0, 5)),
    ),
    min_size=1,
    max_size=25,
)


@pytest.fixture(scope="module")
def database_url(postgres) -> str:
    url = postgres.new_database("ledger_props")
    asyncio.run(run_migrations(MIGRATIONS, url))
    return url


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=ops, cap=st.one_of(st.none(), st.integers(0, 60_000)), replay=st.booleans())
def test_ledger_invariants_hold_for_any_sequence(database_url: str, steps: list, cap: int | None, replay: bool) -> None:
    asyncio.run(_run(database_url, steps, cap, replay))


async def _run(url: str, steps: list, cap: int | None, replay: bool) -> None:
    engine = make_engine(url, pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session:
            await session.begin()
            # Only what the ledger uses of a ServiceRuntime: its name and staging into its outbox.
            rt = SimpleNamespace(name="funding-ledger", outbox=outbox, stage=functools.partial(_stage_into, outbox))
            agreement = domain.Agreement(
                "agr-prop", PCN, ORG, 5000, 12000, ("completed",), 20000, cap, "quarterly", 30, START
            )
            await session.execute(insert(organisations).values(organisation_id=ORG, learnt_from="test"))
            await session.execute(
                insert(agreements).values(
                    **(agreement.__dict__ | {"outcome_statuses": list(agreement.outcome_statuses)}), created_by="test"
                )
            )
            for step in steps:
                await _apply(rt, session, agreement, step)
            counts = await _counts(session)
            await _check(session, agreement)
            for step in steps if replay else []:  # the same causes again: nothing new
                await _apply(rt, session, agreement, step)
            assert await _counts(session) == counts
            await session.rollback()
    finally:
        await engine.dispose()


async def _apply(rt, session, agreement: domain.Agreement, step: tuple) -> None:
    kind, a, b = step
    if kind == "accept":
        await ledger.accrue(
            rt,
            session,
            cause_key=f"referral_accepted:r{a}",
            agreement=agreement,
            basis="referral_accepted",
            amount_pence=agreement.per_referral_pence,
            business_date=START + timedelta(days=b),
            referral_id=f"r{a}",
        )
    elif kind == "outcome":
        await ledger.accrue(
            rt,
            session,
            cause_key=f"outcome_recorded:r{a}:{agreement.id}",
            agreement=agreement,
            basis="outcome_recorded",
            amount_pence=domain.fee(agreement, "outcome_recorded", b),
            business_date=START + timedelta(days=200),
            referral_id=f"r{a}",
        )
    elif kind == "grant":
        await ledger.accrue_block_grant(rt, session, agreement, START + timedelta(days=a))
    else:
        request = commands.SettlementRequest(ORG, a, START + timedelta(days=300), f"REF-{b}-{a}")
        await commands.settle_in(rt, session, PCN, request)


async def _counts(session) -> tuple:
    return tuple(
        [
            await session.scalar(select(func.count()).select_from(t))
            for t in (journal_entries, journal_lines, payments, settlements, outbox)
        ]
    )


async def _check(session, agreement: domain.Agreement) -> None:
    debits, credits = (
        await session.execute(select(func.sum(journal_lines.c.debit_pence), func.sum(journal_lines.c.credit_pence)))
    ).one()
    assert (debits or 0) == (credits or 0)
    rows = (await session.execute(select(payments))).mappings().all()
    assert all(0 <= r["open_pence"] <= r["amount_pence"] for r in rows)
    owed = sum(r["amount_pence"] for r in rows)
    paid_in, held = (
        await session.execute(
            select(
                func.coalesce(func.sum(settlements.c.amount_pence), 0),
                func.coalesce(func.sum(settlements.c.unallocated_pence), 0),
            )
        )
    ).one()
    assert sum(r["open_pence"] for r in rows) == owed - (paid_in - held)
    payable = await session.scalar(
        select(func.coalesce(func.sum(journal_lines.c.credit_pence - journal_lines.c.debit_pence), 0)).where(
            journal_lines.c.account == ledger.payable_account(PCN, ORG)
        )
    )
    assert payable == sum(r["open_pence"] for r in rows)  # the books and the payments agree
    if agreement.cap_pence_per_year is not None:
        assert owed <= agreement.cap_pence_per_year  # all steps fall in one financial year
    credit = await session.scalar(
        select(func.coalesce(func.sum(journal_lines.c.debit_pence - journal_lines.c.credit_pence), 0)).where(
            journal_lines.c.account == ledger.credit_account(PCN, ORG)
        )
    )
    assert credit == held  # an overpayment is held, never lost


async def _stage_into(outbox, session, spec, data, headers=None):
    return await stage(session, outbox, spec, data, source="funding-ledger", headers=headers)
