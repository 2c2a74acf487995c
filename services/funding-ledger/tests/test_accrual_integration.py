"""The ledger accrues from events on the real broker, in any order, once."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from socialrx_funding_ledger.app import Settings, build
from socialrx_harness.testing import auth, publish_event, running_service, wait_for
from socialrx_shared import events as ev

from .conftest import post_once_known


async def _register(kafka, organisation_id: str) -> None:
    await publish_event(
        kafka.bootstrap_servers,
        ev.ORGANISATION_REGISTERED,
        ev.OrganisationRegistered(
            organisation_id=organisation_id, name="Test organisation", registered_at=datetime.now(timezone.utc)
        ),
    )


async def test_outcome_before_acceptance_posts_the_same_as_in_order(kafka, postgres, jwt_secret) -> None:
    url = postgres.new_database("ledger")
    org = "org-" + uuid.uuid4().hex[:6]
    finance = auth(jwt_secret, "finance", pcn_id="U12345")
    async with running_service(
        build, Settings, database_url=url, kafka=kafka.bootstrap_servers, jwt_secret=jwt_secret
    ) as (_app, client):
        await _register(kafka, org)
        created = await post_once_known(
            client,
            "/agreements",
            finance,
            {
                "organisation_id": org,
                "per_referral_pence": 5000,
                "per_outcome_pence": 12000,
                "period": "quarterly",
                "days_after_period_end": 30,
                "starts_on": "2026-04-01",
            },
        )
        assert created.status_code == 201, created.text
        referral = "r-" + uuid.uuid4().hex[:8]
        at = datetime(2026, 12, 15, 9, tzinfo=timezone.utc)
        outcome = ev.OutcomeRecorded(
            outcome_id="o-" + referral,
            referral_id=referral,
            organisation_id=org,
            pcn_id="U12345",
            status="completed",
            sessions_attended=5,
            recorded_at=at,
        )
        await publish_event(kafka.bootstrap_servers, ev.OUTCOME_RECORDED, outcome)
        accepted = ev.ReferralAccepted(
            referral_id=referral, organisation_id=org, service_id="svc", pcn_id="U12345", accepted_at=at
        )
        envelope = await publish_event(kafka.bootstrap_servers, ev.REFERRAL_ACCEPTED, accepted)
        await publish_event(kafka.bootstrap_servers, ev.REFERRAL_ACCEPTED, accepted, envelope)  # redelivered

        async def two_payments():
            answer = (await client.get(f"/payments?organisation_id={org}", headers=finance)).json()
            return answer if answer["total"] == 2 else None

        payments = await wait_for(two_payments, what="both payments")
        by_basis = {p["basis"]: p for p in payments["items"]}
        assert by_basis["referral_accepted"]["amount_pence"] == 5000
        assert by_basis["outcome_recorded"]["amount_pence"] == 12000
        assert {p["due_date"] for p in payments["items"]} == {"2027-01-30"}
        balance = (await client.get("/trial-balance", headers=finance)).json()
        assert balance["debits_pence"] == balance["credits_pence"] == 17000


async def test_a_correction_of_a_waiting_outcome_replaces_it(kafka, postgres, jwt_secret) -> None:
    url = postgres.new_database("ledger")
    org = "org-" + uuid.uuid4().hex[:6]
    finance = auth(jwt_secret, "finance", pcn_id="U12345")
    async with running_service(
        build, Settings, database_url=url, kafka=kafka.bootstrap_servers, jwt_secret=jwt_secret
    ) as (_app, client):
        await _register(kafka, org)
        created = await post_once_known(
            client,
            "/agreements",
            finance,
            {"organisation_id": org, "per_outcome_pence": 9000, "starts_on": "2026-04-01"},
        )
        assert created.status_code == 201, created.text
        referral = "r-" + uuid.uuid4().hex[:8]
        at = datetime(2026, 12, 15, 9, tzinfo=timezone.utc)
        engaged = ev.OutcomeRecorded(
            outcome_id="o-" + referral,
            referral_id=referral,
            organisation_id=org,
            pcn_id="U12345",
            status="engaged",
            sessions_attended=1,
            recorded_at=at,
        )
        # Both seen before the acceptance: the correction (completed, revision 2) replaces the waiting one,
        # and a late redelivery of revision 1 does not undo it.
        first = await publish_event(kafka.bootstrap_servers, ev.OUTCOME_RECORDED, engaged)
        corrected = engaged.model_copy(update={"status": "completed", "revision": 2, "corrected_at": at})
        await publish_event(kafka.bootstrap_servers, ev.OUTCOME_RECORDED, corrected)
        await publish_event(kafka.bootstrap_servers, ev.OUTCOME_RECORDED, engaged)
        await publish_event(
            kafka.bootstrap_servers,
            ev.REFERRAL_ACCEPTED,
            ev.ReferralAccepted(
                referral_id=referral, organisation_id=org, service_id="svc", pcn_id="U12345", accepted_at=at
            ),
        )

        async def outcome_fee():
            answer = (await client.get(f"/payments?organisation_id={org}", headers=finance)).json()
            return answer["items"] if answer["total"] == 1 else None

        [payment] = await wait_for(outcome_fee, what="the outcome fee of the corrected outcome")
        assert payment["basis"] == "outcome_recorded" and payment["amount_pence"] == 9000
        assert first.id  # the first revision was delivered too
