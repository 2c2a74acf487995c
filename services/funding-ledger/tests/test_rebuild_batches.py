"""The rebuild's batches (ledger_batch, set-based) leave exactly what the live write path leaves fact by
fact (rebuild.replay_one_by_one): the journal's balances, payments, settlements and the reports'
projections, whatever the batch size, with redeliveries inside a batch and across batches, on the
real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date, timedelta
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from socialrx_funding_ledger import domain, ledger, ledger_batch, rebuild
from socialrx_funding_ledger.rebuild import MIGRATIONS
from socialrx_shared import events as ev
from socialrx_shared.db import make_engine, make_sessionmaker, run_migrations

PCN, ORGS = "PBATCH", ("org-batch-a", "org-batch-b")


def _record(spec: ev.EventSpec, data: ev.Strict, cause: str) -> SimpleNamespace:
    envelope = ev.new_event(spec, data, source="funding-ledger")
    return SimpleNamespace(value=envelope.to_bytes(), headers=[(ledger.HEADER_CAUSE, cause.encode())])


@st.composite
def histories(draw):
    """Payments due, settlements that fit what is open, then reversals carrying the open/paid split
    left after every settlement (the order the rebuild replays in), each maybe delivered twice."""
    count = draw(st.integers(1, 12))
    payments = []
    for i in range(count):
        business_date = date(2026, 4, 1) + timedelta(days=draw(st.integers(0, 200)))
        cause = f"referral_accepted:batch-{i}"
        payments.append(
            ev.PaymentDue(
                payment_id=str(uuid.uuid5(ledger.PAYMENT_NAMESPACE, cause)),
                agreement_id="agr-batch",
                pcn_id=PCN,
                organisation_id=ORGS[i % 2],
                referral_id=f"batch-{i}",
                basis="referral_accepted",
                amount_pence=draw(st.sampled_from([0, 700, 5000])),
                period=domain.period_of(business_date, "quarterly").label,
                due_date=domain.due_date(business_date, "quarterly", 30),
                business_date=business_date,
            )
        )
    open_pence = {p.payment_id: p.amount_pence for p in payments}
    settlements = []
    for n in range(draw(st.integers(0, 5))):
        org = ORGS[n % 2]
        allocations = []
        for p in payments:
            if p.organisation_id == org and open_pence[p.payment_id] and draw(st.booleans()):
                pence = draw(st.integers(1, open_pence[p.payment_id]))
                open_pence[p.payment_id] -= pence
                allocations.append(ev.Allocation(payment_id=p.payment_id, amount_pence=pence))
        settlement_id = f"settlement-batch-{n}"
        settlements.append(
            (
                ev.PaymentSettled(
                    settlement_id=settlement_id,
                    pcn_id=PCN,
                    organisation_id=org,
                    amount_pence=sum(a.amount_pence for a in allocations) + draw(st.sampled_from([0, 0, 300])) or 1,
                    paid_on=date(2026, 4, 1) + timedelta(days=draw(st.integers(-10, 250))),
                    reference=f"ref {n}",
                    allocations=allocations,
                ),
                f"settlement:key:{PCN}:{settlement_id}",
            )
        )
    reversals = []
    for p in payments:
        if draw(st.booleans()):
            reversals.append(
                (
                    ev.PaymentReversed(
                        payment_id=p.payment_id,
                        agreement_id=p.agreement_id,
                        pcn_id=PCN,
                        organisation_id=p.organisation_id,
                        referral_id=p.referral_id,
                        basis=p.basis,
                        reversed_pence=p.amount_pence,
                        open_cancelled_pence=open_pence[p.payment_id],
                        overpaid_pence=p.amount_pence - open_pence[p.payment_id],
                        business_date=date(2026, 4, 1) + timedelta(days=draw(st.integers(0, 300))),
                        reason="corrected",
                    ),
                    f"reversal:payment:{p.payment_id}",
                )
            )

    def redelivered(records: list) -> list:
        out = list(records)
        for index in draw(st.lists(st.integers(0, max(len(records) - 1, 0)), max_size=3)) if records else []:
            out.insert(draw(st.integers(index + 1, len(out))), records[index])  # again, later
        return out

    due = draw(st.permutations([_record(ev.PAYMENT_DUE, p, f"referral_accepted:{p.referral_id}") for p in payments]))
    return (
        redelivered(due),
        redelivered([_record(ev.PAYMENT_SETTLED, s, c) for s, c in settlements]),
        redelivered([_record(ev.PAYMENT_REVERSED, r, c) for r, c in reversals]),
    )


@pytest.fixture(scope="module")
def database_urls(postgres) -> tuple[str, str]:
    urls = postgres.new_database("ledger_one_by_one"), postgres.new_database("ledger_batched")
    for url in urls:
        asyncio.run(run_migrations(MIGRATIONS, url))
    return urls


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=histories(), batch_events=st.integers(1, 8))
def test_batches_leave_what_the_live_path_leaves_fact_by_fact(
    database_urls: tuple[str, str], history, batch_events: int
) -> None:
    assert asyncio.run(_both(database_urls, history, batch_events))


async def _both(urls: tuple[str, str], history, batch_events: int) -> bool:
    due, settled, reversed_ = history
    one_url, batched_url = urls
    one, batched = make_engine(one_url, pool_size=1), make_engine(batched_url, pool_size=1)
    try:
        for engine in (one, batched):
            async with make_sessionmaker(engine)() as session, session.begin():
                await session.execute(text("SET LOCAL session_replication_role = replica"))  # past the journal's guard
                await session.execute(
                    text(
                        "TRUNCATE journal_lines, journal_entries, allocations, settlements, payment_reversals, payments, "
                        "open_movements, credit_movements, statement_days"
                    )
                )
        async with make_sessionmaker(one)() as session, session.begin():
            counts_one = await rebuild.replay_one_by_one(session, due, settled, PCN, reversed_)
        counts_batched = await rebuild.replay(
            make_sessionmaker(batched), due, settled, PCN, reversed_, batch_events=batch_events
        )
        assert counts_batched == counts_one
        async with make_sessionmaker(one)() as a, make_sessionmaker(batched)() as b:
            found = rebuild.differences(await rebuild.snapshot(a, PCN), await rebuild.snapshot(b, PCN))
        assert not found, found
        return True
    finally:
        await one.dispose()
        await batched.dispose()


async def test_a_batch_that_breaks_a_money_rule_is_refused_whole(database_urls: tuple[str, str]) -> None:
    """An allocation beyond what is open stops the batch, as it stops the live path: nothing of it stays."""
    engine = make_engine(database_urls[1], pool_size=1)
    try:
        payment = ev.PaymentDue(
            payment_id="p-broken",
            agreement_id="agr-batch",
            pcn_id=PCN,
            organisation_id=ORGS[0],
            referral_id=None,
            basis="block_grant",
            amount_pence=100,
            period="2026/27-Q1",
            due_date=date(2026, 7, 30),
            business_date=date(2026, 4, 1),
        )
        too_much = ev.PaymentSettled(
            settlement_id="s-broken",
            pcn_id=PCN,
            organisation_id=ORGS[0],
            amount_pence=500,
            paid_on=date(2026, 5, 1),
            reference="too much",
            allocations=[ev.Allocation(payment_id="p-broken", amount_pence=101)],
        )
        sessions = make_sessionmaker(engine)
        with pytest.raises(ledger.LedgerBroken, match="does not fit its open amount"):
            await rebuild.replay(
                sessions,
                [_record(ev.PAYMENT_DUE, payment, "block_grant:broken")],
                [_record(ev.PAYMENT_SETTLED, too_much, "settlement:broken")],
                PCN,
            )
        async with sessions() as session:
            assert await session.scalar(text("SELECT count(*) FROM settlements WHERE settlement_id = 's-broken'")) == 0
            assert await session.scalar(text("SELECT open_pence FROM payments WHERE payment_id = 'p-broken'")) == 100
    finally:
        await engine.dispose()


def test_first_of_each_keeps_the_first_fact_of_every_key() -> None:
    facts = [("a", 1), ("b", 1), ("a", 2), ("c", 3)]
    assert ledger_batch._first_of_each(facts, lambda f: f[0], lambda f: f[1]) == [("a", 1), ("c", 3)]
