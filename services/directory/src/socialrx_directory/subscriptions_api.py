"""A charity's webhook subscriptions, their delivery log, and replays: the HTTP edge of `subscriptions`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from socialrx_shared.auth import Principal, require
from socialrx_shared.http import Page, PerPage
from socialrx_shared.service import runtime_of

from . import domain, subscriptions

router = APIRouter(tags=["subscriptions"])
EventName = Literal[domain.WEBHOOK_EVENTS]  # type: ignore[valid-type]


class NewSubscription(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000, pattern=r"^https?://[^\s/]+")]
    events: list[EventName] = Field(min_length=1, max_length=len(domain.WEBHOOK_EVENTS))


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "url": row["url"],
        "events": row["events"],
        "active": row["active"],
        "created_at": row["created_at"],
    }


@router.post(
    "/subscriptions",
    status_code=201,
    summary="Receive your organisation's referral events at a URL (charity); the secret is shown once",
)
async def create_subscription(
    body: NewSubscription, request: Request, principal: Principal = Depends(require("charity"))
) -> dict[str, Any]:
    settings = request.app.state.settings
    row = await subscriptions.create(
        runtime_of(request),
        principal.organisation_id,
        body.url,
        list(body.events),
        allow_http=settings.webhook_allow_http,
        allow_private_networks=settings.webhook_allow_private_networks,
    )
    return {
        **_public(row),
        "secret": row["secret"],
        "signature": "X-Socialrx-Signature: v1=hex(HMAC-SHA256(secret, X-Socialrx-Timestamp + '.' + body))",
    }


@router.get("/subscriptions", summary="Your organisation's subscriptions (charity); secrets are never shown again")
async def list_subscriptions(request: Request, principal: Principal = Depends(require("charity"))) -> dict[str, Any]:
    rows = await subscriptions.of_organisation(runtime_of(request), principal.organisation_id)
    return {"items": [_public(r) for r in rows]}


@router.delete("/subscriptions/{subscription_id}", status_code=204, summary="Stop a subscription (charity)")
async def delete_subscription(
    subscription_id: str, request: Request, principal: Principal = Depends(require("charity"))
) -> None:
    await subscriptions.stop(runtime_of(request), principal.organisation_id, subscription_id)


@router.get("/subscriptions/{subscription_id}/deliveries", summary="Delivery log of a subscription (charity)")
async def list_deliveries(
    subscription_id: str,
    request: Request,
    principal: Principal = Depends(require("charity")),
    status: Annotated[Literal["pending", "delivered", "failed"] | None, Query()] = None,
    page: Page = 1,
    per_page: PerPage = 50,
) -> dict[str, Any]:
    total, rows = await subscriptions.deliveries_page(
        runtime_of(request), principal.organisation_id, subscription_id, status, page, per_page
    )
    return {"items": rows, "page": page, "per_page": per_page, "total": total}


@router.post(
    "/subscriptions/{subscription_id}/deliveries/{delivery_id}/replay",
    status_code=202,
    summary="Send a delivery again, now (charity); receivers de-duplicate by X-Socialrx-Event-Id",
)
async def replay_delivery(
    subscription_id: str, delivery_id: int, request: Request, principal: Principal = Depends(require("charity"))
) -> dict[str, Any]:
    await subscriptions.replay(runtime_of(request), principal.organisation_id, subscription_id, delivery_id)
    return {"id": delivery_id, "status": "pending"}
