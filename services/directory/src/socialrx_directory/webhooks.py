"""Webhook deliveries of a charity's referral events: fan-out in the event's transaction, then a worker.

`publish` stages an event for Kafka (outbox) and, in the same transaction, one delivery row per
matching subscription of the event's organisation, so a delivery exists exactly when the event
does and survives restarts. The worker claims due rows with a short lease (so the HTTP call runs
outside any transaction and a crashed worker's rows come back), posts the CloudEvents envelope —
the very bytes that went to Kafka — signed, and records the outcome with exponential backoff.

Safety of the call (a charity chooses the URL, so the directory must not become a way into its own
network): the name is resolved at delivery time, every address it resolves to is checked (no
loopback, private, link-local, multicast, unspecified or reserved address), and the connection goes
to the checked address itself — the URL's host is kept for the Host header, TLS SNI and certificate
check — so a DNS answer that changes between check and connect (rebinding) cannot move the call.
Redirects are not followed, the whole call has one deadline, and the log keeps only the status
code or a generic error, never what the receiver answered.

Order and fairness: deliveries of one subscription go one at a time in id order (a later one is not
claimed while an earlier one waits for its retry); different subscriptions are delivered
concurrently, up to `concurrency` at once, so one slow receiver holds up nobody else.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

import httpx
from sqlalchemy import and_, exists, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

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
BATCH = 50
RESOLVE_TIMEOUT_S = 5.0


class AddressRefused(Exception):
    """The URL's host is, or resolves to, an address inside a network."""


class HostUnresolved(Exception):
    """The URL's host name did not resolve (now)."""


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


async def publish(
    rt: ServiceRuntime, session: AsyncSession, spec: EventSpec, data: Strict, organisation_id: str
) -> Envelope:
    envelope = await rt.stage(session, spec, data)
    await enqueue(session, organisation_id, envelope)
    return envelope


async def enqueue(session: AsyncSession, organisation_id: str, envelope: Envelope) -> None:
    """One delivery per active subscription of this organisation that asked for this event."""
    await enqueue_many(session, [(organisation_id, envelope)])


async def enqueue_many(session: AsyncSession, items: list[tuple[str, Envelope]]) -> None:
    """`enqueue` for many events (organisation, envelope): one query for the subscriptions, one
    multi-row insert for the deliveries, in the order given."""
    if not items:
        return
    wanted = {(organisation_id, envelope.spec.name) for organisation_id, envelope in items}
    found = (
        await session.execute(
            select(subscriptions.c.id, subscriptions.c.organisation_id, subscriptions.c.events).where(
                subscriptions.c.organisation_id.in_(sorted({o for o, _ in wanted})),
                subscriptions.c.active.is_(True),
            )
        )
    ).all()
    subs: dict[tuple[str, str], list] = {}
    for sub in found:
        for event_name in sub.events:
            if (sub.organisation_id, event_name) in wanted:
                subs.setdefault((sub.organisation_id, event_name), []).append(sub.id)
    now = datetime.now(timezone.utc)
    rows = [
        {
            "subscription_id": sub_id,
            "organisation_id": organisation_id,
            "event_id": envelope.id,
            "event_type": envelope.type,
            "body": envelope.to_bytes(),
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        for organisation_id, envelope in items
        for sub_id in sorted(subs.get((organisation_id, envelope.spec.name), []))
    ]
    if rows:
        await session.execute(
            pg_insert(webhook_deliveries).on_conflict_do_nothing(index_elements=["subscription_id", "event_id"]),
            rows,
        )


def signed_headers(
    secret: str, body: bytes, event_id: str, event_type: str, now: float | None = None
) -> dict[str, str]:
    timestamp = str(int(now if now is not None else time.time()))
    return {
        "Content-Type": "application/cloudevents+json",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: "v1=" + domain.signature(secret, timestamp, body),
        EVENT_ID_HEADER: event_id,
        EVENT_TYPE_HEADER: event_type,
    }


def _default_port(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


async def resolve_public(host: str, port: int) -> str:
    """One public address of `host`, after checking every address it resolves to; else AddressRefused.

    Every address, not just the first: a name answering both a public and a private address must
    not be a coin toss.
    """
    refusal = domain.host_refusal(host)
    if refusal:
        raise AddressRefused(refusal)
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_S
        )
    except (TimeoutError, OSError) as exc:
        raise HostUnresolved("the host name did not resolve") from exc
    addresses = [str(info[4][0]) for info in infos]
    for address in addresses:
        problem = domain.address_refusal(domain.literal_address(address.split("%")[0]))  # type: ignore[arg-type]
        if problem:
            raise AddressRefused(problem)
    return addresses[0]


async def url_refusal(url: str, allow_private_networks: bool) -> str | None:
    """Why a subscription to `url` is refused for where it points, or None.

    A name that does not resolve (yet) passes here: delivery resolves and checks again every time.
    """
    if allow_private_networks:
        return None
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "it is not a valid URL"
    try:
        await resolve_public(parsed.host, _default_port(parsed))
    except AddressRefused as exc:
        return str(exc)
    except HostUnresolved:
        return None
    return None


def _pinned(url: httpx.URL, address: str) -> tuple[httpx.URL, dict[str, str], dict]:
    """The URL aimed at `address`, with the Host header and TLS name of the original host."""
    host_header = url.netloc.decode("ascii")
    extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
    return url.copy_with(host=address), {"Host": host_header}, extensions


class DeliveryWorker:
    def __init__(
        self,
        rt: ServiceRuntime,
        *,
        retry_base_s: float,
        retry_cap_s: float,
        max_attempts: int,
        timeout_s: float = 10.0,
        concurrency: int = 8,
        allow_private_networks: bool = False,
    ) -> None:
        self.rt = rt
        self.retry_base_s = retry_base_s
        self.retry_cap_s = retry_cap_s
        self.max_attempts = max_attempts
        self.timeout_s = timeout_s
        self.concurrency = concurrency
        self.allow_private_networks = allow_private_networks
        self._in_flight: dict[str, asyncio.Task] = {}  # subscription id -> its delivering task

    async def poll(self) -> int:
        """Claim due deliveries of subscriptions not already in flight and start them; do not wait."""
        self._in_flight = {sub: task for sub, task in self._in_flight.items() if not task.done()}
        free = self.concurrency - len(self._in_flight)
        if free <= 0:
            return 0
        claimed = await self._claim(busy=set(self._in_flight))
        groups: dict[str, list] = {}
        for row in claimed:
            groups.setdefault(row.subscription_id, []).append(row)
        # A subscription's rows go one after another, each up to the deadline: take only as many as
        # surely finish within the lease, or another replica could claim the rest meanwhile.
        per_subscription = max(1, int(LEASE.total_seconds() // (self.timeout_s + 1)))
        started = [(sub, rows[:per_subscription]) for sub, rows in list(groups.items())[:free]]
        # The rest (over the limits) give their lease back at once, for the next round.
        await self._release(
            [r for _, rows in list(groups.items())[free:] for r in rows]
            + [r for _, rows in list(groups.items())[:free] for r in rows[per_subscription:]]
        )
        for subscription_id, rows in started:
            self._in_flight[subscription_id] = asyncio.create_task(
                self._deliver_in_order(rows), name=f"webhook-{subscription_id}"
            )
        return sum(len(rows) for _, rows in started)

    async def run_once(self) -> int:
        """Claim, deliver and wait for the deliveries to finish (tests and one-off runs)."""
        count = await self.poll()
        await self.drain()
        return count

    async def drain(self, grace_s: float | None = None) -> None:
        """Wait for deliveries in flight; at shutdown (`grace_s`), cancel what is still going after it.

        A cancelled delivery is not lost: its row keeps its lease and is claimed again once it expires.
        """
        tasks = list(self._in_flight.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def stop(self) -> None:
        await self.drain(grace_s=self.timeout_s + 1)

    async def _claim(self, busy: set[str]) -> list:
        now = datetime.now(timezone.utc)
        earlier = aliased(webhook_deliveries)
        # An earlier delivery of the same subscription still waiting (its retry, or its lease while in
        # flight) holds the later ones back: a receiver sees one subscription's events in order.
        waiting_before = exists().where(
            and_(
                earlier.c.subscription_id == webhook_deliveries.c.subscription_id,
                earlier.c.status == "pending",
                earlier.c.id < webhook_deliveries.c.id,
                earlier.c.next_attempt_at > now,
            )
        )
        query = (
            select(
                webhook_deliveries.c.id,
                webhook_deliveries.c.subscription_id,
                webhook_deliveries.c.body,
                webhook_deliveries.c.event_id,
                webhook_deliveries.c.event_type,
                webhook_deliveries.c.attempts,
                subscriptions.c.url,
                subscriptions.c.secret,
            )
            .join(subscriptions, subscriptions.c.id == webhook_deliveries.c.subscription_id)
            .where(
                webhook_deliveries.c.status == "pending", webhook_deliveries.c.next_attempt_at <= now, ~waiting_before
            )
            .order_by(webhook_deliveries.c.id)
            .limit(BATCH)
            .with_for_update(of=webhook_deliveries, skip_locked=True)
        )
        if busy:
            query = query.where(webhook_deliveries.c.subscription_id.not_in(busy))
        async with self.rt.transaction() as session:
            rows = (await session.execute(query)).all()
            if rows:
                # The lease: another worker (or this one after a crash) retries only once it expires.
                await session.execute(
                    update(webhook_deliveries)
                    .where(webhook_deliveries.c.id.in_([r.id for r in rows]))
                    .values(next_attempt_at=now + LEASE)
                )
        return list(rows)

    async def _release(self, rows: Iterable) -> None:
        ids = [r.id for r in rows]
        if not ids:
            return
        async with self.rt.transaction() as session:
            await session.execute(
                update(webhook_deliveries)
                .where(webhook_deliveries.c.id.in_(ids), webhook_deliveries.c.status == "pending")
                .values(next_attempt_at=datetime.now(timezone.utc))
            )

    async def _deliver_in_order(self, rows: list) -> None:
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False, trust_env=False) as client:
                for index, row in enumerate(rows):
                    code, error = await self._send(client, row)
                    await self._record(row, code, error)
                    if error is not None:
                        # Later events wait behind this one's retry (order), so they go back unsent.
                        await self._release(rows[index + 1 :])
                        return
        except Exception as exc:  # the database away, say: the leases expire and the rows come back
            log.warning("webhook deliveries interrupted; they will be retried", error=type(exc).__name__)

    async def _send(self, client: httpx.AsyncClient, row) -> tuple[int | None, str | None]:
        headers = signed_headers(row.secret, row.body, str(row.event_id), row.event_type)
        url = httpx.URL(row.url)
        try:
            # One deadline for all of it (resolving, connecting, sending, the answer's headers): a
            # receiver that trickles bytes cannot hold the delivery longer.
            async with asyncio.timeout(self.timeout_s):
                if self.allow_private_networks:
                    target, extra_headers, extensions = url, {}, {}  # type: ignore[var-annotated]
                else:
                    address = await resolve_public(url.host, _default_port(url))
                    target, extra_headers, extensions = _pinned(url, address)
                async with client.stream(
                    "POST", target, content=row.body, headers={**headers, **extra_headers}, extensions=extensions
                ) as response:
                    status_code = response.status_code  # the body is never read: it is not ours to keep
        except AddressRefused:
            return None, "refused: the URL points inside a network"
        except HostUnresolved:
            return None, "the host name did not resolve"
        except TimeoutError:
            return None, f"no answer within {self.timeout_s:g} s"
        except httpx.HTTPError as exc:
            return None, f"could not deliver ({type(exc).__name__})"
        if 200 <= status_code < 300:
            return status_code, None
        return status_code, f"receiver answered {status_code}"

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
            await session.execute(
                update(webhook_deliveries)
                .where(webhook_deliveries.c.id == row.id)
                .values(attempts=attempts, last_status_code=code, **values)
            )
        if error:
            log.info("webhook delivery failed", delivery_id=row.id, attempts=attempts, error=error)
