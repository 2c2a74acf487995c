"""Idempotent consumers: inbox + effect in one transaction, offsets after, DLQ for poison.

`EventConsumer.subscribe` registers one FastStream subscriber per topic with the ack policy
NACK_ON_ERROR: the offset is committed only when the handler returned, i.e. after the database
transaction holding the effect and the inbox row committed. An error seeks back (redelivery).

Inside, each message is:
- parsed by `parse_event`; a poison message (bad JSON, failed validation, unknown type) is
  published to `<topic>.dlq` with the error and the original bytes, then acknowledged;
- applied in one transaction: insert its id into the inbox (a duplicate inserts nothing and is
  dropped), run the service's handler, commit;
- retried with backoff while the fault is transient (database or network away) without limit, so
  no message is skipped; a non-transient error is retried a few times, then dead-lettered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from sqlalchemy import Table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from tenacity import AsyncRetrying, retry_if_exception, stop_never, wait_exponential

from .events import BY_TOPIC, Envelope, PoisonMessage, Strict, parse_event
from .logging import get_logger
from .metrics import CONSUMED, DEAD_LETTERED, DUPLICATES, FAILED, HANDLER_LATENCY_S
from .tracing import current_traceparent, trace_id

log = get_logger(__name__)

Handler = Callable[[AsyncSession, Envelope, Any], Awaitable[None]]

NON_TRANSIENT_ATTEMPTS = 3


def is_transient(exc: BaseException) -> bool:
    """Faults that go away by themselves: the database or the network was unavailable."""
    if isinstance(exc, (OperationalError, InterfaceError, ConnectionError, OSError, asyncio.TimeoutError)):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        # serialization_failure / deadlock_detected: the transaction may simply be run again
        sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(getattr(exc.orig, "__cause__", None), "sqlstate", None)
        return sqlstate in {"40001", "40P01", "57P01", "57P03", "08006", "08003", "08001"}
    name = type(exc).__name__
    return name in {"CannotConnectNowError", "ConnectionDoesNotExistError", "TooManyConnectionsError"}


@dataclass
class EventConsumer:
    service: str
    sessionmaker: async_sessionmaker[AsyncSession]
    inbox: Table
    dlq_producer: Callable[[], AIOKafkaProducer]
    after_commit: Callable[[], None] = lambda: None
    handlers: dict[str, Handler] = field(default_factory=dict)

    def on(self, topic: str) -> Callable[[Handler], Handler]:
        if topic not in BY_TOPIC:
            raise ValueError(f"no contract for topic {topic!r}")

        def register(handler: Handler) -> Handler:
            self.handlers[topic] = handler
            return handler

        return register

    def subscribe(self, broker: KafkaBroker, group_id: str) -> None:
        """One consumer (one group member) for all the service's topics: no rebalancing between them."""
        if not self.handlers:
            return

        @broker.subscriber(
            *self.handlers,
            group_id=group_id,
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.NACK_ON_ERROR,
            title=f"{self.service}",
        )
        async def _on_message(msg: KafkaMessage) -> None:
            await self.handle_record(msg.raw_message)

    async def handle_record(self, record: Any) -> None:
        """Handle one consumed record; returns only when it is applied, a duplicate or dead-lettered."""
        headers = {k: v.decode(errors="replace") for k, v in (record.headers or [])}
        token = current_traceparent.set(headers.get("traceparent"))
        started = time.perf_counter()
        try:
            try:
                envelope, payload = parse_event(record.topic, record.value)
            except PoisonMessage as exc:
                await self._dead_letter(record, str(exc))
                return
            with structlog.contextvars.bound_contextvars(
                event_id=str(envelope.id), event_type=envelope.type,
                referral_id=envelope.data.get("referral_id"), trace_id=trace_id(headers.get("traceparent")),
            ):
                await self._apply_with_retries(record, envelope, payload)
        finally:
            current_traceparent.reset(token)
            HANDLER_LATENCY_S.labels(self.service, record.topic).observe(time.perf_counter() - started)

    async def _apply_with_retries(self, record: Any, envelope: Envelope, payload: Strict) -> None:
        non_transient_failures = 0

        def should_retry(exc: BaseException) -> bool:
            nonlocal non_transient_failures
            if is_transient(exc):
                FAILED.labels(self.service, record.topic, "transient").inc()
                log.warning("transient fault; retrying", error=type(exc).__name__)
                return True
            non_transient_failures += 1
            FAILED.labels(self.service, record.topic, "error").inc()
            log.error("handler failed", error=repr(exc)[:500], attempt=non_transient_failures)
            return non_transient_failures < NON_TRANSIENT_ATTEMPTS

        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(should_retry),
                wait=wait_exponential(multiplier=0.1, max=5.0),
                stop=stop_never,
                reraise=True,
            ):
                with attempt:
                    applied = await self._apply_once(record.topic, envelope, payload)
        except Exception as exc:
            if is_transient(exc):
                raise
            await self._dead_letter(record, f"handler error: {exc!r}"[:1000])
            return
        if applied:
            CONSUMED.labels(self.service, record.topic).inc()
            self.after_commit()
        else:
            DUPLICATES.labels(self.service, record.topic).inc()

    async def _apply_once(self, topic: str, envelope: Envelope, payload: Strict) -> bool:
        async with self.sessionmaker() as session, session.begin():
            inserted = await session.execute(
                pg_insert(self.inbox)
                .values(event_id=envelope.id, topic=topic)
                .on_conflict_do_nothing(index_elements=["event_id"])
                .returning(self.inbox.c.event_id)
            )
            if inserted.first() is None:
                return False  # handled before: redelivery changes nothing
            await self.handlers[topic](session, envelope, payload)
        return True

    async def _dead_letter(self, record: Any, error: str) -> None:
        DEAD_LETTERED.labels(self.service, record.topic).inc()
        log.error("dead-lettered", topic=record.topic, partition=record.partition, offset=record.offset, error=error[:300])
        headers = list(record.headers or []) + [
            ("dlq.error", error.encode()),
            ("dlq.topic", record.topic.encode()),
            ("dlq.partition", str(record.partition).encode()),
            ("dlq.offset", str(record.offset).encode()),
            ("dlq.consumer", self.service.encode()),
            ("dlq.failed_at", datetime.now(timezone.utc).isoformat().encode()),
        ]
        # Awaited to the broker's acknowledgement before the offset is committed: never lost.
        await self.dlq_producer().send_and_wait(
            record.topic + ".dlq", value=record.value or b"", key=record.key, headers=headers
        )
