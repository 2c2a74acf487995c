"""Two ledger replicas handle a referral's acceptance and its outcome at the same moment (found by
`make chaos`: 35 of 3,430 fees never paid with two replicas of every service)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone

from socialrx_funding_ledger.app import Settings, build
from socialrx_harness.testing import auth, running_service
from socialrx_shared import events as ev


async def test_acceptance_and_outcome_handled_at_once_by_two_replicas_are_both_paid(kafka, postgres, jwt_secret):
    pcn, org, referral = "P" + uuid.uuid4().hex[:8].upper(), "org-" + uuid.uuid4().hex[:8], "r-" + uuid.uuid4().hex[:10]
    finance = auth(jwt_secret, "finance", pcn_id=pcn)
    async with running_service(
        build,
        Settings,
        database_url=postgres.new_database("ledger_race"),
        kafka=kafka.bootstrap_servers,
        jwt_secret=jwt_secret,
    ) as (app, client):
        runtime = app.state.runtime
        at = datetime(2026, 6, 1, 10, tzinfo=timezone.utc)
        # The ledger agrees funding only for organisations the directory registered.
        registered = ev.OrganisationRegistered(organisation_id=org, name="Race Walkers", registered_at=at)
        on_registered = runtime.consumer.handlers[ev.ORGANISATION_REGISTERED.topic]
        async with runtime.sessionmaker() as session, session.begin():
            await on_registered(
                session, ev.new_event(ev.ORGANISATION_REGISTERED, registered, source="test"), registered
            )
        agreed = await client.post(
            "/agreements",
            headers=finance,
            json={
                "organisation_id": org,
                "per_referral_pence": 5000,
                "per_outcome_pence": 12000,
                "period": "quarterly",
                "days_after_period_end": 30,
                "starts_on": "2026-04-01",
            },
        )
        assert agreed.status_code == 201, agreed.text
        on_accepted = runtime.consumer.handlers[ev.REFERRAL_ACCEPTED.topic]
        on_outcome = runtime.consumer.handlers[ev.OUTCOME_RECORDED.topic]
        accepted = ev.ReferralAccepted(
            referral_id=referral, organisation_id=org, service_id="svc", pcn_id=pcn, accepted_at=at
        )
        outcome = ev.OutcomeRecorded(
            outcome_id="o-" + referral,
            referral_id=referral,
            organisation_id=org,
            pcn_id=pcn,
            status="completed",
            sessions_attended=5,
            recorded_at=at,
        )

        async def replica_b() -> None:
            async with runtime.sessionmaker() as session, session.begin():
                await on_outcome(session, ev.new_event(ev.OUTCOME_RECORDED, outcome, source="test"), outcome)

        async with runtime.sessionmaker() as session:  # noqa: SIM117 - the comment belongs to the transaction
            async with session.begin():  # replica A: the acceptance, not yet committed ...
                await on_accepted(session, ev.new_event(ev.REFERRAL_ACCEPTED, accepted, source="test"), accepted)
                b = asyncio.create_task(replica_b())  # ... while replica B handles the outcome
                await asyncio.sleep(1.0)
        await asyncio.wait_for(b, timeout=30)

        paid = (await client.get(f"/payments?organisation_id={org}", headers=finance)).json()
        assert sorted(p["basis"] for p in paid["items"]) == ["outcome_recorded", "referral_accepted"]
