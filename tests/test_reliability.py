"""The outbox and the inbox on the real broker and database: nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date, datetime, timezone

import pytest
from sqlalchemy import func, select
from support import PCN, publish_raw, referral_body

from socialrx_harness.testing import auth, events_on_topic, running_service, wait_for
from socialrx_referral_intake.app import Settings, build
from socialrx_shared import events as ev


def _service_update(service_id: str, version: int = 1) -> ev.ServiceUpdated:
    return ev.ServiceUpdated(
        service_id=service_id,
        organisation_id="org-rel",
        name="Reliable group",
        status="active",
        needs=["loneliness"],
        capacity_available=3,
        safeguarding_policy_valid_until=date(2030, 1, 1),
        accepting_referrals=True,
        version=version,
        updated_at=datetime.now(timezone.utc),
    )


async def test_a_rolled_back_change_publishes_nothing_and_a_committed_one_is_published(
    kafka, postgres, jwt_secret
) -> None:
    async with running_service(
        build, Settings, database_url=postgres.new_database("rel"), kafka=kafka.bootstrap_servers, jwt_secret=jwt_secret
    ) as (app, _client):
        rt = app.state.runtime
        rolled_back, committed = "svc-rb-" + uuid.uuid4().hex[:6], "svc-ok-" + uuid.uuid4().hex[:6]
        with pytest.raises(RuntimeError):
            async with rt.transaction() as session:
                await rt.stage(session, ev.SERVICE_UPDATED, _service_update(rolled_back))
                raise RuntimeError("the change failed after staging its event")
        async with rt.transaction() as session:
            await rt.stage(session, ev.SERVICE_UPDATED, _service_update(committed))

        await wait_for(
            lambda: events_on_topic(kafka.bootstrap_servers, ev.SERVICE_UPDATED.topic, service_id=committed),
            what="the committed event published",
        )
        assert await events_on_topic(kafka.bootstrap_servers, ev.SERVICE_UPDATED.topic, service_id=rolled_back) == []
        async with rt.sessionmaker() as session:
            unsent = await session.scalar(
                select(func.count()).select_from(rt.outbox).where(rt.outbox.c.sent_at.is_(None))
            )
        assert unsent == 0


async def test_events_committed_while_the_relay_was_down_leave_once_it_is_back(kafka, postgres, jwt_secret) -> None:
    async with running_service(
        build, Settings, database_url=postgres.new_database("rel"), kafka=kafka.bootstrap_servers, jwt_secret=jwt_secret
    ) as (app, _client):
        rt = app.state.runtime
        await rt.relay.stop()  # as if the process had died right after the commit
        service_id = "svc-late-" + uuid.uuid4().hex[:6]
        async with rt.transaction() as session:
            await rt.stage(session, ev.SERVICE_UPDATED, _service_update(service_id))
        await asyncio.sleep(1)
        assert await events_on_topic(kafka.bootstrap_servers, ev.SERVICE_UPDATED.topic, service_id=service_id) == []
        rt.relay.__init__(rt.name, rt.sessionmaker, rt.outbox, poll_interval_s=0.2)  # a fresh relay, as on restart
        rt.relay.start(rt.producer)
        found = await wait_for(
            lambda: events_on_topic(kafka.bootstrap_servers, ev.SERVICE_UPDATED.topic, service_id=service_id),
            what="the event after restart",
        )
        assert len(found) == 1


async def test_a_message_consumed_while_the_database_is_down_is_retried_not_skipped(
    kafka, own_postgres, jwt_secret
) -> None:
    link_worker = auth(jwt_secret, "link_worker", pcn_id=PCN, practice_id="B82005")
    async with running_service(
        build,
        Settings,
        database_url=own_postgres.admin_url("own"),
        kafka=kafka.bootstrap_servers,
        jwt_secret=jwt_secret,
    ) as (_app, client):
        service_id = "svc-down-" + uuid.uuid4().hex[:6]
        own_postgres.stop()
        event = ev.new_event(ev.SERVICE_UPDATED, _service_update(service_id), source="directory")
        await publish_raw(kafka.bootstrap_servers, ev.SERVICE_UPDATED.topic, event.to_bytes(), service_id.encode())
        await asyncio.sleep(3)  # the consumer meets the outage and keeps retrying
        own_postgres.start()

        async def referral_accepted_by_intake():
            answer = await client.post("/referrals", headers=link_worker, json=referral_body(service_id))
            return answer if answer.status_code == 201 else None

        await wait_for(referral_accepted_by_intake, timeout_s=60, what="the service.updated applied after recovery")
        letters = await events_on_topic(kafka.bootstrap_servers, ev.SERVICE_UPDATED.dlq_topic, service_id=service_id)
        assert letters == []  # a transient fault is never a poison message


class _Record:
    """A consumed record as aiokafka hands it over (only the fields the consumer reads)."""

    def __init__(self, topic: str, value: bytes, offset: int) -> None:
        self.topic, self.value, self.key, self.partition, self.offset = topic, value, b"k", 0, offset
        self.headers: list = []


async def test_one_failing_record_in_a_batch_is_dead_lettered_and_the_rest_applied(kafka, postgres, jwt_secret) -> None:
    async with running_service(
        build, Settings, database_url=postgres.new_database("rel"), kafka=kafka.bootstrap_servers, jwt_secret=jwt_secret
    ) as (app, _client):
        rt = app.state.runtime
        topic = ev.SERVICE_UPDATED.topic
        real_handler = rt.consumer.handlers[topic]
        bad_id = "svc-bad-" + uuid.uuid4().hex[:6]

        async def failing_for_one(session, envelope, payload):
            if payload.service_id == bad_id:
                raise ValueError("a bug that only this record meets")
            await real_handler(session, envelope, payload)

        rt.consumer.handlers[topic] = failing_for_one
        ids = ["svc-a-" + uuid.uuid4().hex[:6], bad_id, "svc-b-" + uuid.uuid4().hex[:6]]
        records = [
            _Record(topic, ev.new_event(ev.SERVICE_UPDATED, _service_update(i), source="t").to_bytes(), n)
            for n, i in enumerate(ids)
        ]
        await rt.consumer.handle_batch(records)

        async with rt.sessionmaker() as session:
            from socialrx_referral_intake.store import services_view

            stored = set(
                (
                    await session.execute(select(services_view.c.service_id).where(services_view.c.service_id.in_(ids)))
                ).scalars()
            )
        assert stored == {ids[0], ids[2]}
        letters = await wait_for(lambda: _letters_for(kafka, bad_id), what="the failing record dead-lettered")
        assert "a bug that only this record meets" in dict(letters[0].headers)["dlq.error"].decode()


async def _letters_for(kafka, marker: str) -> list:
    from socialrx_harness.testing import read_topic

    return [
        r for r in await read_topic(kafka.bootstrap_servers, ev.SERVICE_UPDATED.dlq_topic) if marker.encode() in r.value
    ]
