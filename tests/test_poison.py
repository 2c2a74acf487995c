"""Poison messages go to `<topic>.dlq` with the error and the original bytes; consumption goes on."""

from __future__ import annotations

import json
import uuid

import httpx
from support import eventually_status, make_world, publish_raw, refer

from socialrx_harness.testing import read_topic, wait_for
from socialrx_shared import events as ev

# Which services consume each topic (ARCHITECTURE.md): each one dead-letters a poison message itself.
CONSUMERS = {
    ev.REFERRAL_CREATED.topic: {"directory", "outcomes"},
    ev.REFERRAL_ACCEPTED.topic: {"referral-intake", "outcomes", "funding-ledger"},
    ev.REFERRAL_DECLINED.topic: {"referral-intake", "outcomes"},
    ev.OUTCOME_RECORDED.topic: {"referral-intake", "directory", "funding-ledger"},
    ev.SERVICE_UPDATED.topic: {"referral-intake", "funding-ledger"},
    ev.ORGANISATION_REGISTERED.topic: {"funding-ledger"},
}


def _poisons(marker: str) -> dict[str, bytes]:
    """A different kind of poison on each topic: not JSON, bad envelope, bad data, wrong type, unknown version."""
    valid_accepted = json.loads(
        ev.new_event(
            ev.REFERRAL_ACCEPTED,
            ev.ReferralAccepted(
                referral_id="r-" + marker,
                organisation_id="o",
                service_id="s",
                pcn_id="U12345",
                accepted_at="2026-11-24T10:00:00Z",
            ),
            source="test",
        ).to_bytes()
    )
    bad_data = {**valid_accepted, "data": {**valid_accepted["data"], "pcn_id": "not an ODS code!"}}
    wrong_type = {**valid_accepted, "subject": "r-" + marker}
    unknown_version = {**valid_accepted, "type": "socialrx.referral.declined.v7"}
    return {
        ev.REFERRAL_CREATED.topic: f"not json {marker}".encode(),
        ev.REFERRAL_ACCEPTED.topic: json.dumps(bad_data)
        .encode()
        .replace(b'"data"', f'"marker": "{marker}", "data"'.encode()),
        ev.REFERRAL_DECLINED.topic: json.dumps(unknown_version | {"marker": marker}).encode(),
        ev.OUTCOME_RECORDED.topic: json.dumps(wrong_type | {"marker": marker}).encode(),
        ev.SERVICE_UPDATED.topic: json.dumps({"specversion": "1.0", "marker": marker}).encode(),
        ev.ORGANISATION_REGISTERED.topic: json.dumps(valid_accepted | {"marker": marker}).encode(),  # wrong type
    }


async def test_poison_on_every_consumed_topic_is_dead_lettered_and_the_next_message_handled(
    platform, kafka, jwt_secret
) -> None:
    marker = uuid.uuid4().hex
    poisons = _poisons(marker)
    for topic, value in poisons.items():
        await publish_raw(kafka.bootstrap_servers, topic, value, key=b"poison-" + marker.encode())

    # Good messages after the poison, on every topic: a whole lifecycle and a decline.
    world = make_world(platform, jwt_secret)
    async with httpx.AsyncClient(timeout=15) as client:
        rid = (await refer(client, world))["id"]
        await eventually_status(
            client, ("POST", world.url("directory", f"/referrals/{rid}/accept")), world.charity, 200
        )
        await eventually_status(
            client,
            ("POST", world.url("outcomes", f"/referrals/{rid}/outcomes")),
            world.charity,
            201,
            {"status": "completed", "sessions_attended": 3},
        )
        declined_rid = (await refer(client, world))["id"]
        await eventually_status(
            client,
            ("POST", world.url("directory", f"/referrals/{declined_rid}/decline")),
            world.charity,
            200,
            {"reason": "person_declined"},
        )

        async def lifecycle_done():
            body = (
                await client.get(world.url("referral-intake", f"/referrals/{rid}"), headers=world.link_worker)
            ).json()
            other = (
                await client.get(world.url("referral-intake", f"/referrals/{declined_rid}"), headers=world.link_worker)
            ).json()
            return body["status"] == "outcome_recorded" and other["status"] == "declined"

        await wait_for(lifecycle_done, what="the good messages after the poison were handled")

    for topic, consumers in CONSUMERS.items():

        async def dead_letters():
            found = [r for r in await read_topic(kafka.bootstrap_servers, topic + ".dlq") if marker.encode() in r.value]
            return found if {dict(r.headers)["dlq.consumer"].decode() for r in found} >= consumers else None

        letters = await wait_for(dead_letters, what=f"{topic}.dlq from {sorted(consumers)}")
        for letter in letters:
            headers = {k: v.decode() for k, v in letter.headers}
            assert letter.value == poisons[topic]  # the original bytes, untouched
            assert headers["dlq.topic"] == topic and headers["dlq.error"]
            assert int(headers["dlq.offset"]) >= 0
        assert len(letters) == len(consumers)  # each consumer dead-letters it once, not again and again


async def test_dead_letter_error_says_what_was_wrong(platform, kafka, jwt_secret) -> None:
    marker = uuid.uuid4().hex
    await publish_raw(kafka.bootstrap_servers, ev.SERVICE_UPDATED.topic, f"{{broken {marker}".encode())

    async def letter():
        found = [
            r
            for r in await read_topic(kafka.bootstrap_servers, ev.SERVICE_UPDATED.dlq_topic)
            if marker.encode() in r.value
        ]
        return found[0] if found else None

    record = await wait_for(letter, what="the dead letter")
    assert "value is not JSON" in dict(record.headers)["dlq.error"].decode()
    metrics = httpx.get(platform.url("referral-intake") + "/metrics", timeout=10).text
    counted = [
        line
        for line in metrics.splitlines()
        if line.startswith("socialrx_messages_dead_lettered_total") and 'topic="service.updated.v1"' in line
    ]
    assert counted and float(counted[0].split()[-1]) >= 1
