"""A correction changes what is owed, and the same facts in any order give the same ledger.

Hypothesis permutes one referral's acceptance and its outcome's revisions (recorded, corrected,
corrected back), with redeliveries, through the real handlers on the real PostgreSQL; every order
must leave the same balances, the same fees owed and open, and nothing held as credit. Each
example runs in a transaction rolled back after."""

from __future__ import annotations

import asyncio
import functools
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, insert, select

from socialrx_funding_ledger import domain, handlers
from socialrx_funding_ledger.rebuild import MIGRATIONS
from socialrx_funding_ledger.store import agreements, journal_lines, outbox, payment_reversals, payments
from socialrx_shared import events as ev
from socialrx_shared.db import make_engine, make_sessionmaker, run_migrations
from socialrx_shared.outbox import stage

PCN, ORG, REFERRAL = "PCORR", "org-corr", "r-corr"
AGREEMENT = domain.Agreement(
    "agr-corr", PCN, ORG, 5000, 12000, ("completed",), 0, None, "quarterly", 30, datetime(2026, 4, 1).date()
)
ACCEPTED_AT = datetime(2026, 5, 4, 9, tzinfo=timezone.utc)
RECORDED_AT = datetime(2026, 6, 30, 23, 30, tzinfo=timezone.utc)  # 1 July in the UK: Q2


def _events(statuses: list[str]) -> list[ev.Strict]:
    accepted = ev.ReferralAccepted(
        referral_id=REFERRAL, organisation_id=ORG, service_id="svc", pcn_id=PCN, accepted_at=ACCEPTED_AT
    )
    revisions = [
        ev.OutcomeRecorded(
            outcome_id="o-corr",
            referral_id=REFERRAL,
            organisation_id=ORG,
            pcn_id=PCN,
            status=status,
            sessions_attended=3,
            recorded_at=RECORDED_AT,
            revision=number,
            corrected_at=None if number == 1 else RECORDED_AT + timedelta(days=10 * number),
        )
        for number, status in enumerate(statuses, start=1)
    ]
    return [accepted, *revisions]


statuses = st.lists(st.sampled_from(["completed", "engaged", "disengaged"]), min_size=1, max_size=3)


@st.composite
def orders(draw):
    facts = _events(draw(statuses))
    redelivered = draw(st.lists(st.sampled_from(facts), max_size=3))
    return facts, draw(st.permutations(facts + redelivered))


@pytest.fixture(scope="module")
def database_url(postgres) -> str:
    url = postgres.new_database("ledger_corrections")
    asyncio.run(run_migrations(MIGRATIONS, url))
    return url


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=orders())
def test_any_order_of_accepted_recorded_corrected_gives_the_same_ledger(database_url: str, case) -> None:
    facts, order = case
    final = facts[-1].status  # the outcome's newest revision
    fee_owed = 12000 if final == "completed" else 0
    in_order = asyncio.run(_ledger_after(database_url, facts))
    shuffled = asyncio.run(_ledger_after(database_url, order))
    assert shuffled["money"] == in_order["money"]
    assert in_order["money"] == {
        "balances": {f"expense:{PCN}": 5000 + fee_owed, f"payable:{PCN}:{ORG}": -(5000 + fee_owed)},
        "owed": {"referral_accepted": 5000, "outcome_recorded": fee_owed},
        "open": {"referral_accepted": 5000, "outcome_recorded": fee_owed},
        "business_dates": {("referral_accepted", "2026-05-04")}
        | ({("outcome_recorded", "2026-07-01")} if fee_owed else set()),
    }
    # What was accrued and then taken back is said downstream, once per reversal.
    assert shuffled["reversals"] == shuffled["reversed_events"]


async def _ledger_after(url: str, events: list[ev.Strict]) -> dict:
    engine = make_engine(url, pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session:
            await session.begin()
            rt = SimpleNamespace(name="funding-ledger", stage=functools.partial(_stage_into, outbox))
            await session.execute(
                insert(agreements).values(
                    **(AGREEMENT.__dict__ | {"outcome_statuses": list(AGREEMENT.outcome_statuses)}), created_by="test"
                )
            )
            for event in events:
                if isinstance(event, ev.ReferralAccepted):
                    await handlers.on_accepted(rt, session, event)
                else:
                    await handlers.on_outcome(rt, session, event)
            result = await _money(session)
            await session.rollback()
            return result
    finally:
        await engine.dispose()


async def _money(session) -> dict:
    balances = {
        account: int(balance)
        for account, balance in (
            await session.execute(
                select(
                    journal_lines.c.account, func.sum(journal_lines.c.debit_pence - journal_lines.c.credit_pence)
                ).group_by(journal_lines.c.account)
            )
        ).all()
        if balance
    }
    rows = (await session.execute(select(payments))).mappings().all()
    owed = {
        basis: sum(r["amount_pence"] - r["reversed_pence"] for r in rows if r["basis"] == basis)
        for basis in ("referral_accepted", "outcome_recorded")
    }
    open_ = {
        basis: sum(r["open_pence"] for r in rows if r["basis"] == basis)
        for basis in ("referral_accepted", "outcome_recorded")
    }
    live_dates = {(r["basis"], r["business_date"].isoformat()) for r in rows if not r["reversed_pence"]}
    reversals = await session.scalar(select(func.count()).select_from(payment_reversals))
    reversed_events = await session.scalar(
        select(func.count()).select_from(outbox).where(outbox.c.topic == ev.PAYMENT_REVERSED.topic)
    )
    return {
        "money": {"balances": balances, "owed": owed, "open": open_, "business_dates": live_dates},
        "reversals": reversals,
        "reversed_events": reversed_events,
    }


async def _stage_into(outbox_table, session, spec, data, headers=None):
    return await stage(session, outbox_table, spec, data, source="funding-ledger", headers=headers)
