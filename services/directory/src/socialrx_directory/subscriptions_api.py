"""A charity's webhook subscriptions, their delivery log, and replays."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import func, insert, select, update

from socialrx_shared.auth import Principal, require
from socialrx_shared.http import Page, PerPage
from socialrx_shared.service import runtime_of

from . import domain
from .store import subscriptions, webhook_deliveries
from .webhooks import new_secret, url_refusal

router = APIRouter(tags=["subscriptions"])
MAX_SUBSCRIPTIONS = 10
EventName = Literal[domain.WEBHOOK_EVENTS]  # type: ignore[valid-type]


class NewSubscription(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000, pattern=r"^https?://[^\s/]+")]
    events: list[EventName] = Field(min_length=1, max_length=len(domain.WEBHOOK_EVENTS))


def _public(row) -> dict:
    return {
        "id": row["id"],
        "url": row["url"],
        "events": row["events"],
        "active": row["active"],
        "created_at": row["created_at"],
    }


async def _own_subscription(request: Request, principal: Principal, subscription_id: str) -> dict:
    async with runtime_of(request).sessionmaker() as session:
        row = (
            (
                await session.execute(
                    select(subscriptions).where(
                        subscriptions.c.id == subscription_id,
                        subscriptions.c.organisation_id == principal.organisation_id,
                    )
                )
            )
            .mappings()
            .first()
        )
    if row is None:
        raise HTTPException(404, detail="no such subscription for your organisation")
    return dict(row)


@router.post(
    "/subscriptions",
    status_code=201,
    summary="Receive your organisation's referral events at a URL (charity); the secret is shown once",
)
async def create_subscription(
    body: NewSubscription, request: Request, principal: Principal = Depends(require("charity"))
) -> dict:
    if body.url.startswith("http://") and not request.app.state.settings.webhook_allow_http:
        raise HTTPException(422, detail="a webhook url must use https:// (events are about people's referrals)")
    settings = request.app.state.settings
    where = await url_refusal(body.url, settings.webhook_allow_private_networks)
    if where:
        raise HTTPException(
            422, detail=f"this webhook url cannot be used: {where}. Use a public https:// address of your own service"
        )
    if len(set(body.events)) != len(body.events):
        raise HTTPException(422, detail="events lists an event twice")
    row = {
        "id": str(uuid.uuid4()),
        "organisation_id": principal.organisation_id,
        "url": body.url,
        "events": list(body.events),
        "secret": new_secret(),
        "active": True,
        "created_at": datetime.now(timezone.utc),
    }
    async with runtime_of(request).transaction() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(subscriptions)
            .where(subscriptions.c.organisation_id == principal.organisation_id, subscriptions.c.active.is_(True))
        )
        if (count or 0) >= MAX_SUBSCRIPTIONS:
            raise HTTPException(409, detail=f"at most {MAX_SUBSCRIPTIONS} active subscriptions per organisation")
        await session.execute(insert(subscriptions).values(**row))
    return {
        **_public(row),
        "secret": row["secret"],
        "signature": "X-Socialrx-Signature: v1=hex(HMAC-SHA256(secret, X-Socialrx-Timestamp + '.' + body))",
    }


@router.get("/subscriptions", summary="Your organisation's subscriptions (charity); secrets are never shown again")
async def list_subscriptions(request: Request, principal: Principal = Depends(require("charity"))) -> dict:
    async with runtime_of(request).sessionmaker() as session:
        rows = (
            (
                await session.execute(
                    select(subscriptions)
                    .where(subscriptions.c.organisation_id == principal.organisation_id)
                    .order_by(subscriptions.c.created_at)
                )
            )
            .mappings()
            .all()
        )
    return {"items": [_public(r) for r in rows]}


@router.delete("/subscriptions/{subscription_id}", status_code=204, summary="Stop a subscription (charity)")
async def delete_subscription(
    subscription_id: str, request: Request, principal: Principal = Depends(require("charity"))
) -> None:
    await _own_subscription(request, principal, subscription_id)
    async with runtime_of(request).transaction() as session:
        await session.execute(update(subscriptions).where(subscriptions.c.id == subscription_id).values(active=False))
        await session.execute(
            update(webhook_deliveries)
            .where(webhook_deliveries.c.subscription_id == subscription_id, webhook_deliveries.c.status == "pending")
            .values(status="failed", last_error="subscription stopped")
        )


@router.get("/subscriptions/{subscription_id}/deliveries", summary="Delivery log of a subscription (charity)")
async def list_deliveries(
    subscription_id: str,
    request: Request,
    principal: Principal = Depends(require("charity")),
    status: Annotated[Literal["pending", "delivered", "failed"] | None, Query()] = None,
    page: Page = 1,
    per_page: PerPage = 50,
) -> dict:
    await _own_subscription(request, principal, subscription_id)
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
    async with runtime_of(request).sessionmaker() as session:
        total = await session.scalar(select(func.count()).select_from(query.subquery()))
        rows = (
            (
                await session.execute(
                    query.order_by(webhook_deliveries.c.id).offset((page - 1) * per_page).limit(per_page)
                )
            )
            .mappings()
            .all()
        )
    return {"items": [dict(r) for r in rows], "page": page, "per_page": per_page, "total": total}


@router.post(
    "/subscriptions/{subscription_id}/deliveries/{delivery_id}/replay",
    status_code=202,
    summary="Send a delivery again, now (charity); receivers de-duplicate by X-Socialrx-Event-Id",
)
async def replay_delivery(
    subscription_id: str, delivery_id: int, request: Request, principal: Principal = Depends(require("charity"))
) -> dict:
    sub = await _own_subscription(request, principal, subscription_id)
    if not sub["active"]:
        raise HTTPException(409, detail="this subscription was stopped; create a new one")
    async with runtime_of(request).transaction() as session:
        replayed = await session.scalar(
            update(webhook_deliveries)
            .where(webhook_deliveries.c.id == delivery_id, webhook_deliveries.c.subscription_id == subscription_id)
            .values(status="pending", attempts=0, next_attempt_at=datetime.now(timezone.utc), last_error=None)
            .returning(webhook_deliveries.c.id)
        )
    if replayed is None:
        raise HTTPException(404, detail="no such delivery in this subscription")
    return {"id": delivery_id, "status": "pending"}
