"""A charity's webhook subscriptions: create, list, stop; the delivery log and replays. One transaction
each; a refusal is a typed error (`socialrx_shared.errors`). Delivery itself is `webhooks.py`."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import func, insert, select, update

from socialrx_shared.errors import Conflict, Invalid, NotFound
from socialrx_shared.runtime import ServiceRuntime

from .store import subscriptions, webhook_deliveries
from .webhooks import new_secret, url_refusal

MAX_SUBSCRIPTIONS = 10
NOT_YOURS = "no such subscription for your organisation"


async def create(
    rt: ServiceRuntime,
    organisation_id: str | None,
    url: str,
    events: list[str],
    *,
    allow_http: bool,
    allow_private_networks: bool,
) -> dict[str, Any]:
    """A new active subscription; its row holds the secret, which the caller shows once."""
    if url.startswith("http://") and not allow_http:
        raise Invalid("a webhook url must use https:// (events are about people's referrals)")
    where = await url_refusal(url, allow_private_networks)
    if where:
        raise Invalid(f"this webhook url cannot be used: {where}. Use a public https:// address of your own service")
    if len(set(events)) != len(events):
        raise Invalid("events lists an event twice")
    row = {
        "id": str(uuid.uuid4()),
        "organisation_id": organisation_id,
        "url": url,
        "events": list(events),
        "secret": new_secret(),
        "active": True,
        "created_at": datetime.now(timezone.utc),
    }
    async with rt.transaction() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(subscriptions)
            .where(subscriptions.c.organisation_id == organisation_id, subscriptions.c.active.is_(True))
        )
        if (count or 0) >= MAX_SUBSCRIPTIONS:
            raise Conflict(f"at most {MAX_SUBSCRIPTIONS} active subscriptions per organisation")
        await session.execute(insert(subscriptions).values(**row))
    return row


async def of_organisation(rt: ServiceRuntime, organisation_id: str | None) -> list[dict[str, Any]]:
    """Every subscription of an organisation, oldest first (stopped ones too)."""
    query = (
        select(subscriptions)
        .where(subscriptions.c.organisation_id == organisation_id)
        .order_by(subscriptions.c.created_at)
    )
    async with rt.sessionmaker() as session:
        return [dict(r) for r in (await session.execute(query)).mappings().all()]


async def own(rt: ServiceRuntime, organisation_id: str | None, subscription_id: str) -> dict[str, Any]:
    """The organisation's subscription, or `NotFound` (also when it is another organisation's)."""
    query = select(subscriptions).where(
        subscriptions.c.id == subscription_id, subscriptions.c.organisation_id == organisation_id
    )
    async with rt.sessionmaker() as session:
        row = (await session.execute(query)).mappings().first()
    if row is None:
        raise NotFound(NOT_YOURS)
    return dict(row)


async def stop(rt: ServiceRuntime, organisation_id: str | None, subscription_id: str) -> None:
    """Stop a subscription; deliveries still waiting are marked failed, so none is sent after."""
    await own(rt, organisation_id, subscription_id)
    async with rt.transaction() as session:
        await session.execute(update(subscriptions).where(subscriptions.c.id == subscription_id).values(active=False))
        await session.execute(
            update(webhook_deliveries)
            .where(webhook_deliveries.c.subscription_id == subscription_id, webhook_deliveries.c.status == "pending")
            .values(status="failed", last_error="subscription stopped")
        )


async def deliveries_page(
    rt: ServiceRuntime, organisation_id: str | None, subscription_id: str, status: str | None, page: int, per_page: int
) -> tuple[int, list[dict[str, Any]]]:
    """(how many, this page of) a subscription's delivery log, oldest first; never the body sent."""
    await own(rt, organisation_id, subscription_id)
    query = select(
        webhook_deliveries.c.id,
        webhook_deliveries.c.event_id,
        webhook_deliveries.c.event_type,
        webhook_deliveries.c.status,
        webhook_deliveries.c.attempts,
        webhook_deliveries.c.last_status_code,
        webhook_deliveries.c.last_error,
        webhook_deliveries.c.next_attempt_at,
        webhook_deliveries.c.created_at,
        webhook_deliveries.c.delivered_at,
    ).where(webhook_deliveries.c.subscription_id == subscription_id)
    if status:
        query = query.where(webhook_deliveries.c.status == status)
    async with rt.sessionmaker() as session:
        total = await session.scalar(select(func.count()).select_from(query.subquery()))
        page_query = query.order_by(webhook_deliveries.c.id).offset((page - 1) * per_page).limit(per_page)
        rows = (await session.execute(page_query)).mappings().all()
    return total or 0, [dict(r) for r in rows]


async def replay(rt: ServiceRuntime, organisation_id: str | None, subscription_id: str, delivery_id: int) -> None:
    """Send a delivery again, now: it is pending with its attempts reset."""
    sub = await own(rt, organisation_id, subscription_id)
    if not sub["active"]:
        raise Conflict("this subscription was stopped; create a new one")
    async with rt.transaction() as session:
        replayed = await session.scalar(
            update(webhook_deliveries)
            .where(webhook_deliveries.c.id == delivery_id, webhook_deliveries.c.subscription_id == subscription_id)
            .values(status="pending", attempts=0, next_attempt_at=datetime.now(timezone.utc), last_error=None)
            .returning(webhook_deliveries.c.id)
        )
    if replayed is None:
        raise NotFound("no such delivery in this subscription")
