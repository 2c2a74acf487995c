"""Two ledger replicas applying batches at the same time never deadlock (found by `make chaos`: 109
deadlocks in 15 minutes with two replicas, each rolling a batch of up to 200 events back to be
redone, so the ledger fell minutes behind after every fault).

A batch locks, event by event, its referrals (the per-referral lock), the organisation's projection
rows and a capped agreement. Two batches holding some of these and wanting the other's formed a
cycle. The consumer now takes one lock per batch first (`EventConsumer.batch_lock`)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone

from sqlalchemy import event

from socialrx_funding_ledger.app import Settings, build
from socialrx_harness.testing import auth, running_service
from socialrx_shared import events as ev


class _Record:
    """A consumed record as aiokafka hands it over (only the fields the consumer reads)."""

    def __init__(self, topic: str, value: bytes, offset: int) -> None:
        self.topic, self.value, self.key, self.partition, self.offset = topic, value, b"k", 0, offset
        self.headers: list = []


def _record(spec: ev.EventSpec, data: ev.Strict, offset: int) -> _Record:
    return _Record(spec.topic, ev.new_event(spec, data, source="test").to_bytes(), offset)


async def test_two_replicas_batches_for_one_organisation_never_deadlock_and_pay_every_fee_once(
    kafka, postgres, jwt_secret
) -> None:
    pcn, org = "P" + uuid.uuid4().hex[:8].upper(), "org-" + uuid.uuid4().hex[:8]
    finance = auth(jwt_secret, "finance", pcn_id=pcn)
    async with running_service(
        build,
        Settings,
        database_url=postgres.new_database("ledger_deadlock"),
        kafka=kafka.bootstrap_servers,
        jwt_secret=jwt_secret,
    ) as (app, client):
        runtime = app.state.runtime
        deadlocks: list[str] = []

        def on_error(context) -> None:  # what PostgreSQL answered, seen by the engine itself
            sqlstate = getattr(context.original_exception, "sqlstate", None) or getattr(
                getattr(context.original_exception, "__cause__", None), "sqlstate", None
            )
            if sqlstate == "40P01":
                deadlocks.append(sqlstate)

        event.listen(runtime.engine.sync_engine, "handle_error", on_error)
        at = datetime(2026, 6, 1, 10, tzinfo=timezone.utc)
        registered = ev.OrganisationRegistered(organisation_id=org, name="Busy Walkers", registered_at=at)
        await runtime.consumer.handle_batch([_record(ev.ORGANISATION_REGISTERED, registered, 0)])
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

        def accepted(referral: str) -> ev.ReferralAccepted:
            return ev.ReferralAccepted(
                referral_id=referral, organisation_id=org, service_id="svc", pcn_id=pcn, accepted_at=at
            )

        def outcome(referral: str) -> ev.OutcomeRecorded:
            return ev.OutcomeRecorded(
                outcome_id="o-" + referral,
                referral_id=referral,
                organisation_id=org,
                pcn_id=pcn,
                status="completed",
                sessions_attended=5,
                recorded_at=at,
            )

        referrals: list[str] = []
        for round_ in range(4):
            ones = [f"r-{round_}-a{i}-{uuid.uuid4().hex[:6]}" for i in range(25)]
            others = [f"r-{round_}-b{i}-{uuid.uuid4().hex[:6]}" for i in range(25)]
            referrals += ones + others
            # Replica A accepts the ones while it records the others' outcomes; replica B the reverse:
            # each batch soon wants a referral (and the organisation's rows) the other holds.
            batch_a = [
                rec
                for i, (one, other) in enumerate(zip(ones, others, strict=True))
                for rec in (
                    _record(ev.REFERRAL_ACCEPTED, accepted(one), 2 * i),
                    _record(ev.OUTCOME_RECORDED, outcome(other), 2 * i + 1),
                )
            ]
            batch_b = [
                rec
                for i, (one, other) in enumerate(zip(ones, others, strict=True))
                for rec in (
                    _record(ev.REFERRAL_ACCEPTED, accepted(other), 2 * i),
                    _record(ev.OUTCOME_RECORDED, outcome(one), 2 * i + 1),
                )
            ]
            await asyncio.wait_for(
                asyncio.gather(runtime.consumer.handle_batch(batch_a), runtime.consumer.handle_batch(batch_b)),
                timeout=120,
            )

        assert deadlocks == []
        paid = (await client.get(f"/payments?organisation_id={org}&per_page=1000", headers=finance)).json()
        by_referral: dict[str, list[str]] = {}
        for payment in paid["items"]:
            by_referral.setdefault(payment["referral_id"], []).append(payment["basis"])
        assert {r: sorted(b) for r, b in by_referral.items()} == {
            r: ["outcome_recorded", "referral_accepted"] for r in referrals
        }
