"""The consumer under database load and a failing DLQ, on the real PostgreSQL and Kafka.

- a valid event that meets a lock timeout, a statement timeout, a serialization failure, a deadlock
  or a pool checkout timeout is retried until it applies (once), never dead-lettered;
- a record is counted and logged as dead-lettered only after the DLQ acknowledged it; a DLQ send
  that keeps failing fails the batch (its offsets stay uncommitted).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import date, datetime, timezone

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import create_async_engine

from socialrx_harness.testing import ConsumedRecord, events_on_topic, running_service, wait_for
from socialrx_referral_intake.app import Settings, build
from socialrx_referral_intake.store import services_view
from socialrx_shared import events as ev
from socialrx_shared.consumer import is_transient
from socialrx_shared.metrics import DEAD_LETTERED


def _service_update(service_id: str) -> ev.ServiceUpdated:
    return ev.ServiceUpdated(
        service_id=service_id,
        organisation_id="org-load",
        name="Busy group",
        status="active",
        needs=["loneliness"],
        capacity_available=3,
        safeguarding_policy_valid_until=date(2030, 1, 1),
        accepting_referrals=True,
        version=1,
        updated_at=datetime.now(timezone.utc),
    )


@pytest.mark.parametrize("sqlstate", ["55P03", "57014"])
async def test_postgres_load_faults_are_transient(postgres, sqlstate) -> None:
    # The error exactly as PostgreSQL, asyncpg and SQLAlchemy deliver it, raised by the server itself.
    engine = create_async_engine(postgres.new_database("transient"))
    try:
        with pytest.raises(Exception) as raised:
            async with engine.connect() as conn:
                await conn.execute(text(f"DO $$ BEGIN RAISE EXCEPTION 'load' USING ERRCODE = '{sqlstate}'; END $$"))
        assert is_transient(raised.value), type(raised.value)
    finally:
        await engine.dispose()


async def test_a_pool_checkout_timeout_is_transient(postgres) -> None:
    engine = create_async_engine(postgres.new_database("pool"), pool_size=1, max_overflow=0, pool_timeout=0.2)
    try:
        async with engine.connect():
            with pytest.raises(PoolTimeoutError) as raised:
                async with engine.connect():
                    pass
        assert is_transient(raised.value)
    finally:
        await engine.dispose()


async def test_an_event_meeting_lock_and_statement_timeouts_is_retried_applied_once_and_not_dead_lettered(
    kafka, postgres, jwt_secret
) -> None:
    url = postgres.new_database("load")
    async with running_service(
        build, Settings, database_url=url, kafka=kafka.bootstrap_servers, jwt_secret=jwt_secret
    ) as (app, _client):
        rt = app.state.runtime
        topic = ev.SERVICE_UPDATED.topic
        real_handler = rt.consumer.handlers[topic]
        service_id = "svc-load-" + uuid.uuid4().hex[:6]
        attempts: list[str] = []

        async def under_load(session, envelope, payload):
            if payload.service_id != service_id:  # the running consumer's own records (other tests' events) pass
                await real_handler(session, envelope, payload)
                return
            attempts.append("try")
            # More faults in a row than a handler bug is allowed before its record is dead-lettered.
            if len(attempts) <= 3:  # a row another transaction holds: lock_timeout (55P03)
                await session.execute(text("SET LOCAL lock_timeout = '100ms'"))
                await session.execute(text("SELECT 1 FROM inbox WHERE event_id = :id FOR UPDATE"), {"id": held_id})
            elif len(attempts) == 4:  # a query slower than statement_timeout (57014)
                await session.execute(text("SET LOCAL statement_timeout = '50ms'"))
                await session.execute(text("SELECT pg_sleep(2)"))
            await real_handler(session, envelope, payload)

        rt.consumer.handlers[topic] = under_load
        held_id = uuid.uuid4()
        other = create_async_engine(url)
        try:
            async with other.connect() as holder:
                await holder.execute(text("INSERT INTO inbox (event_id, topic) VALUES (:id, 'held')"), {"id": held_id})
                await holder.commit()
                await holder.execute(text("SELECT 1 FROM inbox WHERE event_id = :id FOR UPDATE"), {"id": held_id})
                event = ev.new_event(ev.SERVICE_UPDATED, _service_update(service_id), source="directory")
                letters_before = DEAD_LETTERED.labels(rt.name, topic)._value.get()
                await rt.consumer.handle_batch([ConsumedRecord(topic, event.to_bytes())])
                await holder.rollback()
        finally:
            await other.dispose()

        assert len(attempts) == 5
        async with rt.sessionmaker() as session:
            stored = await session.scalar(
                select(func.count()).select_from(services_view).where(services_view.c.service_id == service_id)
            )
            inbox_rows = await session.scalar(
                select(func.count()).select_from(rt.consumer.inbox).where(rt.consumer.inbox.c.event_id == event.id)
            )
        assert (stored, inbox_rows) == (1, 1)
        assert DEAD_LETTERED.labels(rt.name, topic)._value.get() == letters_before
        await asyncio.sleep(1)
        assert await events_on_topic(kafka.bootstrap_servers, ev.SERVICE_UPDATED.dlq_topic, service_id=service_id) == []


class _FlakyDlq:
    """The service's real producer behind a DLQ that fails the first `failures` sends."""

    def __init__(self, real, failures: int) -> None:
        self.real, self.failures, self.calls = real, failures, 0

    async def send_and_wait(self, *args, **kwargs):
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("the DLQ broker did not answer")
        return await self.real.send_and_wait(*args, **kwargs)


async def test_dead_letters_are_counted_only_once_acknowledged_and_a_failed_send_fails_the_batch(
    kafka, postgres, jwt_secret, monkeypatch
) -> None:
    monkeypatch.setattr("socialrx_shared.consumer.wait_exponential", lambda **_: lambda _state: 0)
    async with running_service(
        build,
        Settings,
        database_url=postgres.new_database("dlqsend"),
        kafka=kafka.bootstrap_servers,
        jwt_secret=jwt_secret,
    ) as (app, _client):
        rt = app.state.runtime
        topic = ev.SERVICE_UPDATED.topic
        counted = DEAD_LETTERED.labels(rt.name, topic)
        marker = "poison-" + uuid.uuid4().hex[:8]

        broken = _FlakyDlq(rt.producer, failures=10**6)
        rt.consumer.dlq_producer = lambda: broken
        before = counted._value.get()
        with pytest.raises(ConnectionError):
            await rt.consumer.handle_batch([ConsumedRecord(topic, f'{{"not": "{marker}"'.encode())])
        assert broken.calls > 1  # retried before giving up
        assert counted._value.get() == before  # never counted: nothing was acknowledged

        flaky = _FlakyDlq(rt.producer, failures=2)
        rt.consumer.dlq_producer = lambda: flaky
        await rt.consumer.handle_batch([ConsumedRecord(topic, f'{{"not": "{marker}"'.encode())])
        assert counted._value.get() == before + 1

        async def letters():
            from socialrx_harness.testing import read_topic

            return [
                r
                for r in await read_topic(kafka.bootstrap_servers, ev.SERVICE_UPDATED.dlq_topic)
                if marker.encode() in r.value
            ]

        assert len(await wait_for(letters, what="the dead letter on the DLQ")) == 1
