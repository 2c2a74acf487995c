"""Webhook subscriptions: signed, retried until the receiver recovers, replayable, per organisation."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone

from sqlalchemy import insert

from socialrx_directory.app import Settings, build
from socialrx_directory.store import subscriptions
from socialrx_harness.testing import auth, running_service, wait_for
from socialrx_shared import events as ev


def _created(referral_id: str, org: str) -> ev.ReferralCreated:
    return ev.ReferralCreated(
        referral_id=referral_id,
        pcn_id="U12345",
        practice_id="B82005",
        link_worker_id="lw-1",
        organisation_id=org,
        service_id="svc-" + org,
        needs=["loneliness"],
        person_ref="b" * 64,
        age_band="25-34",
        postcode_district="LS6",
        consent_to_share=True,
        created_at=datetime.now(timezone.utc),
    )


async def _subscribe(client, token, receiver, events) -> dict:
    made = await client.post("/subscriptions", headers=token, json={"url": receiver.url, "events": events})
    assert made.status_code == 201, made.text
    receiver.secret = made.json()["secret"]
    return made.json()


async def test_signed_retried_replayable_and_never_another_organisations(kafka, postgres, jwt_secret, kit) -> None:
    org_a, org_b = "org-a-" + uuid.uuid4().hex[:6], "org-b-" + uuid.uuid4().hex[:6]
    charity_a = auth(jwt_secret, "charity", organisation_id=org_a)
    charity_b = auth(jwt_secret, "charity", organisation_id=org_b)
    ref_a, ref_b = "r-a-" + uuid.uuid4().hex[:8], "r-b-" + uuid.uuid4().hex[:8]
    async with running_service(
        build,
        Settings,
        database_url=postgres.new_database("dir"),
        kafka=kafka.bootstrap_servers,
        jwt_secret=jwt_secret,
        webhook_allow_http=True,
        webhook_allow_private_networks=True,  # the receivers listen on 127.0.0.1
        webhook_poll_interval_s=0.2,
        webhook_retry_base_s=0.3,
    ) as (_app, client):
        with kit.Receiver(fail_first=2) as receiver_a, kit.Receiver() as receiver_b:
            sub_a = await _subscribe(client, charity_a, receiver_a, ["referral.created", "referral.accepted"])
            await _subscribe(client, charity_b, receiver_b, ["referral.created"])
            listed = (await client.get("/subscriptions", headers=charity_a)).json()["items"]
            assert [s["id"] for s in listed] == [sub_a["id"]] and "secret" not in listed[0]

            await kit.publish(kafka.bootstrap_servers, ev.REFERRAL_CREATED, _created(ref_a, org_a))
            await kit.publish(kafka.bootstrap_servers, ev.REFERRAL_CREATED, _created(ref_b, org_b))

            # A's receiver fails twice, then recovers: it gets the event once it does.
            await wait_for(lambda: receiver_a.accepted, what="A's receiver to get its referral")
            assert [e["data"]["referral_id"] for e in receiver_a.accepted] == [ref_a]
            assert len(receiver_a.calls) == 3 and all(c["signature_valid"] for c in receiver_a.calls)
            assert len({c["headers"]["X-Socialrx-Event-Id"] for c in receiver_a.calls}) == 1
            log = (await client.get(f"/subscriptions/{sub_a['id']}/deliveries", headers=charity_a)).json()["items"]
            assert [(d["status"], d["attempts"], d["last_status_code"]) for d in log] == [("delivered", 3, 204)]

            # A decision by A reaches A's receiver too.
            assert (await client.post(f"/referrals/{ref_a}/accept", headers=charity_a)).status_code == 200
            await wait_for(lambda: len(receiver_a.accepted) == 2, what="referral.accepted webhook")
            assert receiver_a.accepted[1]["type"] == "socialrx.referral.accepted.v1"

            # Replay: the same event, same id, again.
            replay = await client.post(
                f"/subscriptions/{sub_a['id']}/deliveries/{log[0]['id']}/replay", headers=charity_a
            )
            assert replay.status_code == 202
            await wait_for(lambda: len(receiver_a.accepted) == 3, what="replayed delivery")
            assert receiver_a.accepted[2]["id"] == receiver_a.accepted[0]["id"]

            await wait_for(lambda: receiver_b.accepted, what="B's receiver to get its referral")
            assert {c["event"]["data"]["organisation_id"] for c in receiver_a.calls} == {org_a}
            assert {c["event"]["data"]["organisation_id"] for c in receiver_b.calls} == {org_b}
            assert [e["data"]["referral_id"] for e in receiver_b.accepted] == [ref_b]

            # B can neither see nor replay A's subscription.
            assert (await client.get(f"/subscriptions/{sub_a['id']}/deliveries", headers=charity_b)).status_code == 404
            assert (
                await client.post(f"/subscriptions/{sub_a['id']}/deliveries/{log[0]['id']}/replay", headers=charity_b)
            ).status_code == 404


async def test_subscription_refusals(kafka, postgres, jwt_secret) -> None:
    charity = auth(jwt_secret, "charity", organisation_id="org-x")
    async with running_service(
        build, Settings, database_url=postgres.new_database("dir"), kafka=kafka.bootstrap_servers, jwt_secret=jwt_secret
    ) as (_app, client):
        cases = [
            (charity, {"url": "http://example.org/hook", "events": ["referral.created"]}, 422),  # https only
            (charity, {"url": "https://example.org/hook", "events": ["payment.due"]}, 422),
            (charity, {"url": "https://example.org/hook", "events": []}, 422),
            (charity, {"url": "ftp://example.org/hook", "events": ["referral.created"]}, 422),
            (charity, {"url": "https://example.org/hook", "events": ["referral.created"], "extra": 1}, 422),
            (
                auth(jwt_secret, "link_worker", pcn_id="U12345"),
                {"url": "https://example.org/hook", "events": ["referral.created"]},
                403,
            ),
            ({}, {"url": "https://example.org/hook", "events": ["referral.created"]}, 401),
        ]
        for headers, body, status in cases:
            answer = await client.post("/subscriptions", headers=headers, json=body)
            assert answer.status_code == status, (body, answer.text)
            assert "detail" in answer.json()
        assert (await client.get("/subscriptions", headers=charity)).json()["items"] == []


async def test_asyncapi_document_lists_the_directorys_topics(kafka, postgres, jwt_secret) -> None:
    async with running_service(
        build, Settings, database_url=postgres.new_database("dir"), kafka=kafka.bootstrap_servers, jwt_secret=jwt_secret
    ) as (_app, client):
        doc = (await client.get("/asyncapi")).json()
    assert doc["asyncapi"].startswith("2.")
    assert set(doc["channels"]) == {
        "referral.accepted.v1",
        "referral.declined.v1",
        "service.updated.v1",
        "organisation.registered.v1",
    }
    assert "#/$defs/" not in str(doc)
    declined = doc["channels"]["referral.declined.v1"]["subscribe"]["message"]["payload"]
    assert "no_response" in str(declined["properties"]["data"])


INSIDE = [
    "https://127.0.0.1:5432/",
    "https://169.254.169.254/latest/meta-data/",
    "https://[::1]/hook",
    "https://0x7f000001/hook",
    "https://2130706433/",
    "https://10.0.0.8/hook",
    "https://[::ffff:127.0.0.1]/",
    "https://postgres:5432/",
    "https://directory.socialrx.svc.cluster.local/hook",
    "https://localhost/hook",
    "https://0.0.0.0/",
    "https://224.0.0.1/",
]


async def test_urls_inside_the_network_are_refused_at_subscribe(kafka, postgres, jwt_secret, kit) -> None:
    charity = auth(jwt_secret, "charity", organisation_id="org-ssrf-" + uuid.uuid4().hex[:6])
    # The setting off (the default): even a real, answering receiver on loopback is refused.
    async with running_service(
        build,
        Settings,
        database_url=postgres.new_database("dir"),
        kafka=kafka.bootstrap_servers,
        jwt_secret=jwt_secret,
        webhook_allow_http=True,
    ) as (_app, client):
        with kit.Receiver() as receiver:
            for url in [*INSIDE, receiver.url]:
                answer = await client.post(
                    "/subscriptions", headers=charity, json={"url": url, "events": ["referral.created"]}
                )
                assert answer.status_code == 422, (url, answer.text)
                assert "this webhook url cannot be used" in answer.json()["detail"], url
                assert "inside a network" in answer.json()["detail"] or "not public" in answer.json()["detail"], url
            assert (await client.get("/subscriptions", headers=charity)).json()["items"] == []
            assert receiver.calls == []


async def test_delivery_refuses_a_url_that_resolves_inside_the_network(kafka, postgres, jwt_secret, kit) -> None:
    """What passed at subscribe may resolve elsewhere later (DNS rebinding): delivery checks again."""
    org = "org-rebind-" + uuid.uuid4().hex[:6]
    charity = auth(jwt_secret, "charity", organisation_id=org)
    referral_id = "r-" + uuid.uuid4().hex[:8]
    async with running_service(
        build,
        Settings,
        database_url=postgres.new_database("dir"),
        kafka=kafka.bootstrap_servers,
        jwt_secret=jwt_secret,
        webhook_allow_http=True,
        webhook_poll_interval_s=0.2,
        webhook_retry_base_s=0.3,
        webhook_max_attempts=2,
    ) as (app, client):
        with kit.Receiver() as receiver:
            # Written as a subscription that passed its check, whose name now answers 127.0.0.1.
            subscription_id = str(uuid.uuid4())
            async with app.state.runtime.transaction() as session:
                await session.execute(
                    insert(subscriptions).values(
                        id=subscription_id,
                        organisation_id=org,
                        url=receiver.url,
                        events=["referral.created"],
                        secret="whsec_test",
                        active=True,
                        created_at=datetime.now(timezone.utc),
                    )
                )
            await kit.publish(kafka.bootstrap_servers, ev.REFERRAL_CREATED, _created(referral_id, org))

            async def failed() -> list | None:
                log = (await client.get(f"/subscriptions/{subscription_id}/deliveries", headers=charity)).json()[
                    "items"
                ]
                return log if log and log[0]["status"] == "failed" else None

            log = await wait_for(failed, what="the delivery to be refused")
            assert [(d["attempts"], d["last_status_code"], d["last_error"]) for d in log] == [
                (2, None, "refused: the URL points inside a network")
            ]
            assert receiver.calls == []


async def test_a_slow_receiver_holds_up_nobody_else(kafka, postgres, jwt_secret, kit) -> None:
    org_slow, org_fast = "org-slow-" + uuid.uuid4().hex[:6], "org-fast-" + uuid.uuid4().hex[:6]
    slow_charity = auth(jwt_secret, "charity", organisation_id=org_slow)
    async with running_service(
        build,
        Settings,
        database_url=postgres.new_database("dir"),
        kafka=kafka.bootstrap_servers,
        jwt_secret=jwt_secret,
        webhook_allow_http=True,
        webhook_allow_private_networks=True,
        webhook_poll_interval_s=0.1,
        webhook_retry_base_s=0.2,
        webhook_timeout_s=1.0,
    ) as (_app, client):
        with kit.Receiver(delay_s=4.0) as slow, kit.Receiver() as fast:
            slow_sub = await _subscribe(client, slow_charity, slow, ["referral.created"])
            await _subscribe(client, auth(jwt_secret, "charity", organisation_id=org_fast), fast, ["referral.created"])
            fast_refs = []
            for n in range(4):
                await kit.publish(
                    kafka.bootstrap_servers, ev.REFERRAL_CREATED, _created(f"slow-{n}-{uuid.uuid4().hex[:6]}", org_slow)
                )
                fast_refs.append(f"fast-{n}-{uuid.uuid4().hex[:6]}")
                published = time.monotonic()
                await kit.publish(kafka.bootstrap_servers, ev.REFERRAL_CREATED, _created(fast_refs[-1], org_fast))
                await wait_for(lambda n=n: len(fast.accepted) > n, timeout_s=10, what="the fast receiver's delivery")
                # Well under the slow receiver's 4 s, whatever the slow one is doing meanwhile.
                assert fast.arrived_at[n] - published < 2.5, fast.arrived_at[n] - published
            assert [e["data"]["referral_id"] for e in fast.accepted] == fast_refs  # in order

            async def retried_after_timeouts() -> list | None:
                log = (await client.get(f"/subscriptions/{slow_sub['id']}/deliveries", headers=slow_charity)).json()
                first = log["items"][0]
                return log["items"] if first["attempts"] >= 2 else None

            log = await wait_for(retried_after_timeouts, timeout_s=20, what="the slow receiver's delivery retried")
            assert log[0]["last_error"] == "no answer within 1 s" and log[0]["last_status_code"] is None
            # Its later events wait behind the first one's retry: one subscription's order is kept.
            assert all(d["attempts"] == 0 for d in log[1:]), log
