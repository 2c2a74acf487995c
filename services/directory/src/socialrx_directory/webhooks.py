"""Webhook deliveries of a charity's referral events: fan-out in the event's transaction, then a worker.

`publish` stages an event for Kafka (outbox) and, in the same transaction, one delivery row per
matching subscription of the event's organisation, so a delivery exists exactly when the event
does and survives restarts. The worker claims due rows with a short lease (so the HTTP call runs
outside any transaction and a crashed worker's rows come back), posts the CloudEvents envelope —
the very bytes that went to Kafka — signed, and records the outcome with exponential backoff.
"""

from __future__ import annotations

import secrets
import time
from datetime import datetime, timedelta, timezone

import httpx
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from socialrx_shared.events import Envelope, EventSpec, Strict
from socialrx_shared.logging import get_logger
from socialrx_shared.runtime import ServiceRuntime

from . import domain
from .store import subscriptions, webhook_deliveries

log = get_logger(__name__)

SIGNATURE_HEADER = "X-Socialrx-Signature"
TIMESTAMP_HEADER = "X-Socialrx-Timestamp"
EVENT_ID_HEADER = "X-Socialrx-Event-Id"
EVENT_TYPE_HEADER = "X-Socialrx-Event-Type"
LEASE = timedelta(seconds=60)
BATCH = 20


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


async def publish(rt: ServiceRuntime, session: AsyncSession, spec: EventSpec, data: Strict,
                  organisation_id: str) -> Envelope:
    envelope = await rt.stage(session, spec, data)
    await enqueue(session, organisation_id, envelope)
    return envelope


async def enqueue(session: AsyncSession, organisation_id: str, envelope: Envelope) -> None:
    """One delivery per active subscription of this organisation that asked for this event."""
    event_name = envelope.spec.name
    subs = (await session.execute(
        select(subscriptions.c.id).where(subscriptions.c.organisation_id == organisation_id,
                                         subscriptions.c.active.is_(True),
                                         subscriptions.c.events.contains([event_name]))
    )).scalars().all()
    now = datetime.now(timezone.utc)
    for sub_id in subs:
        await session.execute(pg_insert(webhook_deliveries).values(
            subscription_id=sub_id, organisation_id=organisation_id, event_id=envelope.id,
            event_type=envelope.type, body=envelope.to_bytes(), status="pending", attempts=0,
            next_attempt_at=now, created_at=now,
        ).on_conflict_do_nothing(index_elements=["subscription_id", "event_id"]))


def signed_headers(secret: str, body: bytes, event_id: str, event_type: str, now: float | None = None) -> dict[str, str]:
    timestamp = str(int(now if now is not None else time.time()))
    return {
        "Content-Type": "application/cloudevents+json",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: "v1=" + domain.signature(secret, timestamp, body),
        EVENT_ID_HEADER: event_id,
        EVENT_TYPE_HEADER: event_type,
    }


class DeliveryWorker:
    def __init__(self, rt: ServiceRuntime, *, retry_base_s: float, retry_cap_s: float, max_attempts: int,
                 timeout_s: float = 10.0) -> None:
        self.rt = rt
        self.retry_base_s = retry_base_s
        self.retry_cap_s = retry_cap_s
        self.max_attempts = max_attempts
        self.timeout_s = timeout_s

    async def run_once(self) -> int:
        claimed = await self._claim()
        if not claimed:
            return 0
        async with httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False) as client:
            for row in claimed:
                code, error = await self._send(client, row)
                await self._record(row, code, error)
        return len(claimed)

    async def _claim(self) -> list:
        now = datetime.now(timezone.utc)
        async with self.rt.transaction() as session:
            rows = (await session.execute(
                select(webhook_deliveries.c.id, webhook_deliveries.c.body, webhook_deliveries.c.event_id,
                       webhook_deliveries.c.event_type, webhook_deliveries.c.attempts,
                       subscriptions.c.url, subscriptions.c.secret)
                .join(subscriptions, subscriptions.c.id == webhook_deliveries.c.subscription_id)
                .where(webhook_deliveries.c.status == "pending", webhook_deliveries.c.next_attempt_at <= now)
                .order_by(webhook_deliveries.c.id).limit(BATCH)
                .with_for_update(of=webhook_deliveries, skip_locked=True)
            )).all()
            if rows:
                # The lease: another worker (or this one after a crash) retries only once it expires.
                await session.execute(update(webhook_deliveries)
                                      .where(webhook_deliveries.c.id.in_([r.id for r in rows]))
                                      .values(next_attempt_at=now + LEASE))
        return list(rows)

    async def _send(self, client: httpx.AsyncClient, row) -> tuple[int | None, str | None]:
        headers = signed_headers(row.secret, row.body, str(row.event_id), row.event_type)
        try:
            response = await client.post(row.url, content=row.body, headers=headers)
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}"
        if 200 <= response.status_code < 300:
            return response.status_code, None
        return response.status_code, f"receiver answered {response.status_code}"

    async def _record(self, row, code: int | None, error: str | None) -> None:
        now = datetime.now(timezone.utc)
        attempts = row.attempts + 1
        if error is None:
            values = {"status": "delivered", "delivered_at": now, "last_error": None}
        elif attempts >= self.max_attempts:
            values = {"status": "failed", "last_error": error}
        else:
            delay = domain.retry_delay_s(attempts, self.retry_base_s, self.retry_cap_s)
            values = {"next_attempt_at": now + timedelta(seconds=delay), "last_error": error}
        async with self.rt.transaction() as session:
            await session.execute(update(webhook_deliveries).where(webhook_deliveries.c.id == row.id)
                                  .values(attempts=attempts, last_status_code=code, **values))
        if error:
            log.info("webhook delivery failed", delivery_id=row.id, attempts=attempts, error=error)
