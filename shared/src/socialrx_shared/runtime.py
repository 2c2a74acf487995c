"""One service's moving parts, started and stopped together.

`ServiceRuntime` owns the database engine, the FastStream broker (consumers), the producer the
outbox relay publishes with, and the relay. Start-up: migrate the database (Alembic), then connect
to Kafka in the background with retries, so a service whose broker is away still starts and answers
`/readyz` with 503 until it arrives. Shutdown: stop consuming (in-flight messages finish and their
offsets commit), drain the outbox, close the producer and the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from faststream.kafka import KafkaBroker
from sqlalchemy import MetaData, Table, text
from sqlalchemy.ext.asyncio import AsyncSession
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from .consumer import EventConsumer
from .db import make_engine, make_sessionmaker, run_migrations
from .events import Envelope, EventSpec, Strict
from .logging import get_logger
from .outbox import OutboxRelay, stage, stage_each, stage_many
from .settings import ServiceSettings

log = get_logger(__name__)


def bootstrap_list(servers: str) -> list[str]:
    """KAFKA_BOOTSTRAP_SERVERS ("host:port,host:port") as the list of brokers it names."""
    return [server.strip() for server in servers.split(",") if server.strip()]


RELAY_BATCH_BYTES = 256 * 1024  # under the broker's message.max.bytes (1 MB by default)


def safe_producer(bootstrap_servers: str, client_id: str) -> AIOKafkaProducer:
    """acks=all + idempotence: an acknowledged event is on every in-sync replica, never doubled by retries."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        # A relay sends up to 500 events at once; aiokafka's default 16 KB batch held about 16 of them,
        # so every publish became dozens of record batches for the broker to take apart and store.
        max_batch_size=RELAY_BATCH_BYTES,
        request_timeout_ms=30_000,
    )


class ServiceRuntime:
    def __init__(
        self,
        name: str,
        settings: ServiceSettings,
        metadata: MetaData,
        outbox: Table,
        inbox: Table,
        migrations_dir: Path,
    ) -> None:
        self.name = name
        self.settings = settings
        self.metadata = metadata
        self.outbox = outbox
        self.migrations_dir = migrations_dir
        self.engine = make_engine(settings.database_url)
        self.sessionmaker = make_sessionmaker(self.engine)
        self.broker = KafkaBroker(
            # A list: FastStream wraps a string in a list whole, so "b1:9092,b2:9092" (every production
            # cluster) would reach aiokafka as one host name and never connect.
            bootstrap_list(settings.kafka_bootstrap_servers),
            client_id=name,
            acks="all",
            enable_idempotence=True,
            graceful_timeout=15.0,
            logger=None,
        )
        # aiokafka clients need a running event loop: the producer is made in start().
        self.producer: AIOKafkaProducer | None = None
        self.relay = OutboxRelay(name, self.sessionmaker, outbox, poll_interval_s=settings.outbox_poll_interval_s)
        self.consumer = EventConsumer(
            service=name,
            sessionmaker=self.sessionmaker,
            inbox=inbox,
            dlq_producer=self._require_producer,
            after_commit=self.relay.wake,
        )
        self.kafka_connected = False
        self._connect_task: asyncio.Task[None] | None = None

    def _require_producer(self) -> AIOKafkaProducer:
        assert self.producer is not None, "Kafka not connected yet"
        return self.producer

    async def start(self) -> None:
        async for attempt in AsyncRetrying(stop=stop_after_delay(60), wait=wait_exponential(0.2, max=3), reraise=True):
            with attempt:
                await run_migrations(self.migrations_dir, self.settings.database_url)
        self.consumer.subscribe(self.broker, self.settings.consumer_group(self.name))
        self._connect_task = asyncio.create_task(self._connect_kafka(), name=f"{self.name}-kafka-connect")

    async def _connect_kafka(self) -> None:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(Exception), wait=wait_exponential(0.5, max=5), reraise=True
        ):
            with attempt:
                producer = safe_producer(self.settings.kafka_bootstrap_servers, f"{self.name}-relay")
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self.producer = producer
        async for attempt in AsyncRetrying(wait=wait_exponential(0.5, max=5), reraise=True):
            with attempt:
                await self.broker.start()
        self.relay.start(self.producer)
        self.kafka_connected = True
        log.info("kafka connected", service=self.name)

    async def stop(self) -> None:
        if self._connect_task and not self._connect_task.done():
            self._connect_task.cancel()
        await self.broker.stop()  # waits (graceful_timeout) for in-flight handlers; they commit offsets
        await self.relay.stop()
        if self.producer is not None:
            await self.producer.stop()
        await self.engine.dispose()

    async def readiness(self) -> dict[str, str]:
        checks: dict[str, str] = {}
        try:
            async with self.engine.connect() as conn:
                await asyncio.wait_for(conn.execute(text("SELECT 1")), timeout=2)
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unavailable: {type(exc).__name__}"
        if not self.kafka_connected:
            checks["kafka"] = "connecting"
        elif await self.broker.ping(timeout=2):
            checks["kafka"] = "ok"
        else:
            checks["kafka"] = "unavailable"
        return checks

    def consumers(self) -> list[Any]:
        """The aiokafka consumers behind this service's subscribers (for lag metrics)."""
        return [getattr(sub, "consumer", None) for sub in self.broker.subscribers]

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A unit of work: commits on success; staged events leave right after the commit."""
        async with self.sessionmaker() as session, session.begin():
            yield session
        self.relay.wake()

    async def stage(
        self, session: AsyncSession, spec: EventSpec, data: Strict, headers: dict[str, str] | None = None
    ) -> Envelope:
        return await stage(session, self.outbox, spec, data, source=self.name, headers=headers)

    async def stage_many(self, session: AsyncSession, spec: EventSpec, items: Sequence[Strict]) -> None:
        """Stage one event per item with one multi-row INSERT (the bulk uploads)."""
        await stage_many(session, self.outbox, spec, items, source=self.name)

    async def stage_each(
        self, session: AsyncSession, items: Sequence[tuple[EventSpec, Strict, dict[str, str] | None]]
    ) -> None:
        """Stage events of any types, each with its own headers, in one multi-row INSERT, in order."""
        await stage_each(session, self.outbox, items, source=self.name)
