"""Every service's /metrics after a lifecycle: requests, events consumed and published, outbox, lag."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families
from support import eventually_status, make_world, refer

from socialrx_harness.testing import wait_for


def _samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: dict, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


async def test_metrics_count_the_lifecycle(platform, jwt_secret) -> None:
    world = make_world(platform, jwt_secret)
    async with httpx.AsyncClient(timeout=15) as client:
        before = {s: _samples((await client.get(platform.url(s) + "/metrics")).text) for s in platform.services}
        rid = (await refer(client, world))["id"]
        await eventually_status(
            client, ("POST", world.url("directory", f"/referrals/{rid}/accept")), world.charity, 200
        )
        await eventually_status(
            client,
            ("POST", world.url("outcomes", f"/referrals/{rid}/outcomes")),
            world.charity,
            201,
            {"status": "completed", "sessions_attended": 2},
        )

        async def ledgered():
            answer = await client.get(
                world.url("funding-ledger", f"/payments?referral_id={rid}"), headers=world.finance
            )
            return answer.json()["total"] == 2

        await wait_for(ledgered, what="both payments")
        after = {s: _samples((await client.get(platform.url(s) + "/metrics")).text) for s in platform.services}

    def grew(service: str, name: str, **labels: str) -> float:
        return _value(after[service], name, **labels) - _value(before[service], name, **labels)

    assert grew("referral-intake", "socialrx_http_requests_total", method="POST", route="/referrals", status="201") >= 1
    assert grew("referral-intake", "socialrx_messages_published_total", topic="referral.created.v1") >= 1
    assert grew("directory", "socialrx_messages_consumed_total", topic="referral.created.v1") >= 1
    assert grew("directory", "socialrx_messages_published_total", topic="referral.accepted.v1") >= 1
    assert grew("funding-ledger", "socialrx_messages_consumed_total", topic="referral.accepted.v1") >= 1
    assert grew("funding-ledger", "socialrx_messages_consumed_total", topic="outcome.recorded.v1") >= 1
    assert grew("funding-ledger", "socialrx_messages_published_total", topic="payment.due.v1") >= 2
    assert grew("outcomes", "socialrx_handler_duration_seconds_count", topic="referral.accepted.v1") >= 1
    assert (
        grew("directory", "socialrx_http_request_duration_seconds_count", route="/referrals/{referral_id}/accept") >= 1
    )
    for service, samples in after.items():
        names = {name for name, _ in samples}
        assert {"socialrx_outbox_backlog", "socialrx_outbox_oldest_unsent_age_seconds"} <= names, service
        assert "socialrx_consumer_lag" in names, service
        lags = [v for (n, _), v in samples.items() if n == "socialrx_consumer_lag"]
        assert all(lag >= 0 for lag in lags)
