"""The set-based consumer (handlers_batch) leaves exactly what the handlers leave one event at a time.

Hypothesis draws histories — referrals accepted with and without an agreement in force, outcomes
recorded, corrected and corrected back, an agreement whose terms change mid-year, a capped one that
fills, redeliveries, organisations registered and seen — in any order, cut into batches anywhere.
Each history is applied twice on the real PostgreSQL, each in a transaction rolled back after:
event by event through handlers.py, and batch by batch through handlers_batch.apply. Every row the
ledger keeps (payments, reversals, the journal, the reports' projections, accepted referrals,
outcomes, organisations) and every event staged for publication, in order, must be the same.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import date, datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, select, text

from socialrx_funding_ledger import domain, handlers, handlers_batch
from socialrx_funding_ledger.rebuild import MIGRATIONS
from socialrx_funding_ledger.store import agreement_versions, agreements, outbox
from socialrx_shared import events as ev
from socialrx_shared.db import make_engine, make_sessionmaker, run_migrations
from socialrx_shared.outbox import stage, stage_each

PCN = "PBATCH"
OPEN = domain.Agreement(
    "agr-open", PCN, "org-open", 5000, 12000, ("completed",), 0, None, "quarterly", 30, date(2026, 4, 1)
)
# From August the open agreement pays less per outcome, but for "engaged" too.
OPEN_V2 = {
    "version": 2,
    "effective_from": date(2026, 8, 1),
    "per_outcome_pence": 9000,
    "statuses": ["completed", "engaged"],
}
# Starts in May (April's acceptances stay uncovered) and fills its cap after a few fees.
CAPPED = domain.Agreement(
    "agr-capped", PCN, "org-capped", 5000, 12000, ("completed",), 0, 30000, "monthly", 14, date(2026, 5, 1)
)
ORGS = ("org-open", "org-capped")


@st.composite
def histories(draw) -> list[tuple[str, ev.Strict]]:
    facts: list[tuple[str, ev.Strict]] = []
    for number in range(draw(st.integers(1, 5))):
        referral = f"r-{number}"
        organisation = draw(st.sampled_from(ORGS))
        accepted_at = datetime(2026, 4, 20, 9, tzinfo=timezone.utc) + timedelta(days=draw(st.integers(0, 120)))
        facts.append(
            (
                ev.REFERRAL_ACCEPTED.topic,
                ev.ReferralAccepted(
                    referral_id=referral,
                    organisation_id=organisation,
                    service_id="svc",
                    pcn_id=PCN,
                    accepted_at=accepted_at,
                ),
            )
        )
        for outcome in range(draw(st.integers(0, 2))):
            statuses = draw(st.lists(st.sampled_from(["completed", "engaged", "disengaged"]), min_size=1, max_size=3))
            # Distinct minutes: no two outcomes of a referral tie on when they were recorded or corrected.
            recorded_at = accepted_at + timedelta(days=draw(st.integers(1, 90)), minutes=7 * number + outcome)
            for revision, status in enumerate(statuses, start=1):
                facts.append(
                    (
                        ev.OUTCOME_RECORDED.topic,
                        ev.OutcomeRecorded(
                            outcome_id=f"o-{number}-{outcome}",
                            referral_id=referral,
                            organisation_id=organisation,
                            pcn_id=PCN,
                            status=status,
                            sessions_attended=2,
                            recorded_at=recorded_at,
                            revision=revision,
                            corrected_at=None
                            if revision == 1
                            else recorded_at + timedelta(days=3 * revision, minutes=number * 11 + outcome),
                        ),
                    )
                )
    facts.append((ev.ORGANISATION_REGISTERED.topic, REGISTERED))
    facts.append((ev.SERVICE_UPDATED.topic, SEEN))
    redelivered = draw(st.lists(st.sampled_from(facts), max_size=4))
    return draw(st.permutations(facts + redelivered))


REGISTERED = ev.OrganisationRegistered(
    organisation_id="org-open", name="Open", registered_at=datetime(2026, 4, 1, tzinfo=timezone.utc)
)
SEEN = ev.ServiceUpdated(
    service_id="svc",
    organisation_id="org-capped",
    name="A service",
    status="active",
    capacity_available=3,
    safeguarding_policy_valid_until=None,
    accepting_referrals=True,
    updated_at=datetime(2026, 4, 1, tzinfo=timezone.utc),
)


@pytest.fixture(scope="module")
def database_url(postgres) -> str:
    url = postgres.new_database("ledger_handlers_batch")
    asyncio.run(run_migrations(MIGRATIONS, url))
    return url


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=histories(), cuts=st.lists(st.integers(1, 12), min_size=1, max_size=8))
def test_a_batch_leaves_what_its_events_one_by_one_leave(database_url: str, history, cuts) -> None:
    one_by_one = asyncio.run(_ledger_after(database_url, history, batches=None))
    batches, start = [], 0
    for size in itertools.cycle(cuts):
        if start >= len(history):
            break
        batches.append(history[start : start + size])
        start += size
    batched = asyncio.run(_ledger_after(database_url, history, batches=batches))
    for table in one_by_one:
        assert batched[table] == one_by_one[table], table


def test_the_histories_reach_every_rule(database_url: str) -> None:
    """The equivalence above means something only if histories pay, take back, cap and leave
    uncovered, and if a fee taken back makes room under the cap for later work in the same batch:
    this history, applied as one batch, does all of it."""

    def accepted(referral: str, organisation: str, day: int) -> tuple[str, ev.Strict]:
        at = (
            datetime(2026, 4, day, 9, tzinfo=timezone.utc)
            if day > 0
            else datetime(2026, 5, -day, 9, tzinfo=timezone.utc)
        )
        return (
            ev.REFERRAL_ACCEPTED.topic,
            ev.ReferralAccepted(
                referral_id=referral, organisation_id=organisation, service_id="svc", pcn_id=PCN, accepted_at=at
            ),
        )

    def outcome(referral: str, organisation: str, status: str, revision: int) -> tuple[str, ev.Strict]:
        recorded_at = datetime(2026, 5, 20, 9, tzinfo=timezone.utc)
        return (
            ev.OUTCOME_RECORDED.topic,
            ev.OutcomeRecorded(
                outcome_id=f"o-{referral}",
                referral_id=referral,
                organisation_id=organisation,
                pcn_id=PCN,
                status=status,
                sessions_attended=2,
                recorded_at=recorded_at,
                revision=revision,
                corrected_at=None if revision == 1 else recorded_at + timedelta(days=revision),
            ),
        )

    history = [
        accepted("r-a", "org-open", -2),
        outcome("r-a", "org-open", "completed", 1),
        outcome("r-a", "org-open", "disengaged", 2),  # the open agreement's fee taken back
        accepted("r-b", "org-capped", 25),  # April: before the capped agreement starts
        accepted("r-c", "org-capped", -3),  # 5,000 of the cap of 30,000
        outcome("r-c", "org-capped", "completed", 1),  # 17,000
        accepted("r-d", "org-capped", -4),  # 22,000
        outcome("r-c", "org-capped", "disengaged", 2),  # 12,000 taken back: 10,000
        outcome("r-d", "org-capped", "completed", 1),  # 22,000: fits only because of the reversal
        accepted("r-e", "org-capped", -5),  # 27,000
        accepted("r-f", "org-capped", -6),  # 5,000 asked, 3,000 owed, 2,000 refused
    ]
    one_by_one = asyncio.run(_ledger_after(database_url, history, batches=None))
    batched = asyncio.run(_ledger_after(database_url, history, batches=[history]))
    assert batched == one_by_one
    payments = {p["cause_key"]: p for p in one_by_one["payments"]}
    assert payments["referral_accepted:r-a"]["amount_pence"] == 5000
    assert payments[domain.outcome_recorded_key("r-a", OPEN.id)]["reversed_pence"] == 12000
    assert "r-b" not in {p["referral_id"] for p in payments.values()}  # uncovered
    assert payments[domain.outcome_recorded_key("r-d", CAPPED.id)]["amount_pence"] == 12000
    assert (
        payments["referral_accepted:r-f"]["amount_pence"],
        payments["referral_accepted:r-f"]["refused_over_cap_pence"],
    ) == (3000, 2000)
    capped = [p for p in payments.values() if p["agreement_id"] == CAPPED.id]
    assert sum(p["amount_pence"] - p["reversed_pence"] for p in capped) == 30000


def test_a_batch_the_database_contradicts_is_refused_whole(database_url: str) -> None:
    """A cause the batch's reading did not foresee (here a referral fee recorded without its acceptance,
    as a hand repair might leave it) stops the batch before it commits anything: BatchDiverged, which the
    consumer answers by applying the records one by one through handlers.py."""
    accepted = ev.ReferralAccepted(
        referral_id="r-diverged",
        organisation_id="org-open",
        service_id="svc",
        pcn_id=PCN,
        accepted_at=datetime(2026, 5, 2, 9, tzinfo=timezone.utc),
    )

    async def run() -> None:
        engine = make_engine(database_url, pool_size=1)
        try:
            async with make_sessionmaker(engine)() as session:
                await session.begin()
                rt = SimpleNamespace(
                    name="funding-ledger",
                    stage=lambda s, spec, data, headers=None: stage(
                        s, outbox, spec, data, source="funding-ledger", headers=headers
                    ),
                    stage_each=lambda s, items: stage_each(s, outbox, items, source="funding-ledger"),
                )
                await _agreements(session)
                await handlers.on_accepted(rt, session, accepted)
                await session.execute(text("DELETE FROM accepted_referrals WHERE referral_id = 'r-diverged'"))
                with pytest.raises(handlers_batch.BatchDiverged):
                    await handlers_batch.decide(rt, session, [accepted])
                await session.rollback()
        finally:
            await engine.dispose()

    asyncio.run(run())


async def _ledger_after(url: str, history, *, batches) -> dict:
    engine = make_engine(url, pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session:
            await session.begin()
            rt = SimpleNamespace(
                name="funding-ledger",
                stage=lambda s, spec, data, headers=None: stage(
                    s, outbox, spec, data, source="funding-ledger", headers=headers
                ),
                stage_each=lambda s, items: stage_each(s, outbox, items, source="funding-ledger"),
            )
            await _agreements(session)
            if batches is None:
                for topic, payload in history:
                    await _one(rt, session, topic, payload)
            else:
                for batch in batches:
                    await handlers_batch.apply(rt, session, [(topic, None, payload) for topic, payload in batch])
            result = await _everything(session)
            await session.rollback()
            return result
    finally:
        await engine.dispose()


async def _one(rt, session, topic: str, payload) -> None:
    """What handlers.register wires to each topic."""
    if topic == ev.REFERRAL_ACCEPTED.topic:
        await handlers.on_accepted(rt, session, payload)
    elif topic == ev.OUTCOME_RECORDED.topic:
        await handlers.on_outcome(rt, session, payload)
    elif topic == ev.ORGANISATION_REGISTERED.topic:
        await handlers.learn_organisation(session, payload.organisation_id, "organisation.registered", payload.name)
    else:
        await handlers.learn_organisation(session, payload.organisation_id, "service.updated")


async def _agreements(session) -> None:
    for agreement in (OPEN, CAPPED):
        row = agreement.__dict__ | {"outcome_statuses": list(agreement.outcome_statuses)}
        await session.execute(insert(agreements).values(**row, created_by="test"))
        await session.execute(
            insert(agreement_versions).values(
                agreement_id=agreement.id,
                version=1,
                effective_from=agreement.starts_on,
                per_referral_pence=agreement.per_referral_pence,
                per_outcome_pence=agreement.per_outcome_pence,
                outcome_statuses=list(agreement.outcome_statuses),
                block_grant_pence_per_period=0,
                cap_pence_per_year=agreement.cap_pence_per_year,
                reason="agreed",
                changed_by="test",
            )
        )
    await session.execute(
        insert(agreement_versions).values(
            agreement_id=OPEN.id,
            version=OPEN_V2["version"],
            effective_from=OPEN_V2["effective_from"],
            per_referral_pence=OPEN.per_referral_pence,
            per_outcome_pence=OPEN_V2["per_outcome_pence"],
            outcome_statuses=OPEN_V2["statuses"],
            block_grant_pence_per_period=0,
            cap_pence_per_year=None,
            reason="changed",
            changed_by="test",
        )
    )


_TABLES = {
    "payments": "SELECT * FROM payments ORDER BY payment_id",
    "payment_reversals": "SELECT * FROM payment_reversals ORDER BY payment_id",
    "journal": "SELECT e.cause_key, e.business_date, e.memo, l.account, l.debit_pence, l.credit_pence "
    "FROM journal_entries e JOIN journal_lines l ON l.entry_id = e.id ORDER BY 1, 4, 5, 6",
    "open_movements": "SELECT * FROM open_movements ORDER BY 1, 2, 3, 4, 5",
    "credit_movements": "SELECT * FROM credit_movements ORDER BY 1, 2, 3",
    "statement_days": "SELECT * FROM statement_days ORDER BY 1, 2, 3",
    "accepted_referrals": "SELECT * FROM accepted_referrals ORDER BY referral_id",
    "outcomes": "SELECT outcome_id, referral_id, revision, event FROM outcomes ORDER BY outcome_id",
    "organisations": "SELECT organisation_id, name, learnt_from FROM organisations ORDER BY 1",
}
_NOT_COMPARED = {"created_at", "posted_at"}  # when, not what


async def _everything(session) -> dict:
    found = {}
    for table, query in _TABLES.items():
        rows = (await session.execute(text(query))).mappings().all()
        found[table] = [{k: v for k, v in row.items() if k not in _NOT_COMPARED} for row in rows]
    staged = (
        await session.execute(
            select(outbox.c.topic, outbox.c.key, outbox.c.value, outbox.c.headers).order_by(outbox.c.id)
        )
    ).all()
    found["staged"] = [
        (
            row.topic,
            row.key,
            json.loads(row.value)["data"],
            {k: v for k, v in row.headers.items() if k != "traceparent"},
        )
        for row in staged
    ]
    return found
