"""Helpers for tests: run one service in-process on the real broker and database, mint tokens,
wait for eventual consistency, read a topic."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi import FastAPI

from socialrx_shared.auth import mint_token

from .platform import DEV_PERSON_REF_KEY

T = TypeVar("T")


@asynccontextmanager
async def running_service(build: Callable[..., FastAPI], settings_cls: type, *, database_url: str, kafka: str,
                          jwt_secret: str, **settings: Any) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """Start a service's app (migrations, consumers, relay) in this event loop and give a client to it."""
    env_free = dict(
        database_url=database_url, kafka_bootstrap_servers=kafka, jwt_secret=jwt_secret,
        consumer_group_prefix="test-" + uuid.uuid4().hex[:8], outbox_poll_interval_s=0.2,
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


async def _ready(runtime: Any) -> bool:
    return runtime.kafka_connected


def auth(secret: str, role: str, **claims: str) -> dict[str, str]:
    sub = claims.pop("sub", f"{role}-{uuid.uuid4().hex[:6]}")
    return {"Authorization": "Bearer " + mint_token(secret, sub=sub, role=role, **claims)}


async def wait_for(check: Callable[[], Awaitable[T] | T], *, timeout_s: float = 30.0, interval_s: float = 0.1,
                   what: str = "condition") -> T:
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
            await consumer._client.force_metadata_update()  # noqa: SLF001 - a fresh topic's metadata
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


async def publish_raw(bootstrap: str, topic: str, value: bytes, key: bytes | None = None,
                      headers: list[tuple[str, bytes]] | None = None) -> None:
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
