"""A set-based twin (`EventConsumer.on_many`) leaves what its handler leaves, one event after another.

For referral-intake's status events, the directory's inbox and outcomes' view of referrals: the same
events, in many orders (duplicates, unknown referrals, a referral twice in a run, decisions before
the creation), applied once through the one-record handlers and once as a consumed batch does
(`_apply_runs`: each run of one topic through its twin), on the real PostgreSQL in transactions
rolled back after. Every row each service keeps must be the same. The funding ledger's batch handler
has its own, stronger test (services/funding-ledger/tests/test_handlers_batch.py)."""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import insert, text

from socialrx_harness.platform import DEV_PERSON_REF_KEY
from socialrx_harness.testing import ConsumedRecord, handler_bench
from socialrx_shared import events as ev

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
ORDERS = 12


def _created(referral_id: str, organisation_id: str = "org-a", service_id: str = "svc-a") -> ev.ReferralCreated:
    return ev.ReferralCreated(
        referral_id=referral_id,
        pcn_id="U12345",
        practice_id="B86001",
        link_worker_id="lw-1",
        organisation_id=organisation_id,
        service_id=service_id,
        needs=["nature"],
        person_ref="0" * 64,
        age_band="25-34",
        postcode_district="LS6",
        consent_to_share=True,
        created_at=NOW,
    )


def _accepted(referral_id: str, minutes: int = 0) -> ev.ReferralAccepted:
    return ev.ReferralAccepted(
        referral_id=referral_id,
        organisation_id="org-a",
        service_id="svc-a",
        pcn_id="U12345",
        accepted_at=NOW + timedelta(minutes=minutes),
    )


def _declined(referral_id: str, minutes: int = 0) -> ev.ReferralDeclined:
    return ev.ReferralDeclined(
        referral_id=referral_id,
        organisation_id="org-a",
        service_id="svc-a",
        pcn_id="U12345",
        reason="no_capacity",
        declined_at=NOW + timedelta(minutes=minutes),
    )


def _outcome(referral_id: str, minutes: int = 0) -> ev.OutcomeRecorded:
    return ev.OutcomeRecorded(
        outcome_id="o-" + referral_id,
        referral_id=referral_id,
        organisation_id="org-a",
        service_id="svc-a",
        pcn_id="U12345",
        status="completed",
        sessions_attended=4,
        recorded_at=NOW + timedelta(minutes=minutes),
    )


def _envelopes(events: list[tuple[ev.EventSpec, ev.Strict]]) -> list[tuple[ev.EventSpec, ev.Envelope, ev.Strict]]:
    return [(spec, ev.new_event(spec, data, source="test"), data) for spec, data in events]


def _orders(events: list, grouped: bool) -> list[list]:
    """The events in several orders; `grouped` sorts each order by topic so long runs form."""
    orders = []
    for seed in range(ORDERS):
        order = list(events)
        random.Random(seed).shuffle(order)
        if grouped and seed % 2:
            order.sort(key=lambda item: item[0].topic)
        orders.append(order)
    return orders


async def _both_ways(bench: Any, events: list, dump) -> tuple[Any, Any]:
    consumer, session = bench.runtime.consumer, bench.session
    async with session.begin_nested() as one_by_one:
        for spec, envelope, data in events:
            await consumer.handlers[spec.topic](session, envelope, data)
        expected = await dump(session)
        await one_by_one.rollback()
    async with session.begin_nested() as batched:
        records = [(ConsumedRecord(spec.topic, b""), envelope, data) for spec, envelope, data in events]
        await consumer._apply_runs(session, records)
        found = await dump(session)
        await batched.rollback()
    return found, expected


async def _rows(session, query: str) -> list[dict]:
    return [dict(row) for row in (await session.execute(text(query))).mappings().all()]


# --- referral-intake -----------------------------------------------------------------------------


@pytest.fixture
async def intake(postgres, jwt_secret):
    from socialrx_referral_intake.app import Settings, build

    url = postgres.new_database("twins_intake")
    async with handler_bench(
        build, Settings, database_url=url, jwt_secret=jwt_secret, person_ref_key=DEV_PERSON_REF_KEY
    ) as bench:
        yield bench


async def test_referral_intake_moves_statuses_the_same_in_runs(intake) -> None:
    from socialrx_referral_intake.store import referrals

    for referral_id in ("r-1", "r-2", "r-3", "r-4"):
        await intake.session.execute(
            insert(referrals).values(
                id=referral_id,
                pcn_id="U12345",
                practice_id="B86001",
                link_worker_id="lw-1",
                organisation_id="org-a",
                service_id="svc-a",
                needs=["nature"],
                accessibility_needs=[],
                person_ref="0" * 64,
                age_band="25-34",
                postcode_district="LS6",
                status="created",
                created_at=NOW,
                updated_at=NOW,
            )
        )
    events = _envelopes(
        [
            (ev.REFERRAL_ACCEPTED, _accepted("r-1", 1)),
            (ev.REFERRAL_ACCEPTED, _accepted("r-1", 2)),  # a second acceptance (another event id)
            (ev.OUTCOME_RECORDED, _outcome("r-1", 3)),
            (ev.REFERRAL_DECLINED, _declined("r-2", 4)),
            (ev.REFERRAL_ACCEPTED, _accepted("r-3", 5)),
            (ev.REFERRAL_DECLINED, _declined("r-3", 6)),  # after its acceptance
            (ev.OUTCOME_RECORDED, _outcome("r-4", 7)),  # an outcome before any decision
            (ev.REFERRAL_ACCEPTED, _accepted("r-4", 8)),
            (ev.REFERRAL_ACCEPTED, _accepted("not-ours", 9)),  # another deployment's
        ]
    )
    events.append(events[0])  # the same event again

    async def dump(session) -> dict:
        return {
            "referrals": await _rows(
                session, "SELECT id, status, decline_reason, updated_at FROM referrals ORDER BY id"
            ),
            "timeline": await _rows(
                session, "SELECT referral_id, status, at, detail, event_id FROM referral_timeline ORDER BY id"
            ),
        }

    moved = set()
    for order in _orders(events, grouped=True):
        found, expected = await _both_ways(intake, order, dump)
        assert found == expected
        moved |= {(r["id"], r["status"]) for r in expected["referrals"]}
    assert {("r-1", "outcome_recorded"), ("r-2", "declined")} <= moved  # the orders did move statuses


# --- directory -------------------------------------------------------------------------------------


@pytest.fixture
async def directory(postgres, jwt_secret):
    from socialrx_directory.app import Settings, build

    url = postgres.new_database("twins_directory")
    async with handler_bench(build, Settings, database_url=url, jwt_secret=jwt_secret) as bench:
        yield bench


async def test_the_directory_files_referrals_and_queues_webhooks_the_same_in_runs(directory) -> None:
    from socialrx_directory.store import organizations, services, subscriptions

    for org, svc, subscribed in (("org-a", "svc-a", True), ("org-b", "svc-b", False)):
        await directory.session.execute(
            insert(organizations).values(id=org, name="Green Gym", created_at=NOW, updated_at=NOW)
        )
        await directory.session.execute(
            insert(services).values(
                id=svc,
                organization_id=org,
                name="Walks",
                needs=["nature"],
                capacity=5,
                status="active",
                safeguarding_policy_valid_until=date(2027, 1, 1),
                version=1,
                published_accepting=True,
                created_at=NOW,
                updated_at=NOW,
            )
        )
        if subscribed:
            for number in (1, 2):
                await directory.session.execute(
                    insert(subscriptions).values(
                        id=f"sub-{number}",
                        organisation_id=org,
                        url=f"https://charity.example/hook/{number}",
                        events=["referral.created"] if number == 1 else ["referral.created", "referral.withdrawn"],
                        secret="s" * 32,
                        created_at=NOW,
                    )
                )
    events = _envelopes(
        [(ev.REFERRAL_CREATED, _created(f"r-{n}", *(("org-b", "svc-b") if n % 3 == 0 else ()))) for n in range(8)]
        + [(ev.REFERRAL_CREATED, _created("r-1"))]  # a second copy with another event id
    )

    async def dump(session) -> dict:
        return {
            "inbox": await _rows(session, "SELECT * FROM referral_inbox ORDER BY referral_id"),
            "deliveries": await _rows(
                session,
                "SELECT subscription_id, organisation_id, event_id, event_type, body, status, attempts "
                "FROM webhook_deliveries ORDER BY id",
            ),
        }

    for order in _orders(events, grouped=False):
        found, expected = await _both_ways(directory, order, dump)
        assert found == expected
        assert len(expected["inbox"]) == 8 and len(expected["deliveries"]) == 2 * 6  # both subscriptions, org-a's


async def test_the_directory_gives_places_back_the_same_in_runs(directory) -> None:
    """Finished referrals give their place back once each, whatever the run holds."""
    from socialrx_directory.store import organizations, referral_inbox, services

    await directory.session.execute(insert(organizations).values(id="org-a", name="G", created_at=NOW, updated_at=NOW))
    for svc in ("svc-a", "svc-b"):
        await directory.session.execute(
            insert(services).values(
                id=svc,
                organization_id="org-a",
                name="Walks",
                needs=["nature"],
                capacity=0,
                status="active",
                safeguarding_policy_valid_until=date(2027, 1, 1),
                version=1,
                published_accepting=False,
                created_at=NOW,
                updated_at=NOW,
            )
        )
    for n in range(6):
        await directory.session.execute(
            insert(referral_inbox).values(
                referral_id=f"r-{n}",
                organisation_id="org-a",
                service_id="svc-b" if n % 2 else "svc-a",
                pcn_id="U12345",
                needs=["nature"],
                age_band="25-34",
                postcode_district="LS6",
                accessibility_needs=[],
                status="referred" if n == 5 else "accepted",  # r-5 was never accepted
                referred_at=NOW,
            )
        )
    statuses = ["completed", "disengaged", "engaged", "completed", "completed", "completed"]
    events = _envelopes(
        [
            (ev.OUTCOME_RECORDED, _outcome(f"r-{n}").model_copy(update={"status": status}))
            for n, status in enumerate(statuses)
        ]
        + [(ev.OUTCOME_RECORDED, _outcome("r-0").model_copy(update={"outcome_id": "o-again"}))]  # a second outcome
        + [(ev.OUTCOME_RECORDED, _outcome("not-ours"))]
    )

    async def dump(session) -> dict:
        return {
            "inbox": await _rows(session, "SELECT referral_id, status, place_released FROM referral_inbox ORDER BY 1"),
            "services": await _rows(session, "SELECT id, capacity, update_pending FROM services ORDER BY id"),
        }

    for order in _orders(events, grouped=False):
        found, expected = await _both_ways(directory, order, dump)
        assert found == expected
        assert [s["capacity"] for s in expected["services"]] == [2, 2]  # r-0, r-4 / r-1, r-3; not r-2, r-5


# --- outcomes --------------------------------------------------------------------------------------


@pytest.fixture
async def outcomes(postgres, jwt_secret):
    from socialrx_outcomes.app import Settings, build

    url = postgres.new_database("twins_outcomes")
    async with handler_bench(build, Settings, database_url=url, jwt_secret=jwt_secret) as bench:
        yield bench


async def test_outcomes_keeps_its_view_of_referrals_the_same_in_runs(outcomes) -> None:
    events = _envelopes(
        [(ev.REFERRAL_CREATED, _created(f"r-{n}")) for n in range(4)]
        # A second copy saying something else: one by one, the last copy's details stay.
        + [(ev.REFERRAL_CREATED, _created("r-3").model_copy(update={"postcode_district": "LS7"}))]
        + [
            (ev.REFERRAL_ACCEPTED, _accepted("r-0", 1)),
            (ev.REFERRAL_ACCEPTED, _accepted("r-1", 2)),
            (ev.REFERRAL_DECLINED, _declined("r-2", 3)),
            (ev.REFERRAL_ACCEPTED, _accepted("r-9", 4)),  # decided before its creation is seen
            (ev.REFERRAL_DECLINED, _declined("r-1", 5)),  # a decline after an acceptance
            (ev.REFERRAL_ACCEPTED, _accepted("r-0", 6)),  # a referral twice in one run
        ]
    )

    async def dump(session) -> list[dict]:
        return await _rows(session, "SELECT * FROM referral_view ORDER BY referral_id")

    for order in _orders(events, grouped=True):
        found, expected = await _both_ways(outcomes, order, dump)
        assert found == expected
        assert {r["referral_id"]: r["status"] for r in expected}["r-2"] == "declined"
