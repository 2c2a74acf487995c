"""The reports' projections equal a full recomputation from the ledger's records, whatever happened.

Hypothesis draws acceptances, outcomes and their corrections (so reversals), settlements (paid before
or after the work, over- and part-paying), block grants, agreement changes and a back-dated agreement,
in any order and with redeliveries, and runs them through the real handlers and commands on the real
PostgreSQL. Afterwards:
- every projection row equals what projection.RECOMPUTE_* computes from payments, allocations,
  settlements and reversals;
- the projections agree with the journal: open amounts with each `payable:` balance, credit held with
  each `credit:` balance;
- GET /arrears' and the statement's figures equal the ones computed by scanning every payment, as the
  reports did before the projections (kept below as the oracle), for several dates and scopes.
Each example runs in a transaction rolled back after."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from socialrx_funding_ledger import commands, domain, handlers, projection, reports
from socialrx_funding_ledger.rebuild import MIGRATIONS
from socialrx_funding_ledger.store import (
    agreement_versions,
    agreements,
    allocations,
    journal_lines,
    organisations,
    outbox,
    payment_reversals,
    payments,
    settlements,
)
from socialrx_shared import events as ev
from socialrx_shared.db import make_engine, make_sessionmaker, run_migrations
from socialrx_shared.errors import Refused
from socialrx_shared.outbox import stage

P1, P2, ORG_A, ORG_B = "PPROJ1", "PPROJ2", "org-proj-a", "org-proj-b"
START = date(2026, 4, 1)
DAYS = 300  # work and payments fall between 2026-03-02 and 2027-01-26


def _day(offset: int) -> date:
    return START + timedelta(days=offset)


class Runtime:
    """What the handlers and commands need of the service: staging into the outbox, and a
    transaction (here a savepoint in the example's transaction, so a refusal undoes only itself)."""

    name = "funding-ledger"

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def stage(
        self, session: AsyncSession, spec: ev.EventSpec, data: ev.Strict, headers: dict[str, str] | None = None
    ) -> ev.Envelope:
        return await stage(session, outbox, spec, data, source=self.name, headers=headers)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        async with self.session.begin_nested():
            yield self.session


referrals = st.integers(0, 7)
pcns = st.sampled_from([P1, P1, P2])
orgs = st.sampled_from([ORG_A, ORG_B])
days = st.integers(-30, DAYS)
statuses = st.sampled_from(["completed", "engaged", "disengaged"])

# Each referral's PCN and organisation are fixed by its number, so redeliveries are the same fact.
REFERRAL_PARTIES = [
    (P1, ORG_A),
    (P1, ORG_B),
    (P2, ORG_A),
    (P1, ORG_A),
    (P1, ORG_B),
    (P2, ORG_A),
    (P1, ORG_A),
    (P1, ORG_B),
]

operations = st.one_of(
    st.tuples(st.just("accept"), referrals, st.integers(0, DAYS)),
    st.tuples(st.just("outcome"), referrals, st.integers(1, 3), statuses, st.integers(0, DAYS)),
    st.tuples(st.just("settle"), pcns, orgs, st.integers(1, 30000), days, st.integers(0, 5)),
    st.tuples(st.just("block_grant"), pcns, st.integers(0, DAYS)),
    st.tuples(st.just("amend"), st.integers(0, DAYS), st.integers(0, 9000)),
    st.tuples(st.just("end"), st.integers(0, DAYS)),
    st.tuples(st.just("agree_b"), st.integers(-20, DAYS)),
)


@pytest.fixture(scope="module")
def database_url(postgres) -> str:
    url = postgres.new_database("ledger_projection")
    asyncio.run(run_migrations(MIGRATIONS, url))
    return url


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ops=st.lists(operations, min_size=1, max_size=18),
    redelivered=st.lists(st.integers(0, 17), max_size=4),
    as_of=st.lists(days, min_size=1, max_size=3),
    window=st.tuples(days, st.integers(0, 200)),
)
def test_projections_equal_a_recomputation_and_the_reports_are_unchanged(
    database_url: str, ops: list, redelivered: list[int], as_of: list[int], window: tuple[int, int]
) -> None:
    for index in redelivered:  # the same fact again, later
        if index < len(ops):
            ops.append(ops[index])
    asyncio.run(_check(database_url, ops, [_day(d) for d in as_of], _day(window[0]), _day(window[0] + window[1])))


async def _check(url: str, ops: list, as_of: list[date], from_: date, to: date) -> None:
    engine = make_engine(url, pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session:
            await session.begin()
            try:
                await _world(session)
                rt: Any = Runtime(session)
                for op in ops:
                    await _apply(rt, session, op)
                await _compare(session, as_of, from_, to)
            finally:
                await session.rollback()
    finally:
        await engine.dispose()


async def _world(session: AsyncSession) -> None:
    await session.execute(
        insert(organisations), [{"organisation_id": org, "learnt_from": "test"} for org in (ORG_A, ORG_B)]
    )
    for agreement_id, pcn, period, cap in (("agr-p1-a", P1, "quarterly", 40000), ("agr-p2-a", P2, "monthly", None)):
        terms = {
            "per_referral_pence": 5000,
            "per_outcome_pence": 12000,
            "outcome_statuses": ["completed"],
            "block_grant_pence_per_period": 3000,
            "cap_pence_per_year": cap,
        }
        await session.execute(
            insert(agreements).values(
                id=agreement_id,
                pcn_id=pcn,
                organisation_id=ORG_A,
                period=period,
                days_after_period_end=30,
                starts_on=START,
                ends_on=None,
                created_by="test",
                **terms,
            )
        )
        await session.execute(
            insert(agreement_versions).values(
                agreement_id=agreement_id, version=1, effective_from=START, reason="agreed", changed_by="test", **terms
            )
        )


async def _apply(rt: Any, session: AsyncSession, op: tuple) -> None:
    kind = op[0]
    try:
        if kind == "accept":
            _, n, day = op
            pcn, org = REFERRAL_PARTIES[n]
            await handlers.on_accepted(
                rt,
                session,
                ev.ReferralAccepted(
                    referral_id=f"r{n}",
                    organisation_id=org,
                    service_id="svc",
                    pcn_id=pcn,
                    accepted_at=datetime.combine(_day(day), time(10), timezone.utc),
                ),
            )
        elif kind == "outcome":
            _, n, revision, status, day = op
            pcn, org = REFERRAL_PARTIES[n]
            recorded_at = datetime.combine(_day(day), time(11), timezone.utc)
            await handlers.on_outcome(
                rt,
                session,
                ev.OutcomeRecorded(
                    outcome_id=f"o{n}",
                    referral_id=f"r{n}",
                    organisation_id=org,
                    pcn_id=pcn,
                    status=status,
                    sessions_attended=3,
                    recorded_at=recorded_at,
                    revision=revision,
                    corrected_at=None if revision == 1 else recorded_at + timedelta(days=7 * revision),
                ),
            )
        elif kind == "settle":
            _, pcn, org, pence, day, reference = op
            async with rt.transaction():
                await commands.settle_in(
                    rt,
                    session,
                    pcn,
                    commands.SettlementRequest(org, pence, _day(day), f"ref-{reference}-{pence}-{day}"),
                )
        elif kind == "block_grant":
            _, pcn, day = op
            await commands.accrue_block_grants(rt, pcn, _day(day))
        elif kind == "amend":
            _, day, fee = op
            await commands.change_agreement(
                rt,
                P1,
                "test",
                "agr-p1-a",
                commands.AgreementChange(
                    effective_from=_day(day), terms={"per_referral_pence": fee, "per_outcome_pence": 12000}
                ),
            )
        elif kind == "end":
            _, day = op
            await commands.change_agreement(
                rt, P2, "test", "agr-p2-a", commands.AgreementChange(ends_on=_day(day), ends_on_given=True)
            )
        elif kind == "agree_b":  # back-dated or not: covers the work already accepted inside its dates
            _, day = op
            await commands.create_agreement(
                rt,
                P1,
                "test",
                {
                    "organisation_id": ORG_B,
                    "per_referral_pence": 700,
                    "per_outcome_pence": 900,
                    "outcome_statuses": ["completed", "engaged"],
                    "block_grant_pence_per_period": 0,
                    "cap_pence_per_year": None,
                    "period": "monthly",
                    "days_after_period_end": 14,
                    "starts_on": max(_day(day), date(2026, 1, 1)),
                    "ends_on": None,
                },
            )
    except Refused:
        pass  # refused (overlap, no agreement, nothing open ...): changed nothing


async def _compare(session: AsyncSession, as_of: list[date], from_: date, to: date) -> None:
    assert await projection.stored(session) == await projection.recomputed(session)

    # The journal's own balances: what is owed (payable:, a credit balance) and credit held (credit:).
    balances = {
        account: int(b)
        for account, b in (
            await session.execute(
                select(
                    journal_lines.c.account, func.sum(journal_lines.c.credit_pence - journal_lines.c.debit_pence)
                ).group_by(journal_lines.c.account)
            )
        ).all()
    }
    for pcn in (P1, P2):
        for org in (ORG_A, ORG_B):
            rows = (await projection.stored(session))["open_movements"]
            open_now = sum(a - p - c for (pp, o, *_dates, a, p, c) in rows if (pp, o) == (pcn, org))
            assert open_now == balances.get(f"payable:{pcn}:{org}", 0)
            held = await reports.credits_by_organisation(session, None, pcn_id=pcn, organisation_id=org)
            assert held.get(org, 0) == -balances.get(f"credit:{pcn}:{org}", 0)

    for day in [*as_of, date(2027, 12, 31)]:
        for pcn, org in ((P1, None), (P2, None), (None, ORG_A), (None, None), (P1, ORG_B)):
            assert await reports.arrears(session, day, pcn_id=pcn, organisation_id=org) == await _arrears_by_scan(
                session, day, pcn_id=pcn, organisation_id=org
            )
    for org, pcn in ((ORG_A, None), (ORG_A, P1), (ORG_B, P1)):
        whole = await reports.statement(session, org, pcn, from_, to)
        assert whole == await _statement_by_scan(session, org, pcn, from_, to)
        await _pages_make_the_whole(session, whole, org, pcn, from_, to)


async def _pages_make_the_whole(session: AsyncSession, whole: dict, org: str, pcn: str | None, from_, to) -> None:
    """Pages of any size, read in turn, are the whole statement: the same lines, the same running
    balances, the same totals on every page; one page past the end is empty and still counts."""
    for per_page in (1, 2, 7):
        lines, page = [], 1
        while True:
            one = await reports.statement(session, org, pcn, from_, to, page=page, per_page=per_page)
            assert {k: v for k, v in one.items() if k not in ("lines", "page", "per_page", "total")} == {
                k: v for k, v in whole.items() if k != "lines"
            }
            assert (one["page"], one["per_page"], one["total"]) == (page, per_page, len(whole["lines"]))
            assert len(one["lines"]) <= per_page
            if not one["lines"]:
                break
            lines += one["lines"]
            page += 1
        assert lines == whole["lines"]


# --- the oracle: the reports as they were before the projections, scanning every row ----------


def _scoped(query, table, pcn_id, organisation_id):
    if pcn_id:
        query = query.where(table.c.pcn_id == pcn_id)
    if organisation_id:
        query = query.where(table.c.organisation_id == organisation_id)
    return query


async def _arrears_by_scan(
    session: AsyncSession, as_of: date, *, pcn_id: str | None, organisation_id: str | None
) -> dict:
    paid_by_then = (
        select(allocations.c.payment_id, func.sum(allocations.c.amount_pence).label("paid_pence"))
        .join(settlements, settlements.c.settlement_id == allocations.c.settlement_id)
        .where(settlements.c.paid_on <= as_of)
        .group_by(allocations.c.payment_id)
        .subquery()
    )
    cancelled = func.coalesce(payment_reversals.c.open_cancelled_pence, 0)
    open_pence = payments.c.amount_pence - func.coalesce(paid_by_then.c.paid_pence, 0) - cancelled
    query = _scoped(
        select(
            payments.c.organisation_id,
            payments.c.due_date,
            payments.c.business_date,
            func.sum(open_pence).label("open_pence"),
        )
        .outerjoin(paid_by_then, paid_by_then.c.payment_id == payments.c.payment_id)
        .outerjoin(
            payment_reversals,
            (payment_reversals.c.payment_id == payments.c.payment_id) & (payment_reversals.c.business_date <= as_of),
        )
        .where(payments.c.business_date <= as_of, open_pence > 0)
        .group_by(payments.c.organisation_id, payments.c.due_date, payments.c.business_date),
        payments,
        pcn_id,
        organisation_id,
    )
    items_by_org: dict[str, list[domain.OpenItem]] = {}
    for row in (await session.execute(query)).all():
        items_by_org.setdefault(row.organisation_id, []).append(
            domain.OpenItem(int(row.open_pence), row.due_date, row.business_date)
        )
    paid_over = _scoped(
        select(settlements.c.organisation_id, settlements.c.unallocated_pence.label("pence")),
        settlements,
        pcn_id,
        organisation_id,
    ).where(settlements.c.paid_on <= as_of)
    taken_back = _scoped(
        select(payment_reversals.c.organisation_id, payment_reversals.c.overpaid_pence.label("pence")),
        payment_reversals,
        pcn_id,
        organisation_id,
    ).where(payment_reversals.c.business_date <= as_of)
    both = paid_over.union_all(taken_back).subquery()
    credits = {
        org: int(pence or 0)
        for org, pence in (
            await session.execute(
                select(both.c.organisation_id, func.sum(both.c.pence)).group_by(both.c.organisation_id)
            )
        ).all()
    }
    orgs = sorted(set(items_by_org) | {org for org, pence in credits.items() if pence})
    everything = [item for items in items_by_org.values() for item in items]
    return {
        "as_of": as_of.isoformat(),
        "currency": "GBP",
        "total": reports._summary(everything, as_of, sum(credits.values())),
        "by_organisation": [
            {"organisation_id": org, **reports._summary(items_by_org.get(org, []), as_of, credits.get(org, 0))}
            for org in orgs
        ],
    }


async def _statement_by_scan(
    session: AsyncSession, organisation_id: str, pcn_id: str | None, from_: date, to: date
) -> dict:
    accrued = (
        (
            await session.execute(
                _scoped(select(payments), payments, pcn_id, organisation_id).where(payments.c.business_date <= to)
            )
        )
        .mappings()
        .all()
    )
    paid = (
        (
            await session.execute(
                _scoped(select(settlements), settlements, pcn_id, organisation_id).where(settlements.c.paid_on <= to)
            )
        )
        .mappings()
        .all()
    )
    taken_back = (
        (
            await session.execute(
                _scoped(
                    select(payment_reversals, payments.c.basis, payments.c.referral_id, payments.c.period).join(
                        payments, payments.c.payment_id == payment_reversals.c.payment_id
                    ),
                    payment_reversals,
                    pcn_id,
                    organisation_id,
                ).where(payment_reversals.c.business_date <= to)
            )
        )
        .mappings()
        .all()
    )
    opening = (
        sum(p["amount_pence"] for p in accrued if p["business_date"] < from_)
        - sum(r["reversed_pence"] for r in taken_back if r["business_date"] < from_)
        - sum(s["amount_pence"] for s in paid if s["paid_on"] < from_)
    )
    lines = [reports._accrual_line(p) for p in accrued if p["business_date"] >= from_]
    lines += [reports._reversal_line(r) for r in taken_back if r["business_date"] >= from_]
    lines += [reports._payment_line(s) for s in paid if s["paid_on"] >= from_]
    lines.sort(key=lambda line: (line["date"], line["type"], line["payment_id"] or line["settlement_id"]))
    balance = opening
    for line in lines:
        balance += line["charged_pence"] - line["paid_pence"]
        line["balance_pence"] = balance
    return {
        "organisation_id": organisation_id,
        "pcn_id": pcn_id,
        "from": from_.isoformat(),
        "to": to.isoformat(),
        "currency": "GBP",
        "opening_balance_pence": opening,
        "closing_balance_pence": balance,
        "charged_pence": sum(line["charged_pence"] for line in lines),
        "paid_pence": sum(line["paid_pence"] for line in lines),
        "lines": lines,
    }
