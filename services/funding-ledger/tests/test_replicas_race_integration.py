"""Two ledger replicas at work at the same moment, on the real PostgreSQL. Both cases were found by
`make chaos` with two replicas of every service:

- a referral's acceptance and its outcome handled at once by the two replicas (35 of 3,430 fees
  were never paid): both referral handlers take a per-referral advisory lock;
- two replicas' batches deadlocking on each other (109 deadlocks in 15 minutes, each rolling a batch
  of up to 200 events back to be redone, so the ledger fell minutes behind after every fault). A
  batch locks, event by event, its referrals, the organisation's projection rows and a capped
  agreement; two batches could each hold what the other wanted. Each batch now first takes one
  lock (`EventConsumer.batch_lock`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import httpx
from sqlalchemy import event

from socialrx_funding_ledger.app import Settings, build
from socialrx_harness.testing import ConsumedRecord, auth, running_service
from socialrx_shared import events as ev

AT = datetime(2026, 6, 1, 10, tzinfo=timezone.utc)


@dataclass
class Ledger:
    runtime: Any
    client: httpx.AsyncClient
    finance: dict[str, str]
    pcn: str
    org: str

    def accepted(self, referral: str) -> ev.ReferralAccepted:
        return ev.ReferralAccepted(
            referral_id=referral, organisation_id=self.org, service_id="svc", pcn_id=self.pcn, accepted_at=AT
        )

    def outcome(self, referral: str) -> ev.OutcomeRecorded:
        return ev.OutcomeRecorded(
            outcome_id="o-" + referral,
            referral_id=referral,
            organisation_id=self.org,
            pcn_id=self.pcn,
            status="completed",
            sessions_attended=5,
            recorded_at=AT,
        )

    async def fees_by_referral(self) -> dict[str, list[str]]:
        paid = await self.client.get(f"/payments?organisation_id={self.org}&per_page=1000", headers=self.finance)
        fees: dict[str, list[str]] = {}
        for payment in paid.json()["items"]:
            fees.setdefault(payment["referral_id"], []).append(payment["basis"])
        return {referral: sorted(bases) for referral, bases in fees.items()}


@asynccontextmanager
async def funded_organisation(kafka, postgres, jwt_secret, database: str) -> AsyncIterator[Ledger]:
    """A ledger with one registered organisation under an agreement paying £50 a referral, £120 an outcome."""
    pcn, org = "P" + uuid.uuid4().hex[:8].upper(), "org-" + uuid.uuid4().hex[:8]
    finance = auth(jwt_secret, "finance", pcn_id=pcn)
    async with running_service(
        build,
        Settings,
        database_url=postgres.new_database(database),
        kafka=kafka.bootstrap_servers,
        jwt_secret=jwt_secret,
    ) as (app, client):
        runtime = app.state.runtime
        # The ledger agrees funding only for organisations the directory registered.
        registered = ev.OrganisationRegistered(organisation_id=org, name="Race Walkers", registered_at=AT)
        await runtime.consumer.handle_batch([ConsumedRecord.of(ev.ORGANISATION_REGISTERED, registered)])
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
        yield Ledger(runtime, client, finance, pcn, org)


async def test_acceptance_and_outcome_handled_at_once_by_two_replicas_are_both_paid(kafka, postgres, jwt_secret):
    async with funded_organisation(kafka, postgres, jwt_secret, "ledger_race") as ledger:
        referral = "r-" + uuid.uuid4().hex[:10]
        accepted, outcome = ledger.accepted(referral), ledger.outcome(referral)
        on_accepted = ledger.runtime.consumer.handlers[ev.REFERRAL_ACCEPTED.topic]
        on_outcome = ledger.runtime.consumer.handlers[ev.OUTCOME_RECORDED.topic]

        async def replica_b() -> None:
            async with ledger.runtime.sessionmaker() as session, session.begin():
                await on_outcome(session, ev.new_event(ev.OUTCOME_RECORDED, outcome, source="test"), outcome)

        async with ledger.runtime.sessionmaker() as session:  # noqa: SIM117 - the comment belongs to the transaction
            async with session.begin():  # replica A: the acceptance, not yet committed ...
                await on_accepted(session, ev.new_event(ev.REFERRAL_ACCEPTED, accepted, source="test"), accepted)
                b = asyncio.create_task(replica_b())  # ... while replica B handles the outcome
                await asyncio.sleep(1.0)
        await asyncio.wait_for(b, timeout=30)

        assert await ledger.fees_by_referral() == {referral: ["outcome_recorded", "referral_accepted"]}


async def test_two_replicas_batches_for_one_organisation_never_deadlock_and_pay_every_fee_once(
    kafka, postgres, jwt_secret
) -> None:
    async with funded_organisation(kafka, postgres, jwt_secret, "ledger_deadlock") as ledger:
        deadlocks: list[str] = []

        def on_error(context) -> None:  # what PostgreSQL answered, as the engine saw it
            error = context.original_exception
            sqlstate = getattr(error, "sqlstate", None) or getattr(getattr(error, "__cause__", None), "sqlstate", None)
            if sqlstate == "40P01":
                deadlocks.append(sqlstate)

        event.listen(ledger.runtime.engine.sync_engine, "handle_error", on_error)

        def batch(accept: list[str], record: list[str]) -> list[ConsumedRecord]:
            """Accept some referrals while recording others' outcomes, alternately."""
            pairs = zip(accept, record, strict=True)
            return [
                ConsumedRecord.of(spec, data, offset)
                for i, (a, r) in enumerate(pairs)
                for offset, spec, data in (
                    (2 * i, ev.REFERRAL_ACCEPTED, ledger.accepted(a)),
                    (2 * i + 1, ev.OUTCOME_RECORDED, ledger.outcome(r)),
                )
            ]

        referrals: list[str] = []
        for round_ in range(4):
            ones = [f"r-{round_}-a{i}-{uuid.uuid4().hex[:6]}" for i in range(25)]
            others = [f"r-{round_}-b{i}-{uuid.uuid4().hex[:6]}" for i in range(25)]
            referrals += ones + others
            # Each replica's batch soon wants a referral (and the organisation's rows) the other holds.
            consumer = ledger.runtime.consumer
            await asyncio.wait_for(
                asyncio.gather(consumer.handle_batch(batch(ones, others)), consumer.handle_batch(batch(others, ones))),
                timeout=120,
            )

        assert deadlocks == []
        assert await ledger.fees_by_referral() == {r: ["outcome_recorded", "referral_accepted"] for r in referrals}
