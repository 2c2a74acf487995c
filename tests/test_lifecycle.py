"""The referral lifecycle end to end: four services as separate processes, real Kafka and PostgreSQL."""

from __future__ import annotations

import uuid

import httpx
import pytest
from support import PERSON, events_on, eventually_status, make_world, publish_raw, refer, referral_body

from socialrx_harness.testing import wait_for
from socialrx_shared import events as ev


@pytest.fixture
async def client():
    async with httpx.AsyncClient(timeout=15) as http:
        yield http


async def _payments(client, world, referral_id: str) -> list[dict]:
    answer = await client.get(
        world.url("funding-ledger", f"/payments?referral_id={referral_id}"), headers=world.finance
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]


async def _published_capacity(kafka, world) -> int:
    """The capacity in the newest `service.updated` the directory published for the service."""
    updates = await events_on(kafka.bootstrap_servers, ev.SERVICE_UPDATED.topic, service_id=world.service_id)
    newest = max(updates, key=lambda pair: pair[0].data["version"])[0]
    return newest.data["capacity_available"]


async def test_happy_path_referral_to_payment_due(platform, kafka, jwt_secret, client) -> None:
    world = make_world(platform, jwt_secret, capacity=3)
    referral = await refer(client, world)
    assert referral["status"] == "created"
    assert referral["postcode_district"] == "LS1" and referral["age_band"] == "75-84"
    rid = referral["id"]

    accepted = await eventually_status(
        client,
        ("POST", world.url("directory", f"/referrals/{rid}/accept")),
        world.charity,
        200,
        what="referral in the charity's inbox",
    )
    assert accepted.json()["referral_id"] == rid
    outcome = await eventually_status(
        client,
        ("POST", world.url("outcomes", f"/referrals/{rid}/outcomes")),
        world.charity,
        201,
        {
            "status": "completed",
            "sessions_attended": 6,
            "measures": [{"instrument": "SWEMWBS", "phase": "baseline", "answers": [3, 3, 3, 3, 3, 3, 3]}],
        },
        what="outcomes knows the referral was accepted",
    )
    assert outcome.json()["measures"][0]["score"] == 19.25  # raw 21 -> metric 19.25

    async def both_payments():
        items = await _payments(client, world, rid)
        return items if len(items) == 2 else None

    payments = {p["basis"]: p for p in await wait_for(both_payments, what="two payments due")}
    assert payments["referral_accepted"]["amount_pence"] == 5000
    assert payments["outcome_recorded"]["amount_pence"] == 12000
    for payment in payments.values():
        assert payment["open_pence"] == payment["amount_pence"]
        # Work in a quarter falls due 30 days after the quarter ends (ARCHITECTURE: payment terms).
        assert payment["period"].startswith("20") and payment["due_date"] > payment["business_date"]

    async def outcome_recorded():
        answer = await client.get(world.url("referral-intake", f"/referrals/{rid}"), headers=world.link_worker)
        body = answer.json()
        return body if body["status"] == "outcome_recorded" else None

    shown = await wait_for(outcome_recorded, what="referral-intake shows the outcome")
    assert [entry["status"] for entry in shown["timeline"]] == ["created", "accepted", "outcome_recorded"]

    due_events = await events_on(kafka.bootstrap_servers, ev.PAYMENT_DUE.topic, referral_id=rid)
    assert {e.data["basis"] for e, _ in due_events} == {"referral_accepted", "outcome_recorded"}
    for envelope, _ in due_events:  # the work's date travels with the payment, and nothing was capped
        assert envelope.data["business_date"] == payments[envelope.data["basis"]]["business_date"]
        assert envelope.data["refused_over_cap_pence"] == 0
    arrears = (
        await client.get(
            world.url("funding-ledger", f"/arrears?organisation_id={world.organisation_id}&as_of=2099-01-01"),
            headers=world.finance,
        )
    ).json()
    assert arrears["by_organisation"][0]["days_over_90"] == 17000


async def test_capacity_falls_on_accept_and_rises_when_the_referral_ends(platform, kafka, jwt_secret, client) -> None:
    world = make_world(platform, jwt_secret, capacity=2)
    rid = (await refer(client, world))["id"]
    assert await _published_capacity(kafka, world) == 2
    await eventually_status(client, ("POST", world.url("directory", f"/referrals/{rid}/accept")), world.charity, 200)

    async def capacity_is(expected: int) -> bool:
        return await _published_capacity(kafka, world) == expected

    await wait_for(lambda: capacity_is(1), what="capacity down to 1 on acceptance")
    await eventually_status(
        client,
        ("POST", world.url("outcomes", f"/referrals/{rid}/outcomes")),
        world.charity,
        201,
        {"status": "engaged", "sessions_attended": 1},
    )
    await eventually_status(
        client,
        ("POST", world.url("outcomes", f"/referrals/{rid}/outcomes")),
        world.charity,
        201,
        {"status": "completed", "sessions_attended": 4},
    )
    await wait_for(lambda: capacity_is(2), what="capacity back to 2 once the referral completed")


async def test_decline_path_owes_nothing(platform, kafka, jwt_secret, client) -> None:
    world = make_world(platform, jwt_secret)
    rid = (await refer(client, world))["id"]
    declined = await eventually_status(
        client,
        ("POST", world.url("directory", f"/referrals/{rid}/decline")),
        world.charity,
        200,
        {"reason": "not_eligible"},
    )
    assert declined.json()["reason"] == "not_eligible"

    async def shows_declined():
        body = (await client.get(world.url("referral-intake", f"/referrals/{rid}"), headers=world.link_worker)).json()
        return body if body["status"] == "declined" else None

    shown = await wait_for(shows_declined, what="referral-intake shows the decline")
    assert shown["decline_reason"] == "not_eligible"
    assert shown["timeline"][-1]["detail"]["reason"] == "not_eligible"
    # A second decision is refused, whichever it is.
    for action, body in (("accept", None), ("decline", {"reason": "other"})):
        again = await client.post(
            world.url("directory", f"/referrals/{rid}/{action}"), headers=world.charity, json=body
        )
        assert again.status_code == 409, again.text
    refused = await client.post(
        world.url("outcomes", f"/referrals/{rid}/outcomes"),
        headers=world.charity,
        json={"status": "completed", "sessions_attended": 1},
    )
    assert refused.status_code in (404, 409)
    assert await events_on(kafka.bootstrap_servers, ev.REFERRAL_ACCEPTED.topic, referral_id=rid) == []
    assert await _payments(client, world, rid) == []


async def test_accepting_twice_is_refused(platform, kafka, jwt_secret, client) -> None:
    world = make_world(platform, jwt_secret)
    rid = (await refer(client, world))["id"]
    await eventually_status(client, ("POST", world.url("directory", f"/referrals/{rid}/accept")), world.charity, 200)
    again = await client.post(world.url("directory", f"/referrals/{rid}/accept"), headers=world.charity)
    assert again.status_code == 409 and "already accepted" in again.json()["detail"]
    assert len(await events_on(kafka.bootstrap_servers, ev.REFERRAL_ACCEPTED.topic, referral_id=rid)) == 1


async def test_idempotency_key_creates_one_referral(platform, kafka, jwt_secret, client) -> None:
    world = make_world(platform, jwt_secret)
    await refer(client, world)  # the service is known to referral-intake from here on
    key = {"Idempotency-Key": uuid.uuid4().hex, **world.link_worker}
    url = world.url("referral-intake", "/referrals")
    first = await client.post(url, headers=key, json=referral_body(world.service_id))
    second = await client.post(url, headers=key, json=referral_body(world.service_id))
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] == second.json()["id"]
    other = dict(PERSON, nhs_number="9999999999")
    reused = await client.post(url, headers=key, json=referral_body(world.service_id, person=other))
    assert reused.status_code == 409 and "Idempotency-Key" in reused.json()["detail"]
    created = await events_on(kafka.bootstrap_servers, ev.REFERRAL_CREATED.topic, referral_id=first.json()["id"])
    assert len({envelope.id for envelope, _ in created}) == 1


async def test_redelivered_event_posts_once(platform, kafka, jwt_secret, client) -> None:
    world = make_world(platform, jwt_secret)
    rid = (await refer(client, world))["id"]
    await eventually_status(client, ("POST", world.url("directory", f"/referrals/{rid}/accept")), world.charity, 200)
    await wait_for(lambda: _payments(client, world, rid), what="the acceptance fee")
    [(envelope, record)] = await events_on(kafka.bootstrap_servers, ev.REFERRAL_ACCEPTED.topic, referral_id=rid)
    balance_before = (await client.get(world.url("funding-ledger", "/trial-balance"), headers=world.finance)).json()
    for _ in range(3):  # the same event id, delivered again
        await publish_raw(kafka.bootstrap_servers, ev.REFERRAL_ACCEPTED.topic, record.value, record.key)
    # A later event of the same referral (same partition, so after the duplicates) marks when they were read.
    await eventually_status(
        client,
        ("POST", world.url("outcomes", f"/referrals/{rid}/outcomes")),
        world.charity,
        201,
        {"status": "completed", "sessions_attended": 2},
    )

    async def outcome_fee_posted():
        items = await _payments(client, world, rid)
        return items if len(items) == 2 else None

    items = await wait_for(outcome_fee_posted, what="the outcome fee")
    assert sorted(p["basis"] for p in items) == ["outcome_recorded", "referral_accepted"]
    balance_after = (await client.get(world.url("funding-ledger", "/trial-balance"), headers=world.finance)).json()
    assert balance_after["debits_pence"] - balance_before["debits_pence"] == 12000  # the outcome only
    timeline = (await client.get(world.url("referral-intake", f"/referrals/{rid}"), headers=world.link_worker)).json()[
        "timeline"
    ]
    assert [t["status"] for t in timeline].count("accepted") == 1
    assert envelope.id  # the re-published event kept its id: that is what made it a duplicate
