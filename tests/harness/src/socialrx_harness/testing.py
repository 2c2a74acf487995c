"""Helpers for tests: run one service in-process on the real broker and database, mint tokens,
wait for eventual consistency, read a topic; or run a service's event handlers on the real database
inside a transaction that is rolled back (`handler_bench`: rules, fast, no Kafka)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from socialrx_shared.auth import mint_token
from socialrx_shared.db import run_migrations
from socialrx_shared.events import Envelope, EventSpec, Strict, new_event

from .platform import DEV_PERSON_REF_KEY

T = TypeVar("T")


@asynccontextmanager
async def running_service(
    build: Callable[..., FastAPI],
    settings_cls: type,
    *,
    database_url: str,
    kafka: str,
    jwt_secret: str,
    **settings: Any,
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """Start a service's app (migrations, consumers, relay) in this event loop and give a client to it."""
    env_free = dict(
        database_url=database_url,
        kafka_bootstrap_servers=kafka,
        jwt_secret=jwt_secret,
        consumer_group_prefix="test-" + uuid.uuid4().hex[:8],
        outbox_poll_interval_s=0.2,
    )
    fields = settings_cls.model_fields
    if "person_ref_key" in fields and "person_ref_key" not in settings:
        settings["person_ref_key"] = DEV_PERSON_REF_KEY
    app = build(settings_cls(**{**env_free, **settings}))
    async with app.router.lifespan_context(app):
        runtime = app.state.runtime
        await wait_for(lambda: _ready(runtime), timeout_s=60, what="service connected to Kafka")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            yield app, client


@dataclass
class HandlerBench:
    """A service's event handlers and one session, all inside a transaction rolled back at the end.

    `deliver` calls the handler registered for the event's topic as the consumer would (the inbox and
    the offset are the consumer's, tested through Kafka and by `shared/tests/test_outbox_inbox_contract.py`);
    `session` reads and seeds the service's tables; `staged` reads the events the handlers staged."""

    runtime: Any
    session: AsyncSession

    async def deliver(self, spec: EventSpec, data: Strict) -> Envelope:
        envelope = new_event(spec, data, source="test")
        await self.runtime.consumer.handlers[spec.topic](self.session, envelope, data)
        return envelope

    async def staged(self, spec: EventSpec) -> list[Envelope]:
        outbox = self.runtime.outbox
        query = select(outbox.c.value).where(outbox.c.topic == spec.topic).order_by(outbox.c.id)
        return [Envelope.model_validate_json(value) for value in (await self.session.execute(query)).scalars()]


@asynccontextmanager
async def handler_bench(
    build: Callable[..., FastAPI], settings_cls: type, *, database_url: str, jwt_secret: str, **settings: Any
) -> AsyncIterator[HandlerBench]:
    """The service built (handlers registered, nothing started: no Kafka, no background jobs), its
    database migrated, and a session whose every change, commits included, is rolled back at the end."""
    app = build(
        settings_cls(
            database_url=database_url, kafka_bootstrap_servers="127.0.0.1:9", jwt_secret=jwt_secret, **settings
        )
    )
    runtime = app.state.runtime
    await run_migrations(runtime.migrations_dir, database_url)  # a no-op once the database is at head
    try:
        async with runtime.engine.connect() as connection:
            outer = await connection.begin()
            # A commit inside (a handler's own savepoint) releases a savepoint, never the outer transaction.
            session = AsyncSession(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
            try:
                yield HandlerBench(runtime, session)
            finally:
                await session.close()
                await outer.rollback()
    finally:
        await runtime.engine.dispose()


async def _ready(runtime: Any) -> bool:
    return runtime.kafka_connected


class ConsumedRecord:
    """A record as aiokafka hands it to a consumer (only the fields `EventConsumer` reads), to feed
    `consumer.handle_batch` straight: what a replica does with a batch, without the broker's timing."""

    def __init__(self, topic: str, value: bytes, offset: int = 0) -> None:
        self.topic, self.value, self.key, self.partition, self.offset = topic, value, b"k", 0, offset
        self.headers: list = []

    @classmethod
    def of(cls, spec: EventSpec, data: Strict, offset: int = 0) -> ConsumedRecord:
        return cls(spec.topic, new_event(spec, data, source="test").to_bytes(), offset)


@contextmanager
def failing_on_call(obj: Any, name: str, call: int, error: Exception) -> Iterator[None]:
    """Inside the block, the async method `obj.name` raises `error` on its `call`-th call and runs as
    itself otherwise: a fault part-way through a run (the database lost between two chunks)."""
    real, calls = getattr(obj, name), 0

    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == call:
            raise error
        return await real(*args, **kwargs)

    setattr(obj, name, wrapped)
    try:
        yield
    finally:
        setattr(obj, name, real)


def auth(secret: str, role: str, **claims: str) -> dict[str, str]:
    sub = claims.pop("sub", f"{role}-{uuid.uuid4().hex[:6]}")
    return {"Authorization": "Bearer " + mint_token(secret, sub=sub, role=role, **claims)}


async def wait_for(
    check: Callable[[], Awaitable[T] | T], *, timeout_s: float = 30.0, interval_s: float = 0.1, what: str = "condition"
) -> T:
    """Poll `check` until it returns something truthy (events travel asynchronously)."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        last = result
        await asyncio.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last value: {last!r}")


async def read_topic(bootstrap: str, topic: str, *, timeout_s: float = 5.0) -> list[Any]:
    """Every record currently on `topic`, from offset 0, without joining a consumer group."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or set())]
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or set())]
        if not partitions:
            return []  # no such topic (yet): nothing on it
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s

        async def behind() -> bool:
            for tp in partitions:
                if await consumer.position(tp) < end[tp]:
                    return True
            return False

        while await behind() and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for items in batch.values():
                records.extend(items)
        return records
    finally:
        await consumer.stop()


async def publish_raw(
    bootstrap: str, topic: str, value: bytes, key: bytes | None = None, headers: list[tuple[str, bytes]] | None = None
) -> None:
    """Put bytes on a topic as a producer would (acks=all), e.g. a poison message or a redelivery."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


async def publish_event(bootstrap: str, spec: Any, data: Any, envelope: Any = None) -> Any:
    """Publish an event (a new envelope, or `envelope` again: a redelivery with the same id)."""
    from socialrx_shared.events import new_event

    envelope = envelope or new_event(spec, data, source="test")
    await publish_raw(bootstrap, spec.topic, envelope.to_bytes(), envelope.subject.encode())
    return envelope


async def events_with_records(bootstrap: str, topic: str, **match: Any) -> list[tuple[Any, Any]]:
    """(envelope, record) of the valid events on `topic` whose data matches `match`; poison left
    on the shared topics by other tests is skipped."""
    import json

    from socialrx_shared.events import Envelope

    found = []
    for record in await read_topic(bootstrap, topic, timeout_s=15):
        try:
            envelope = Envelope.model_validate(json.loads(record.value))
        except Exception:
            continue
        if all(envelope.data.get(k) == v for k, v in match.items()):
            found.append((envelope, record))
    return found


async def events_on_topic(bootstrap: str, topic: str, **match: Any) -> list[Any]:
    """The valid envelopes on `topic` whose data matches `match`."""
    return [envelope for envelope, _ in await events_with_records(bootstrap, topic, **match)]
