"""How the directory reacts to events, rule by rule: each handler called in a transaction that is
rolled back afterwards (the `handlers` fixture), on the real PostgreSQL and without Kafka. That these
events arrive through Kafka, once, is the through-Kafka tests' (test_organisation_registered.py,
tests/test_reliability.py...)."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import insert, select

from socialrx_directory.store import (
    organizations,
    referral_inbox,
    referral_refusals,
    services,
    subscriptions,
    webhook_deliveries,
)
from socialrx_harness.testing import HandlerBench
from socialrx_shared import events as ev

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def _id() -> str:
    return uuid.uuid4().hex[:12]


async def _service(bench: HandlerBench, *, capacity: int = 1) -> tuple[str, str]:
    organisation_id, service_id = _id(), _id()
    await bench.session.execute(
        insert(organizations).values(id=organisation_id, name="Green Gym", created_at=NOW, updated_at=NOW)
    )
    await bench.session.execute(
        insert(services).values(
            id=service_id,
            organization_id=organisation_id,
            name="Green Gym",
            needs=["nature"],
            capacity=capacity,
            status="active",
            safeguarding_policy_valid_until=date.today() + timedelta(days=365),
            version=1,
            published_accepting=capacity > 0,
            created_at=NOW,
            updated_at=NOW,
        )
    )
    return organisation_id, service_id


def _created(organisation_id: str, service_id: str, referral_id: str | None = None) -> ev.ReferralCreated:
    return ev.ReferralCreated(
        referral_id=referral_id or _id(),
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


def _outcome(organisation_id: str, service_id: str, referral_id: str, status: str) -> ev.OutcomeRecorded:
    return ev.OutcomeRecorded(
        outcome_id=_id(),
        referral_id=referral_id,
        organisation_id=organisation_id,
        service_id=service_id,
        pcn_id="U12345",
        status=status,  # type: ignore[arg-type]
        sessions_attended=4,
        recorded_at=NOW,
    )


async def _inbox(bench: HandlerBench, referral_id: str) -> list[Any]:
    query = select(referral_inbox).where(referral_inbox.c.referral_id == referral_id)
    return list((await bench.session.execute(query)).mappings().all())


async def _capacity(bench: HandlerBench, service_id: str) -> int:
    return int(await bench.session.scalar(select(services.c.capacity).where(services.c.id == service_id)) or 0)


async def _accepted(bench: HandlerBench, referral_id: str) -> None:
    await bench.session.execute(
        referral_inbox.update()
        .where(referral_inbox.c.referral_id == referral_id)
        .values(status="accepted", decided_at=NOW)
    )


async def test_a_referral_lands_in_its_organisations_inbox_as_received_once(handlers: HandlerBench) -> None:
    organisation_id, service_id = await _service(handlers)
    event = _created(organisation_id, service_id)

    await handlers.deliver(ev.REFERRAL_CREATED, event)
    await handlers.deliver(ev.REFERRAL_CREATED, event)  # the same referral again, under a new event id

    (row,) = await _inbox(handlers, event.referral_id)
    assert (row["organisation_id"], row["service_id"], row["status"]) == (organisation_id, service_id, "received")
    assert (row["postcode_district"], row["age_band"], row["needs"]) == ("LS6", "25-34", ["nature"])
    assert "person_ref" not in row  # the inbox keeps no reference to the person


async def test_a_referral_is_queued_for_the_organisations_webhook_as_it_travelled(handlers: HandlerBench) -> None:
    organisation_id, service_id = await _service(handlers)
    await handlers.session.execute(
        insert(subscriptions).values(
            id=_id(),
            organisation_id=organisation_id,
            url="https://charity.example/hook",
            events=["referral.created"],
            secret="s" * 32,
            created_at=NOW,
        )
    )

    envelope = await handlers.deliver(ev.REFERRAL_CREATED, _created(organisation_id, service_id))

    query = select(webhook_deliveries).where(webhook_deliveries.c.organisation_id == organisation_id)
    (delivery,) = (await handlers.session.execute(query)).mappings().all()
    assert (delivery["event_id"], delivery["status"]) == (envelope.id, "pending")
    assert ev.Envelope.model_validate_json(delivery["body"]).id == envelope.id


async def test_an_ended_referral_gives_its_place_back_once_and_marks_its_service_for_one_update(
    handlers: HandlerBench,
) -> None:
    organisation_id, service_id = await _service(handlers, capacity=0)
    created = _created(organisation_id, service_id)
    await handlers.deliver(ev.REFERRAL_CREATED, created)
    await _accepted(handlers, created.referral_id)

    await handlers.deliver(ev.OUTCOME_RECORDED, _outcome(organisation_id, service_id, created.referral_id, "completed"))
    await handlers.deliver(
        ev.OUTCOME_RECORDED, _outcome(organisation_id, service_id, created.referral_id, "disengaged")
    )

    assert await _capacity(handlers, service_id) == 1  # once, however many outcomes end it
    (row,) = await _inbox(handlers, created.referral_id)
    assert (row["status"], row["place_released"]) == ("finished", True)
    # Capacity changes are coalesced: the handler marks the service, and the directory's
    # `service-updates` job stages one service.updated for all changes since the last one.
    pending = select(services.c.update_pending).where(services.c.id == service_id)
    assert (await handlers.session.execute(pending)).scalar_one() is True
    assert [e for e in await handlers.staged(ev.SERVICE_UPDATED) if e.data["service_id"] == service_id] == []


async def test_an_outcome_that_does_not_end_the_referral_keeps_the_place(handlers: HandlerBench) -> None:
    organisation_id, service_id = await _service(handlers, capacity=0)
    created = _created(organisation_id, service_id)
    await handlers.deliver(ev.REFERRAL_CREATED, created)
    await _accepted(handlers, created.referral_id)

    await handlers.deliver(ev.OUTCOME_RECORDED, _outcome(organisation_id, service_id, created.referral_id, "engaged"))

    assert await _capacity(handlers, service_id) == 0
    (row,) = await _inbox(handlers, created.referral_id)
    assert (row["status"], row["place_released"]) == ("accepted", False)
    assert await handlers.staged(ev.SERVICE_UPDATED) == []


async def test_an_outcome_for_a_referral_never_accepted_frees_nothing(handlers: HandlerBench) -> None:
    organisation_id, service_id = await _service(handlers, capacity=0)
    received = _created(organisation_id, service_id)
    await handlers.deliver(ev.REFERRAL_CREATED, received)

    await handlers.deliver(
        ev.OUTCOME_RECORDED, _outcome(organisation_id, service_id, received.referral_id, "completed")
    )
    await handlers.deliver(ev.OUTCOME_RECORDED, _outcome(organisation_id, service_id, "not-ours", "completed"))

    assert await _capacity(handlers, service_id) == 0
    assert (await _inbox(handlers, received.referral_id))[0]["status"] == "received"


async def test_a_refusal_is_counted_once_with_no_person_in_it(handlers: HandlerBench) -> None:
    refused = ev.ReferralRefused(
        refusal_id=_id(),
        pcn_id="U12345",
        organisation_id="org-1",
        service_id="svc-1",
        needs=["nature", "debt"],
        age_band="65-74",
        postcode_district="LS6",
        reason="no_capacity",
        refused_at=NOW,
    )

    await handlers.deliver(ev.REFERRAL_REFUSED, refused)
    await handlers.deliver(ev.REFERRAL_REFUSED, refused)  # the same request retried: the same refusal id

    query = select(referral_refusals).where(referral_refusals.c.refusal_id == refused.refusal_id)
    (row,) = (await handlers.session.execute(query)).mappings().all()
    assert (row["reason"], row["postcode_district"], row["needs"]) == ("no_capacity", "LS6", ["nature", "debt"])


async def test_each_test_starts_from_an_empty_inbox(handlers: HandlerBench) -> None:
    """The rolled-back transaction: nothing the tests above wrote is left in the shared database."""
    assert (await handlers.session.execute(select(referral_inbox))).first() is None
    assert (await handlers.session.execute(select(services))).first() is None
