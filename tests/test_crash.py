"""A consumer killed (SIGKILL) mid-stream and restarted handles every referral exactly once."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone

import httpx
from aiokafka import AIOKafkaProducer
from support import PCN

from socialrx_harness.platform import DEV_PERSON_REF_KEY, ServiceProcess, service_env
from socialrx_harness.procs import free_port
from socialrx_harness.testing import auth, events_on_topic, publish_event, wait_for
from socialrx_shared import events as ev

REFERRALS = 1500
FEE_PENCE = 2500


def _ledger_process(kafka, postgres, jwt_secret: str, log_dir) -> ServiceProcess:
    port = free_port()
    env = service_env(
        "funding-ledger",
        port=port,
        kafka=kafka.bootstrap_servers,
        database_url=postgres.new_database("crash_ledger"),
        jwt_secret=jwt_secret,
        person_ref_key=DEV_PERSON_REF_KEY,
        group_prefix="crash-" + uuid.uuid4().hex[:6],
    )
    return ServiceProcess("funding-ledger", port, env, log_dir / "funding-ledger-crash.log")


async def _publish_acceptances(bootstrap: str, organisation_id: str) -> list[str]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=20)
    await producer.start()
    referral_ids = [f"crash-{uuid.uuid4().hex[:12]}" for _ in range(REFERRALS)]
    try:
        sends = []
        for referral_id in referral_ids:
            event = ev.new_event(
                ev.REFERRAL_ACCEPTED,
                ev.ReferralAccepted(
                    referral_id=referral_id,
                    organisation_id=organisation_id,
                    service_id="svc-crash",
                    pcn_id=PCN,
                    accepted_at=datetime(2026, 10, 5, 12, tzinfo=timezone.utc),
                ),
                source="directory",
            )
            sends.append(await producer.send(ev.REFERRAL_ACCEPTED.topic, event.to_bytes(), key=referral_id.encode()))
        await asyncio.gather(*sends)
    finally:
        await producer.stop()
    return referral_ids


async def _count(client: httpx.AsyncClient, url: str, headers: dict) -> int:
    answer = await client.get(url, headers=headers)
    return answer.json()["total"] if answer.status_code == 200 else -1


async def test_ledger_killed_mid_stream_handles_each_referral_once(kafka, postgres, jwt_secret, tmp_path) -> None:
    ledger = _ledger_process(kafka, postgres, jwt_secret, tmp_path)
    ledger.start()
    try:
        ledger.wait_ready()
        organisation_id = "org-crash-" + uuid.uuid4().hex[:6]
        finance = auth(jwt_secret, "finance", pcn_id=PCN)
        payments_url = f"{ledger.url}/payments?organisation_id={organisation_id}&per_page=1"
        await publish_event(
            kafka.bootstrap_servers,
            ev.ORGANISATION_REGISTERED,
            ev.OrganisationRegistered(
                organisation_id=organisation_id, name="Crash test neighbours", registered_at=datetime.now(timezone.utc)
            ),
        )
        async with httpx.AsyncClient(timeout=10) as client:

            async def agreed():  # once the ledger has read the registration
                answer = await client.post(
                    f"{ledger.url}/agreements",
                    headers=finance,
                    json={
                        "organisation_id": organisation_id,
                        "per_referral_pence": FEE_PENCE,
                        "period": "monthly",
                        "days_after_period_end": 14,
                        "starts_on": "2026-04-01",
                    },
                )
                return None if "no organisation with id" in answer.text else answer

            agreement = await wait_for(agreed, what="the ledger to know the organisation")
            assert agreement.status_code == 201, agreement.text
            referral_ids = await _publish_acceptances(kafka.bootstrap_servers, organisation_id)

            async def part_way() -> bool:
                return 0 < await _count(client, payments_url, finance) < REFERRALS

            await wait_for(part_way, interval_s=0.02, what="the ledger part way through the stream")
            ledger.kill()  # SIGKILL: no graceful shutdown, offsets and outbox wherever they were
            ledger.start()
            ledger.wait_ready()

            async def all_handled() -> bool:
                return await _count(client, payments_url, finance) >= REFERRALS

            await wait_for(all_handled, timeout_s=300, interval_s=0.5, what="catch-up after the crash")
            await asyncio.sleep(2)  # anything handled twice would show up now
            assert await _count(client, payments_url, finance) == REFERRALS
            listed = (
                await client.get(
                    f"{ledger.url}/payments?organisation_id={organisation_id}&per_page=1000&page=1", headers=finance
                )
            ).json()["items"]
            listed += (
                await client.get(
                    f"{ledger.url}/payments?organisation_id={organisation_id}&per_page=1000&page=2", headers=finance
                )
            ).json()["items"]
            assert sorted(p["referral_id"] for p in listed) == sorted(referral_ids)
            assert {p["amount_pence"] for p in listed} == {FEE_PENCE}
            balance = (await client.get(f"{ledger.url}/trial-balance", headers=finance)).json()
            assert balance["debits_pence"] == balance["credits_pence"] == REFERRALS * FEE_PENCE

        async def all_published():
            due = await events_on_topic(kafka.bootstrap_servers, ev.PAYMENT_DUE.topic, organisation_id=organisation_id)
            return due if len({e.data["payment_id"] for e in due}) == REFERRALS else None

        # The relay may publish a row again after a crash (same event id); never a second payment.
        due = await wait_for(all_published, timeout_s=60, what="every payment.due published")
        assert len({e.data["referral_id"] for e in due}) == REFERRALS
        assert len({e.id for e in due}) == REFERRALS
    finally:
        ledger.stop()
