"""The outbox's and the inbox's contract, one suite for every store they run on (pyeventsourcing style).

`OutboxInboxContract` holds the tests and asks its subclass for a store (a database with the outbox,
the inbox and an effects table) and for a way to make the next "mark as sent" fail, as a crash between
the broker's acknowledgement and the commit would. `TestPostgreSQL` runs them against the real
PostgreSQL the harness starts; there is no in-memory store in the project today (a fake one would
subclass the contract the same way).

What is tested is the store's side of "nothing lost, nothing twice", through the public functions only
(`outbox.stage`, `OutboxRelay.publish_batch`, `EventConsumer.on`/`handle_batch`). The broker's side is a
recording producer that acknowledges every send: a record published here is one the producer was
handed and acknowledged. Delivery through the real Kafka, with a process killed between publish and
mark, is `tests/test_crash.py`'s and `tests/test_reliability.py`'s.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

import pytest
from sqlalchemy import Column, MetaData, String, Table, Uuid, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from socialrx_shared.consumer import EventConsumer
from socialrx_shared.db import new_metadata, reliability_tables
from socialrx_shared.events import (
    ORGANISATION_REGISTERED,
    SERVICE_UPDATED,
    Envelope,
    OrganisationRegistered,
    ServiceUpdated,
)
from socialrx_shared.outbox import OutboxRelay, stage, stage_each

TOPIC = ORGANISATION_REGISTERED.topic


@dataclass(frozen=True)
class Sent:
    """One record the relay handed to the broker (and the broker acknowledged)."""

    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    partition: int = 0
    offset: int = 0


@dataclass
class RecordingProducer:
    """Stands in for the Kafka producer: keeps every send, acknowledges it at once."""

    sent: list[Sent] = field(default_factory=list)

    async def send(
        self, topic: str, *, value: bytes, key: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[None]:
        self.sent.append(Sent(topic, key, value, headers, offset=len(self.sent)))
        acknowledged: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        acknowledged.set_result(None)
        return acknowledged

    async def send_and_wait(self, topic: str, *, value: bytes, key: bytes, headers: list[tuple[str, bytes]]) -> None:
        await self.send(topic, value=value, key=key, headers=headers)


@dataclass
class Store:
    sessionmaker: async_sessionmaker[AsyncSession]
    outbox: Table
    inbox: Table
    effects: Table


def _tables() -> tuple[MetaData, Table, Table, Table]:
    metadata = new_metadata()
    outbox, inbox = reliability_tables(metadata)
    # What a handler changes: one row per organisation it heard of (no unique key, so a second
    # application would show as a second row).
    effects = Table(
        "effects",
        metadata,
        Column("event_id", Uuid, nullable=False),
        Column("organisation_id", String(64), nullable=False),
    )
    return metadata, outbox, inbox, effects


def _event(organisation_id: str) -> OrganisationRegistered:
    return OrganisationRegistered(
        organisation_id=organisation_id, name=f"Org {organisation_id}", registered_at=datetime.now(timezone.utc)
    )


def _service(organisation_id: str) -> ServiceUpdated:
    return ServiceUpdated(
        service_id=f"svc-{organisation_id}",
        organisation_id=organisation_id,
        name="Walks",
        status="active",
        needs=["loneliness"],
        capacity_available=3,
        safeguarding_policy_valid_until=date(2030, 1, 1),
        accepting_referrals=True,
        version=1,
        updated_at=datetime.now(timezone.utc),
    )


class OutboxInboxContract(abc.ABC):
    """The tests; a subclass says what store they run on."""

    @pytest.fixture
    @abc.abstractmethod
    async def store(self) -> AsyncIterator[Store]: ...

    @abc.abstractmethod
    async def crash_next_mark(self, store: Store) -> None:
        """Make the relay's next "mark these rows sent" fail after the broker acknowledged them."""

    # -- helpers -------------------------------------------------------------------------------
    async def _stage(self, store: Store, *organisation_ids: str) -> list[Envelope]:
        """Each id staged in a transaction of its own, committed."""
        staged = []
        for organisation_id in organisation_ids:
            async with store.sessionmaker() as session, session.begin():
                staged.append(
                    await stage(session, store.outbox, ORGANISATION_REGISTERED, _event(organisation_id), source="t")
                )
        return staged

    def _consumer(self, store: Store, producer: RecordingProducer, *, fail_for: str | None = None) -> EventConsumer:
        consumer = EventConsumer(
            service="contract", sessionmaker=store.sessionmaker, inbox=store.inbox, dlq_producer=lambda: producer
        )

        @consumer.on(TOPIC)
        async def on_registered(session: AsyncSession, envelope: Envelope, event: OrganisationRegistered) -> None:
            await session.execute(
                store.effects.insert().values(event_id=envelope.id, organisation_id=event.organisation_id)
            )
            if event.organisation_id == fail_for:  # after the effect was written: it must roll back
                raise RuntimeError("handler failed after writing its effect")

        return consumer

    async def _count(self, store: Store, table: Table) -> int:
        async with store.sessionmaker() as session:
            return (await session.scalar(select(func.count()).select_from(table))) or 0

    async def _effects(self, store: Store) -> list[str]:
        async with store.sessionmaker() as session:
            return list((await session.execute(select(store.effects.c.organisation_id))).scalars())

    async def _unsent(self, store: Store) -> int:
        async with store.sessionmaker() as session:
            query = select(func.count()).select_from(store.outbox).where(store.outbox.c.sent_at.is_(None))
            return (await session.scalar(query)) or 0

    # -- the contract ----------------------------------------------------------------------------
    async def test_staged_events_are_published_once_in_order_per_key(self, store: Store) -> None:
        staged = await self._stage(store, "org-a", "org-b", "org-a", "org-c", "org-b", "org-a")
        async with store.sessionmaker() as session, session.begin():  # staged, then rolled back: never sent
            await stage(session, store.outbox, ORGANISATION_REGISTERED, _event("org-gone"), source="t")
            await session.rollback()
        producer = RecordingProducer()
        relay = OutboxRelay("contract", store.sessionmaker, store.outbox, batch_size=4)
        relay._producer = producer  # type: ignore[assignment]  # start() would also run the polling loop

        published = [await relay.publish_batch() for _ in range(3)]

        assert published == [4, 2, 0]  # in batches, then nothing left: each once
        assert [Envelope.model_validate_json(s.value).id for s in producer.sent] == [e.id for e in staged]
        for key in (b"org-a", b"org-b", b"org-c"):
            in_kafka = [Envelope.model_validate_json(s.value).id for s in producer.sent if s.key == key]
            assert in_kafka == [e.id for e in staged if e.subject == key.decode()]
        assert {s.topic for s in producer.sent} == {TOPIC}
        assert await self._unsent(store) == 0

    async def test_events_staged_together_are_published_in_the_order_given_with_their_headers(
        self, store: Store
    ) -> None:
        async with store.sessionmaker() as session, session.begin():
            first = await stage(session, store.outbox, ORGANISATION_REGISTERED, _event("org-before"), source="t")
            many = await stage_each(
                session,
                store.outbox,
                [
                    (ORGANISATION_REGISTERED, _event("org-x"), {"rebuild": "yes"}),
                    (SERVICE_UPDATED, _service("org-x"), None),
                    (ORGANISATION_REGISTERED, _event("org-y"), None),
                ],
                source="t",
            )
        producer = RecordingProducer()
        relay = OutboxRelay("contract", store.sessionmaker, store.outbox)
        relay._producer = producer  # type: ignore[assignment]

        assert await relay.publish_batch() == 4
        assert [Envelope.model_validate_json(s.value).id for s in producer.sent] == [first.id] + [e.id for e in many]
        assert [s.value for s in producer.sent[1:]] == [e.to_bytes() for e in many]
        assert [s.topic for s in producer.sent] == [TOPIC, TOPIC, SERVICE_UPDATED.topic, TOPIC]
        assert [s.key for s in producer.sent] == [b"org-before", b"org-x", b"svc-org-x", b"org-y"]
        headers = [dict(s.headers) for s in producer.sent]
        assert headers[1]["rebuild"] == b"yes" and "rebuild" not in headers[2]
        assert [h["ce_type"] for h in headers[1:]] == [
            ORGANISATION_REGISTERED.ce_type.encode(),
            SERVICE_UPDATED.ce_type.encode(),
            ORGANISATION_REGISTERED.ce_type.encode(),
        ]
        assert len({h["traceparent"] for h in headers}) == 4  # a span of its own each

    async def test_a_crash_between_publish_and_mark_resends_and_the_inbox_applies_once(self, store: Store) -> None:
        staged = await self._stage(store, "org-a", "org-b")
        producer = RecordingProducer()
        relay = OutboxRelay("contract", store.sessionmaker, store.outbox)
        relay._producer = producer  # type: ignore[assignment]
        await self.crash_next_mark(store)

        with pytest.raises(Exception, match="crash before mark"):
            await relay.publish_batch()
        assert len(producer.sent) == 2 and await self._unsent(store) == 2  # acknowledged, yet not marked

        assert await relay.publish_batch() == 2  # the restarted relay sends them again: at least once
        assert [Envelope.model_validate_json(s.value).id for s in producer.sent] == [e.id for e in staged] * 2
        assert await self._unsent(store) == 0

        consumer = self._consumer(store, RecordingProducer())
        await consumer.handle_batch(list(producer.sent[:3]))  # one batch holding a duplicate
        await consumer.handle_batch(list(producer.sent[3:]))  # and the last duplicate on its own
        assert sorted(await self._effects(store)) == ["org-a", "org-b"]  # once each
        assert await self._count(store, store.inbox) == 2

    async def test_an_inbox_row_and_its_effect_commit_or_roll_back_together(self, store: Store) -> None:
        await self._stage(store, "org-a", "org-poison", "org-b")
        producer = RecordingProducer()
        relay = OutboxRelay("contract", store.sessionmaker, store.outbox)
        relay._producer = producer  # type: ignore[assignment]
        await relay.publish_batch()
        dlq = RecordingProducer()

        await self._consumer(store, dlq, fail_for="org-poison").handle_batch(list(producer.sent))

        # The failing handler wrote its effect and then failed: neither its effect nor its inbox row
        # stayed; the others in the same batch were applied, each with its inbox row.
        assert sorted(await self._effects(store)) == ["org-a", "org-b"]
        async with store.sessionmaker() as session:
            handled = set((await session.execute(select(store.inbox.c.event_id))).scalars())
        ids = {s.key.decode(): Envelope.model_validate_json(s.value).id for s in producer.sent}
        assert handled == {ids["org-a"], ids["org-b"]}
        assert [(s.topic, s.key) for s in dlq.sent] == [(TOPIC + ".dlq", b"org-poison")]  # kept, not lost

    async def test_a_duplicate_delivery_is_a_no_op(self, store: Store) -> None:
        await self._stage(store, "org-a")
        producer = RecordingProducer()
        relay = OutboxRelay("contract", store.sessionmaker, store.outbox)
        relay._producer = producer  # type: ignore[assignment]
        await relay.publish_batch()
        (record,) = producer.sent
        consumer = self._consumer(store, RecordingProducer())

        await consumer.handle_batch([record])
        await consumer.handle_batch([record])  # redelivered after a rebalance
        await consumer.handle_batch([record, record])  # twice in one batch

        assert await self._effects(store) == ["org-a"]
        assert await self._count(store, store.inbox) == 1


class TestPostgreSQL(OutboxInboxContract):
    """The contract on the real PostgreSQL: a database of the test's own, tables made from the shared
    `reliability_tables`; a crash is a trigger that refuses the next UPDATE of the outbox."""

    @pytest.fixture
    async def store(self, postgres: Any) -> AsyncIterator[Store]:
        url = postgres.new_database("contract")
        metadata, outbox, inbox, effects = _tables()
        engine: AsyncEngine = create_async_engine(url)
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        yield Store(async_sessionmaker(engine, expire_on_commit=False), outbox, inbox, effects)
        await engine.dispose()

    async def crash_next_mark(self, store: Store) -> None:
        # A sequence, because nextval is not rolled back with the failing transaction: the first
        # UPDATE of the outbox fails, every later one passes (the relay after its restart).
        async with store.sessionmaker() as session, session.begin():
            await session.execute(text("CREATE SEQUENCE crash_count"))
            await session.execute(
                text(
                    """
                    CREATE FUNCTION crash_before_mark() RETURNS trigger LANGUAGE plpgsql AS $$
                    BEGIN
                        IF nextval('crash_count') = 1 THEN
                            RAISE EXCEPTION 'crash before mark';
                        END IF;
                        RETURN NULL;
                    END $$
                    """
                )
            )
            await session.execute(
                text(
                    "CREATE TRIGGER crash_before_mark BEFORE UPDATE ON outbox "
                    "FOR EACH STATEMENT EXECUTE FUNCTION crash_before_mark()"
                )
            )
