"""Changes the clock makes: a safeguarding policy expiring, a referral left unanswered for 14 days."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from functools import partial

from socialrx_directory import sweeps
from socialrx_directory.app import Settings, build
from socialrx_harness.testing import auth, events_on_topic, running_service, wait_for
from socialrx_shared import events as ev


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def _events(kafka, topic: str, **match) -> list[dict]:
    """Valid events' data (other tests leave poison messages on the shared topics)."""
    return [envelope.data for envelope in await events_on_topic(kafka.bootstrap_servers, topic, **match)]


async def test_safeguarding_expiry_flips_accepting_in_a_published_service_updated(kafka, postgres, jwt_secret) -> None:
    clock = FakeClock(datetime.now(timezone.utc))
    async with running_service(
        partial(build, clock=clock),
        Settings,
        database_url=postgres.new_database("dir"),
        kafka=kafka.bootstrap_servers,
        jwt_secret=jwt_secret,
        safeguarding_sweep_interval_s=0.2,
    ) as (app, client):
        admin = auth(jwt_secret, "admin")
        org = (await client.post("/organizations", headers=admin, json={"name": "Green Gym"})).json()["id"]
        made = await client.post(
            "/services",
            headers=admin,
            json={
                "organization_id": org,
                "name": "Green Gym",
                "needs": ["nature"],
                "capacity": 2,
                "safeguarding_policy_valid_until": clock.now.date().isoformat(),
            },
        )
        assert made.status_code == 201 and made.json()["accepting_referrals"] is True
        service_id = made.json()["id"]

        # Today the policy is still valid: the sweep has nothing to say.
        assert await sweeps.safeguarding_sweep(app.state.runtime, clock.now) == []
        assert (await _events(kafka, ev.SERVICE_UPDATED.topic, service_id=service_id, accepting_referrals=False)) == []

        clock.now += timedelta(days=1)  # the policy's expiry date is now yesterday

        async def flipped():
            return await _events(kafka, ev.SERVICE_UPDATED.topic, service_id=service_id, accepting_referrals=False)

        published = (await wait_for(flipped, what="service.updated with accepting_referrals false"))[0]
        assert "expired" in published["not_accepting_reason"]
        assert published["version"] == 2
        # The flip is published once, not at every sweep.
        assert await sweeps.safeguarding_sweep(app.state.runtime, clock.now) == []
        assert len(await flipped()) == 1
        oruk = (await client.get(f"/services/{service_id}")).json()
        assert oruk["x_socialrx"]["accepting_referrals"] is False


def _created(referral_id: str, org: str, service_id: str, at: datetime) -> ev.ReferralCreated:
    return ev.ReferralCreated(
        referral_id=referral_id,
        pcn_id="U12345",
        practice_id="B82005",
        link_worker_id="lw-1",
        organisation_id=org,
        service_id=service_id,
        needs=["loneliness"],
        person_ref="a" * 64,
        age_band="65-74",
        postcode_district="LS1",
        consent_to_share=True,
        created_at=at,
    )


async def test_referral_unanswered_for_14_days_is_declined_no_response(kafka, postgres, jwt_secret, kit) -> None:
    referred_at = datetime.now(timezone.utc).replace(microsecond=0)
    clock = FakeClock(referred_at)
    org, service_id, referral_id = (
        "org-" + uuid.uuid4().hex[:6],
        "svc-" + uuid.uuid4().hex[:6],
        "r-" + uuid.uuid4().hex[:8],
    )
    async with running_service(
        partial(build, clock=clock),
        Settings,
        database_url=postgres.new_database("dir"),
        kafka=kafka.bootstrap_servers,
        jwt_secret=jwt_secret,
        auto_decline_sweep_interval_s=0.2,
    ) as (app, client):
        charity = auth(jwt_secret, "charity", organisation_id=org)
        await kit.publish(
            kafka.bootstrap_servers, ev.REFERRAL_CREATED, _created(referral_id, org, service_id, referred_at)
        )

        async def in_inbox():
            return (await client.get("/inbox", headers=charity)).json()["items"]

        assert (await wait_for(in_inbox, what="referral in the inbox"))[0]["status"] == "received"
        almost = referred_at + timedelta(days=14) - timedelta(minutes=1)
        # (Referrals other tests left on the shared topic may be older: only ours is asserted.)
        assert referral_id not in await sweeps.auto_decline_sweep(app.state.runtime, almost)

        clock.now = referred_at + timedelta(days=14)

        async def declined():
            return await _events(kafka, ev.REFERRAL_DECLINED.topic, referral_id=referral_id)

        event = (await wait_for(declined, what="referral.declined no_response"))[0]
        assert event["reason"] == "no_response" and event["organisation_id"] == org
        assert datetime.fromisoformat(event["declined_at"]) == clock.now
        late = await client.post(f"/referrals/{referral_id}/accept", headers=charity)
        assert late.status_code == 409
        stats = (await client.get(f"/referral-stats?service_id={service_id}")).json()["items"][0]
        # One decision: too few to show (disclosure control), so no rate and no reply time either.
        assert stats["decided"] == "*" and stats["acceptance_rate"] is None and stats["median_reply_hours"] is None
        assert len(await declined()) == 1
