"""Idempotent consumers: inbox + effect in one transaction, offsets after, DLQ for poison.

`EventConsumer.subscribe` registers one FastStream batch subscriber for all of a service's topics,
with the ack policy NACK_ON_ERROR: offsets are committed only when the handler returned, i.e. after
the database transaction holding the effects and their inbox rows committed. An error seeks back
(redelivery). Within a partition, records are applied in order.

Each batch of records is:
- parsed by `parse_event`; a poison message (bad JSON, failed validation, unknown type) is
  published to `<topic>.dlq` with the error and the original bytes (awaited), then skipped;
- applied in one transaction: the batch's ids inserted into the inbox in one statement (a duplicate
  inserts nothing and is dropped), then the service's handler of each new record, in order; commit;
- retried with backoff while the fault is transient (database or network away) without limit, so
  no message is skipped. Any other error falls back to one record per transaction: a record that
  keeps failing is retried a few times, then dead-lettered, and the others go on.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from sqlalchemy import Table, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, stop_never, wait_exponential

from .events import BY_TOPIC, Envelope, PoisonMessage, Strict, parse_event
from .logging import get_logger
from .metrics import CONSUMED, DEAD_LETTERED, DUPLICATES, FAILED, HANDLER_LATENCY_S
from .tracing import current_traceparent, trace_id

log = get_logger(__name__)

Handler = Callable[[AsyncSession, Envelope, Any], Awaitable[None]]
# Consecutive new records of one topic, in order, as (envelope, payload): applied together (set-based).
ManyHandler = Callable[[AsyncSession, list[tuple[Envelope, Any]]], Awaitable[None]]
# A batch's new records, in order, as (topic, envelope, payload): applied together (set-based).
BatchHandler = Callable[[AsyncSession, list[tuple[str, Envelope, Any]]], Awaitable[None]]

NON_TRANSIENT_ATTEMPTS = 3
# A dead letter that cannot be sent is retried here a few times, then the batch fails (its offsets
# stay uncommitted, so the records come again): a record is never skipped without its letter.
DLQ_SEND_ATTEMPTS = 5

# SQLSTATEs of faults that pass when the same transaction is simply run again: PostgreSQL under
# load (serialization failure, deadlock, a lock or statement timeout, too many connections) or
# going away (admin/crash shutdown, cannot connect now, the connection lost).
TRANSIENT_SQLSTATES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "55P03",  # lock_not_available (lock_timeout, NOWAIT)
        "57014",  # query_canceled (statement_timeout)
        "53300",  # too_many_connections
        "57P01",
        "57P02",
        "57P03",  # admin_shutdown, crash_shutdown, cannot_connect_now
        "08000",
        "08001",
        "08003",
        "08004",
        "08006",  # connection exceptions
    }
)


def _sqlstate(exc: DBAPIError) -> str | None:
    # SQLAlchemy's asyncpg adapter carries it on `orig`; older versions only on the asyncpg cause.
    return getattr(exc.orig, "sqlstate", None) or getattr(getattr(exc.orig, "__cause__", None), "sqlstate", None)


def is_transient(exc: BaseException) -> bool:
    """Faults that go away by themselves: the database or the network unavailable or overloaded.

    A valid event meeting one of these (e.g. `referral.accepted`, money owed) must be retried, never
    dead-lettered: a pool checkout timeout or a statement/lock timeout says "busy", not "poison"."""
    if isinstance(
        exc, (OperationalError, InterfaceError, PoolTimeoutError, ConnectionError, OSError, asyncio.TimeoutError)
    ):
        return True
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or _sqlstate(exc) in TRANSIENT_SQLSTATES
    name = type(exc).__name__
    return name in {"CannotConnectNowError", "ConnectionDoesNotExistError", "TooManyConnectionsError"}


@contextmanager
def _traced(record: Any, envelope: Envelope) -> Iterator[None]:
    """The record's trace context and ids, for the logs and for the events its handler stages."""
    traceparent = next((v.decode(errors="replace") for k, v in (record.headers or []) if k == "traceparent"), None)
    token = current_traceparent.set(traceparent)
    try:
        with structlog.contextvars.bound_contextvars(
            event_id=str(envelope.id),
            event_type=envelope.type,
            referral_id=envelope.data.get("referral_id"),
            trace_id=trace_id(traceparent),
        ):
            yield
    finally:
        current_traceparent.reset(token)


async def take_batch_lock(session: AsyncSession, key: str) -> None:
    """The lock a consumer's batches take (`EventConsumer.batch_lock`), for a command that must not
    run beside a batch: held to the end of the caller's transaction."""
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": key})


@dataclass
class EventConsumer:
    service: str
    sessionmaker: async_sessionmaker[AsyncSession]
    inbox: Table
    dlq_producer: Callable[[], AIOKafkaProducer]
    after_commit: Callable[[], None] = lambda: None
    handlers: dict[str, Handler] = field(default_factory=dict)
    # Set-based twins of some handlers (`on_many`): a run of consecutive records of that topic in a
    # batch goes to the twin at once; the handler stays for records applied one by one.
    many_handlers: dict[str, ManyHandler] = field(default_factory=dict)
    # Records per batch: one transaction and one offset commit each, instead of one per record.
    max_batch: int = 200
    # When set, each batch's transaction first takes this advisory lock, so the replicas of the
    # service apply their batches one at a time. For a service whose handlers lock rows many events
    # share (the ledger's projections, a capped agreement): a batch takes them event by event, in no
    # order one could impose, so two replicas' batches locked each other (deadlocks, each rolling a
    # whole batch back: 109 in 15 minutes of `make chaos`). Such rows serialise them anyway.
    batch_lock: str | None = None
    # When set, a batch's new records go to this one function, in order, instead of to their
    # handlers one by one: a service may then decide them in memory and write them with a few
    # statements per table. It must leave what the handlers would have left, record by record;
    # the handlers still apply each record on its own when a batch fails (or raises to ask for that).
    batch_handler: BatchHandler | None = None

    def on(self, topic: str) -> Callable[[Handler], Handler]:
        if topic not in BY_TOPIC:
            raise ValueError(f"no contract for topic {topic!r}")

        def register(handler: Handler) -> Handler:
            self.handlers[topic] = handler
            return handler

        return register

    def on_many(self, topic: str) -> Callable[[ManyHandler], ManyHandler]:
        """Register the set-based twin of `topic`'s handler: given a run of the topic's records, in
        order, it must leave what the handler leaves applying them one after another."""
        if topic not in self.handlers:
            raise ValueError(f"register the one-record handler of {topic!r} first: failed batches use it")

        def register(handler: ManyHandler) -> ManyHandler:
            self.many_handlers[topic] = handler
            return handler

        return register

    def subscribe(self, broker: KafkaBroker, group_id: str) -> None:
        """One consumer (one group member) for all the service's topics, reading in batches.

        A batch is applied in one transaction and its offsets committed once, after that commit
        (NACK_ON_ERROR: an error seeks back to the batch's first records instead)."""
        if not self.handlers:
            return

        @broker.subscriber(
            *self.handlers,
            group_id=group_id,
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.NACK_ON_ERROR,
            batch=True,
            max_records=self.max_batch,
            batch_timeout_ms=100,
            title=f"{self.service}",
        )
        async def _on_batch(msg: KafkaMessage) -> None:
            raw = msg.raw_message
            await self.handle_batch(list(raw) if isinstance(raw, tuple) else [raw])

    async def handle_batch(self, records: list[Any]) -> None:
        """Poison to the DLQ; the rest in one transaction. If that transaction fails for a reason
        other than a transient fault, each record is retried on its own, so one bad record is
        dead-lettered without holding back the others."""
        started = time.perf_counter()
        parsed: list[tuple[Any, Envelope, Strict]] = []
        for record in records:
            try:
                parsed.append((record, *parse_event(record.topic, record.value)))
            except PoisonMessage as exc:
                await self._dead_letter(record, str(exc))
        if not parsed:
            return
        try:
            outcomes = await self._retry_transient(lambda: self._apply_batch(parsed))
        except Exception as exc:
            if is_transient(exc):
                raise
            log.warning("batch failed; handling its records one by one", error=repr(exc)[:300], size=len(parsed))
            for record, envelope, payload in parsed:
                await self._handle_parsed(record, envelope, payload)
            return
        for (record, _, _), applied in zip(parsed, outcomes, strict=True):
            (CONSUMED if applied else DUPLICATES).labels(self.service, record.topic).inc()
        if any(outcomes):
            self.after_commit()
        elapsed = (time.perf_counter() - started) / len(parsed)
        for record, _, _ in parsed:
            HANDLER_LATENCY_S.labels(self.service, record.topic).observe(elapsed)

    async def _apply_batch(self, parsed: list[tuple[Any, Envelope, Strict]]) -> list[bool]:
        """The whole batch's inbox rows in one INSERT (one round trip, not one per record), then the
        handler of each record that was new, in order; all in one transaction."""
        applied: list[bool] = []
        async with self.sessionmaker() as session, session.begin():
            if len(parsed) > 1:
                # A batch's set-based statements are planned for its ids and the tables as they are now:
                # a plan cached while a table was small (a fresh ledger filling during a bulk upload)
                # kept scanning the table whole as it grew (a ledger batch: 55 → 220 ms as its tables filled).
                await session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
            await self._lock_batch(session)
            fresh = await self._claim(session, parsed)
            new_records = []
            for record, envelope, payload in parsed:
                # A record is new once: a second copy in the same batch finds its id already taken.
                new = envelope.id in fresh
                fresh.discard(envelope.id)
                if new:
                    new_records.append((record, envelope, payload))
                applied.append(new)
            if self.batch_handler is not None and new_records:
                await self.batch_handler(
                    session, [(r.topic, envelope, payload) for r, envelope, payload in new_records]
                )
            else:
                await self._apply_runs(session, new_records)
        return applied

    async def _apply_runs(self, session: AsyncSession, new_records: list[tuple[Any, Envelope, Strict]]) -> None:
        """Each record through its handler, in order; a run of consecutive records of a topic with a
        set-based twin (`on_many`) through the twin, at once."""
        for topic, run in itertools.groupby(new_records, key=lambda item: item[0].topic):
            records = list(run)
            many = self.many_handlers.get(topic)
            if many is not None and len(records) > 1:
                await many(session, [(envelope, payload) for _, envelope, payload in records])
                continue
            for record, envelope, payload in records:
                with _traced(record, envelope):
                    await self.handlers[record.topic](session, envelope, payload)

    async def _lock_batch(self, session: AsyncSession) -> None:
        if self.batch_lock is not None:
            await take_batch_lock(session, self.batch_lock)

    async def _claim(self, session: AsyncSession, parsed: list[tuple[Any, Envelope, Strict]]) -> set[uuid.UUID]:
        """Insert the batch's event ids into the inbox; the ids inserted (not handled before)."""
        rows = await session.execute(
            text(
                f"INSERT INTO {self.inbox.name} (event_id, topic) "
                "SELECT * FROM unnest(CAST(:ids AS uuid[]), CAST(:topics AS varchar[])) "
                "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
            ),
            {"ids": [envelope.id for _, envelope, _ in parsed], "topics": [record.topic for record, _, _ in parsed]},
        )
        return {row[0] for row in rows}

    async def _retry_transient(self, attempt_once: Callable[[], Awaitable[Any]]) -> Any:
        def transient(exc: BaseException) -> bool:
            if is_transient(exc):
                log.warning("transient fault; retrying", error=type(exc).__name__)
                return True
            return False

        async for attempt in AsyncRetrying(
            retry=retry_if_exception(transient),
            stop=stop_never,
            reraise=True,
            wait=wait_exponential(multiplier=0.1, max=5.0),
        ):
            with attempt:
                return await attempt_once()

    async def _handle_parsed(self, record: Any, envelope: Envelope, payload: Strict) -> None:
        with _traced(record, envelope):
            await self._apply_with_retries(record, envelope, payload)

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
            return await self._apply_in(session, topic, envelope, payload)

    async def _apply_in(self, session: AsyncSession, topic: str, envelope: Envelope, payload: Strict) -> bool:
        """The inbox row and the effect, in the caller's transaction; False for a duplicate."""
        await self._lock_batch(session)
        inserted = await session.execute(
            pg_insert(self.inbox)
            .values(event_id=envelope.id, topic=topic)
            .on_conflict_do_nothing(index_elements=["event_id"])
            .returning(self.inbox.c.event_id)
        )
        if inserted.first() is None:
            return False  # handled before (or earlier in this batch): redelivery changes nothing
        await self.handlers[topic](session, envelope, payload)
        return True

    async def _dead_letter(self, record: Any, error: str) -> None:
        """Send the record to `<topic>.dlq` and wait for the broker's acknowledgement; only then is it
        counted and logged as dead-lettered. A send that keeps failing raises: the batch fails, its
        offsets are not committed and the record comes again."""
        headers = [
            *list(record.headers or []),
            ("dlq.error", error.encode()),
            ("dlq.topic", record.topic.encode()),
            ("dlq.partition", str(record.partition).encode()),
            ("dlq.offset", str(record.offset).encode()),
            ("dlq.consumer", self.service.encode()),
            ("dlq.failed_at", datetime.now(timezone.utc).isoformat().encode()),
        ]
        where = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(DLQ_SEND_ATTEMPTS), reraise=True, wait=wait_exponential(multiplier=0.1, max=2.0)
            ):
                with attempt:
                    # Awaited to the broker's acknowledgement before the offset is committed: never lost.
                    await self.dlq_producer().send_and_wait(
                        record.topic + ".dlq", value=record.value or b"", key=record.key, headers=headers
                    )
        except Exception as exc:
            log.error(
                "dead-letter send failed; the record stays uncommitted and comes again",
                **where,
                send_error=type(exc).__name__,
            )
            raise
        DEAD_LETTERED.labels(self.service, record.topic).inc()
        log.error("dead-lettered", **where, error=error[:300])
