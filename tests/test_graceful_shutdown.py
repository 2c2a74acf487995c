"""SIGTERM mid-stream: requests in flight finish, the outbox drains, then the process exits."""

from __future__ import annotations

import asyncio
import signal
import uuid
from datetime import date, datetime, timezone

import asyncpg
import httpx
from support import PCN, PERSON, publish_raw, referral_body

from socialrx_harness.platform import DEV_PERSON_REF_KEY, ServiceProcess, service_env
from socialrx_harness.procs import free_port
from socialrx_harness.testing import auth, events_on_topic, wait_for
from socialrx_shared import events as ev


async def test_sigterm_drains_the_outbox_before_exit(kafka, postgres, jwt_secret, tmp_path) -> None:
    database_url = postgres.new_database("graceful")
    port = free_port()
    intake = ServiceProcess(
        "referral-intake",
        port,
        service_env(
            "referral-intake",
            port=port,
            kafka=kafka.bootstrap_servers,
            database_url=database_url,
            jwt_secret=jwt_secret,
            person_ref_key=DEV_PERSON_REF_KEY,
            group_prefix="graceful-" + uuid.uuid4().hex[:6],
        ),
        tmp_path / "referral-intake.log",
    )
    intake.start()
    try:
        intake.wait_ready()
        service_id = "svc-graceful-" + uuid.uuid4().hex[:6]
        update = ev.new_event(
            ev.SERVICE_UPDATED,
            ev.ServiceUpdated(
                service_id=service_id,
                organisation_id="org-graceful",
                name="Graceful",
                status="active",
                needs=["loneliness"],
                capacity_available=500,
                safeguarding_policy_valid_until=date(2030, 1, 1),
                accepting_referrals=True,
                version=1,
                updated_at=datetime.now(timezone.utc),
            ),
            source="directory",
        )
        await publish_raw(kafka.bootstrap_servers, ev.SERVICE_UPDATED.topic, update.to_bytes(), service_id.encode())
        link_worker = auth(jwt_secret, "link_worker", pcn_id=PCN, practice_id="B82005")
        created: list[str] = []
        async with httpx.AsyncClient(timeout=10) as client:

            async def known():
                answer = await client.post(
                    intake.url + "/referrals", headers=link_worker, json=referral_body(service_id, person=PERSON)
                )
                if answer.status_code == 201:
                    created.append(answer.json()["id"])
                return answer.status_code == 201

            await wait_for(known, what="the service known to intake")

            async def refer_until_refused() -> None:
                while True:
                    try:
                        answer = await client.post(
                            intake.url + "/referrals",
                            headers=link_worker,
                            json=referral_body(service_id, person=PERSON),
                        )
                    except httpx.HTTPError:
                        return  # the server has closed: no answer means no referral was promised
                    if answer.status_code != 201:
                        return
                    created.append(answer.json()["id"])

            senders = [asyncio.create_task(refer_until_refused()) for _ in range(8)]
            await wait_for(lambda: len(created) >= 60, what="a stream of referrals")
            await asyncio.to_thread(intake.stop)  # SIGTERM, then wait for the exit
            await asyncio.gather(*senders)
        # uvicorn finishes its shutdown, then re-raises SIGTERM so the exit status tells what stopped it.
        assert intake.proc.returncode in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in intake.log_path.read_text()
        conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            unsent = await conn.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            stored = {r["id"] for r in await conn.fetch("SELECT id FROM referrals WHERE service_id = $1", service_id)}
        finally:
            await conn.close()
        assert unsent == 0  # the relay drained before the process ended
        assert set(created) <= stored  # every 201 is a stored referral
        published = await events_on_topic(kafka.bootstrap_servers, ev.REFERRAL_CREATED.topic, service_id=service_id)
        assert {e.data["referral_id"] for e in published} == stored  # and every stored one was published
    finally:
        intake.stop()
