"""Transactional outbox: `stage` an event with the change that causes it; `OutboxRelay` publishes.

Why our own and not `faststream-outbox`: we need the relay to publish in commit order per service
(events of one referral keep their order), to hold rows until the broker acknowledged them with
acks=all, to expose its backlog as metrics, and to work with the inbox in the same transaction; a
hundred lines we test against the real broker were simpler to trust than another moving part.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from aiokafka import AIOKafkaProducer
from sqlalchemy import (
    BigInteger,
    LargeBinary,
    Table,
    Text,
    TextClause,
    Uuid,
    bindparam,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .events import Envelope, EventSpec, Strict, new_event
from .logging import get_logger
from .metrics import OUTBOX_BACKLOG, OUTBOX_OLDEST_AGE_S, PUBLISHED
from .tracing import child_traceparent, current_traceparent

log = get_logger(__name__)

# One relay per service database publishes at a time (transaction-scoped advisory lock), so rows
# leave in id order even with several replicas running.
RELAY_LOCK_KEY = 0x0B0C5


async def stage(
    session: AsyncSession,
    outbox: Table,
    spec: EventSpec,
    data: Strict,
    *,
    source: str,
    headers: dict[str, str] | None = None,
) -> Envelope:
    """Record `data` as an event to publish when the surrounding transaction commits.

    `headers` travel as Kafka headers beside the trace context (e.g. what a rebuild needs)."""
    envelope = new_event(spec, data, source=source)
    traceparent = child_traceparent(current_traceparent.get())
    await session.execute(
        insert(outbox).values(
            event_id=envelope.id,
            topic=spec.topic,
            key=envelope.subject,
            value=envelope.to_bytes(),
            headers={**(headers or {}), "traceparent": traceparent, "ce_type": spec.ce_type},
        )
    )
    return envelope


async def stage_many(
    session: AsyncSession,
    outbox: Table,
    spec: EventSpec,
    items: Sequence[Strict],
    *,
    source: str,
    headers: dict[str, str] | None = None,
) -> list[Envelope]:
    """`stage` for many events of one type in one multi-row INSERT (bulk uploads): the same rows,
    the same order, a fraction of the round trips."""
    return await stage_each(session, outbox, [(spec, data, headers) for data in items], source=source)


async def stage_each(
    session: AsyncSession,
    outbox: Table,
    items: Sequence[tuple[EventSpec, Strict, dict[str, str] | None]],
    *,
    source: str,
) -> list[Envelope]:
    """`stage` for many events, of any types, each with its own headers, in one multi-row INSERT,
    in the order given (the relay publishes in that order)."""
    if not items:
        return []
    envelopes = [new_event(spec, data, source=source) for spec, data, _ in items]
    parent = current_traceparent.get()
    pairs = list(zip(envelopes, items, strict=True))
    # One INSERT of arrays, executed once, rather than the statement once per row (executemany): for a
    # bulk upload's 1,000 events, most of the staging's time went to the per-row executions.
    await session.execute(
        _insert_arrays(outbox),
        {
            "event_ids": [envelope.id for envelope, _ in pairs],
            "topics": [spec.topic for _, (spec, _, _) in pairs],
            "keys": [envelope.subject for envelope, _ in pairs],
            "values_": [envelope.to_bytes() for envelope, _ in pairs],
            "headers": [
                json.dumps({**(headers or {}), "traceparent": child_traceparent(parent), "ce_type": spec.ce_type})
                for _, (spec, _, headers) in pairs
            ],
        },
    )
    return envelopes


def _insert_arrays(outbox: Table) -> TextClause:
    """`INSERT … SELECT FROM unnest(arrays)` into a service's outbox, rows in the arrays' order (the ids
    the relay publishes by follow it)."""
    return text(
        f"INSERT INTO {outbox.name} (event_id, topic, key, value, headers) "
        "SELECT e, t, k, v, h::jsonb FROM unnest(:event_ids, :topics, :keys, :values_, :headers) "
        "WITH ORDINALITY AS u(e, t, k, v, h, n) ORDER BY n"
    ).bindparams(
        bindparam("event_ids", type_=ARRAY(Uuid)),
        bindparam("topics", type_=ARRAY(Text)),
        bindparam("keys", type_=ARRAY(Text)),
        bindparam("values_", type_=ARRAY(LargeBinary)),
        bindparam("headers", type_=ARRAY(Text)),
    )


class OutboxRelay:
    def __init__(
        self,
        service: str,
        sessionmaker: async_sessionmaker[AsyncSession],
        outbox: Table,
        *,
        batch_size: int = 500,
        poll_interval_s: float = 0.5,
    ) -> None:
        self.service = service
        self._sessionmaker = sessionmaker
        self._outbox = outbox
        self._producer: AIOKafkaProducer | None = None
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Called after a commit that staged events, so they leave now rather than at the next poll."""
        self._wakeup.set()

    def start(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._task = asyncio.create_task(self._run(), name=f"{self.service}-outbox-relay")

    async def stop(self, drain_timeout_s: float = 10.0) -> None:
        """Graceful stop: publish what is committed (bounded in time), then end the loop."""
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=drain_timeout_s)
            except (TimeoutError, asyncio.CancelledError):
                log.warning("outbox relay stopped before draining", service=self.service)

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                published = await self.publish_batch()
                failures = 0
            except Exception as exc:  # broker or database away: keep rows, retry with backoff
                failures += 1
                published = 0
                log.warning("outbox publish failed; will retry", error=str(exc), attempt=failures)
                if self._stopping and failures >= 3:
                    return
                await asyncio.sleep(min(0.2 * 2**failures, 10.0))
                continue
            if published == self._batch_size:
                continue  # more waiting: no pause
            if self._stopping:
                return
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=self._poll_interval_s)

    async def publish_batch(self) -> int:
        async with self._sessionmaker() as session, session.begin():
            # The lock and the read in one round trip: no rows when another relay holds the lock.
            locked = select(func.pg_try_advisory_xact_lock(RELAY_LOCK_KEY).label("ok")).cte("locked")
            rows = (
                await session.execute(
                    select(
                        self._outbox.c.id,
                        self._outbox.c.topic,
                        self._outbox.c.key,
                        self._outbox.c.value,
                        self._outbox.c.headers,
                        self._outbox.c.created_at,
                    )
                    .join(locked, locked.c.ok)
                    .where(self._outbox.c.sent_at.is_(None))
                    .order_by(self._outbox.c.id)
                    .limit(self._batch_size)
                )
            ).all()
            self._observe_backlog(rows)
            if not rows:
                return 0
            # Send all, then wait for every acknowledgement (acks=all) before marking them sent:
            # a crash before the UPDATE commits re-sends them, and consumers drop the duplicates.
            assert self._producer is not None, "relay not started"
            pending = [
                await self._producer.send(
                    row.topic,
                    value=row.value,
                    key=row.key.encode(),
                    headers=[(k, str(v).encode()) for k, v in row.headers.items()],
                )
                for row in rows
            ]
            await asyncio.gather(*pending)
            # `= ANY(array)`: one statement whatever the batch's size (an IN list is a new statement to
            # parse and plan for every count of rows).
            await session.execute(
                update(self._outbox)
                .where(
                    self._outbox.c.id
                    == func.any(bindparam("sent_ids", [row.id for row in rows], type_=ARRAY(BigInteger)))
                )
                .values(sent_at=datetime.now(timezone.utc))
            )
        for row in rows:
            PUBLISHED.labels(service=self.service, topic=row.topic).inc()
        return len(rows)

    def _observe_backlog(self, rows: Sequence[Any]) -> None:
        OUTBOX_BACKLOG.labels(service=self.service).set(len(rows))
        oldest = rows[0].created_at if rows else None
        age_s = (datetime.now(timezone.utc) - oldest).total_seconds() if oldest else 0.0
        OUTBOX_OLDEST_AGE_S.labels(service=self.service).set(age_s)
