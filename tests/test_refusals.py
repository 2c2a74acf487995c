"""Bad requests get a clear 4xx and change nothing: no row, no event on the topic."""

from __future__ import annotations

import uuid

import httpx
import pytest
from support import PERSON, events_on, eventually_status, make_world, refer, referral_body

from socialrx_harness.testing import wait_for
from socialrx_shared import events as ev


@pytest.fixture
async def client():
    async with httpx.AsyncClient(timeout=15) as http:
        yield http


async def _created_events_for(kafka, service_id: str) -> int:
    return len(await events_on(kafka.bootstrap_servers, ev.REFERRAL_CREATED.topic, service_id=service_id))


async def _known_to_intake(client, world) -> None:
    """Wait until referral-intake has the directory's view of the service (it learns by events)."""
    # A need nobody serves: refused either way, but 404 ("unknown service") until intake has the
    # service and 422 (the need) after. A field-level fault (say the NHS number) would be refused
    # before the service is looked up, so it could not tell the two apart.
    probe = dict(referral_body(world.service_id), needs=["probe-" + uuid.uuid4().hex[:8]])

    async def known() -> bool:
        answer = await client.post(world.url("referral-intake", "/referrals"), headers=world.link_worker, json=probe)
        return answer.status_code == 422

    await wait_for(known, what="referral-intake knows the service")


async def test_unknown_service_is_refused(platform, kafka, jwt_secret, client) -> None:
    world = make_world(platform, jwt_secret)
    unknown = "svc-" + uuid.uuid4().hex
    answer = await client.post(
        world.url("referral-intake", "/referrals"), headers=world.link_worker, json=referral_body(unknown)
    )
    assert answer.status_code == 404
    assert "unknown service" in answer.json()["detail"]
    assert await _created_events_for(kafka, unknown) == 0


async def test_service_with_no_capacity_is_refused_with_the_reason(platform, kafka, jwt_secret, client) -> None:
    world = make_world(platform, jwt_secret, capacity=0)
    answer = await eventually_status(
        client,
        ("POST", world.url("referral-intake", "/referrals")),
        world.link_worker,
        409,
        referral_body(world.service_id),
        what="refusal for no capacity",
    )
    assert "no capacity" in answer.json()["detail"]
    assert await _created_events_for(kafka, world.service_id) == 0


async def test_service_with_expired_safeguarding_policy_is_refused(platform, kafka, jwt_secret, client) -> None:
    world = make_world(platform, jwt_secret, safeguarding="2020-01-01")
    answer = await eventually_status(
        client,
        ("POST", world.url("referral-intake", "/referrals")),
        world.link_worker,
        409,
        referral_body(world.service_id),
        what="refusal for safeguarding",
    )
    assert "safeguarding policy expired" in answer.json()["detail"]
    assert await _created_events_for(kafka, world.service_id) == 0


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"consent": {"given": False, "recorded_at": "2026-11-01T10:00:00Z"}}, "consent.given must be true"),
        ({"person": dict(PERSON, nhs_number="9434765918")}, "check digit"),
        ({"person": dict(PERSON, nhs_number="94347659")}, "10 digits"),
        ({"person": dict(PERSON, postcode="NOPE 1")}, "not a UK postcode"),
        ({"needs": []}, "needs"),
        ({"person": dict(PERSON, date_of_birth="2999-01-01")}, "date of birth"),
        ({"surprise": True}, "Extra inputs are not permitted"),
        ({"needs": ["no-such-need-anywhere"]}, "not in the directory's needs taxonomy"),
        ({"needs": ["loneliness", "housing-" + uuid.uuid4().hex[:6]]}, "not in the directory's needs taxonomy"),
        ({"consent": {"given": True, "recorded_at": "2099-01-01T10:00:00Z"}}, "in the future"),
    ],
)
async def test_invalid_referrals_are_refused(platform, kafka, jwt_secret, client, change, expected) -> None:
    world = make_world(platform, jwt_secret)
    await _known_to_intake(client, world)
    body = referral_body(world.service_id)
    body.update(change)
    answer = await client.post(world.url("referral-intake", "/referrals"), headers=world.link_worker, json=body)
    assert 400 <= answer.status_code < 500, answer.text
    assert expected in str(answer.json()["detail"])
    # The refusal never echoes what was sent: it may be a person's details.
    assert PERSON["family_name"] not in answer.text
    assert await _created_events_for(kafka, world.service_id) == 0
    listed = await client.get(world.url("referral-intake", "/referrals"), headers=world.link_worker)
    assert world.service_id not in listed.text


async def test_outcome_for_a_referral_never_accepted_is_refused(platform, kafka, jwt_secret, client) -> None:
    world = make_world(platform, jwt_secret)
    rid = (await refer(client, world))["id"]

    async def outcomes_knows() -> httpx.Response | None:
        answer = await client.post(
            world.url("outcomes", f"/referrals/{rid}/outcomes"),
            headers=world.charity,
            json={"status": "completed", "sessions_attended": 3},
        )
        return answer if answer.status_code == 409 else None

    refused = await wait_for(outcomes_knows, what="outcomes refuses an unaccepted referral")
    assert "only for accepted referrals" in refused.json()["detail"]
    assert await events_on(kafka.bootstrap_servers, ev.OUTCOME_RECORDED.topic, referral_id=rid) == []


async def test_another_organisation_cannot_decide(platform, jwt_secret, client) -> None:
    world = make_world(platform, jwt_secret)
    other = make_world(platform, jwt_secret)
    rid = (await refer(client, world))["id"]
    await wait_for(lambda: _in_inbox(client, world, rid), what="referral in the inbox")
    stolen = await client.post(world.url("directory", f"/referrals/{rid}/accept"), headers=other.charity)
    assert stolen.status_code == 404
    mine = await client.post(world.url("directory", f"/referrals/{rid}/accept"), headers=world.charity)
    assert mine.status_code == 200


async def _in_inbox(client, world, rid: str) -> bool:
    inbox = (await client.get(world.url("directory", "/inbox"), headers=world.charity)).json()
    return any(item["referral_id"] == rid for item in inbox["items"])


async def test_need_the_service_does_not_serve_is_refused(platform, kafka, jwt_secret, client) -> None:
    world = make_world(platform, jwt_secret)
    other = make_world(platform, jwt_secret)
    # A need the directory knows (another service serves it) but this service does not.
    patched = await client.patch(
        other.url("directory", f"/services/{other.service_id}"), headers=other.charity, json={"needs": ["food"]}
    )
    assert patched.status_code == 200, patched.text
    body = referral_body(world.service_id, needs=["physical-activity", "food"])

    async def refused_as_not_served() -> httpx.Response | None:
        answer = await client.post(world.url("referral-intake", "/referrals"), headers=world.link_worker, json=body)
        assert answer.status_code in (404, 422), answer.text  # 404 until intake knows the service
        return answer if "does not serve" in answer.json()["detail"] else None

    answer = await wait_for(refused_as_not_served, what="refusal for a need the service does not serve")
    assert "this service does not serve 'food'; it serves 'loneliness', 'physical-activity'" in answer.json()["detail"]
    assert await _created_events_for(kafka, world.service_id) == 0


async def test_empty_idempotency_key_is_refused(platform, kafka, jwt_secret, client) -> None:
    world = make_world(platform, jwt_secret)
    await _known_to_intake(client, world)
    # What `-H "Idempotency-Key: $(uuidgen)"` sends where uuidgen is missing.
    answer = await client.post(
        world.url("referral-intake", "/referrals"),
        headers={**world.link_worker, "Idempotency-Key": ""},
        json=referral_body(world.service_id),
    )
    assert answer.status_code == 400, answer.text
    assert "Idempotency-Key is empty" in answer.json()["detail"]
    assert await _created_events_for(kafka, world.service_id) == 0
