"""The directory's management API: organisations, services, a charity's inbox and its decisions.

Thin: each route parses the request, calls a command (`commands`, `importer`) or a read (`store`), and
renders the answer. Refusals are the commands' typed errors, turned into HTTP by the shared app.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from socialrx_shared.auth import Principal, require
from socialrx_shared.events import DeclineReason, NeedCode, ServiceStatus
from socialrx_shared.http import Page, PerPage
from socialrx_shared.service import runtime_of

from . import asyncapi, commands, domain, importer, store

router = APIRouter()

Text200 = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Postcode = Annotated[
    str, StringConstraints(strip_whitespace=True, to_upper=True, pattern=r"^[A-Z]{1,2}[0-9][A-Z0-9]? ?[0-9][A-Z]{2}$")
]


class NewOrganization(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Text200
    description: Annotated[str, StringConstraints(max_length=5000)] = ""
    charity_number: Annotated[str, StringConstraints(pattern=r"^[0-9A-Z-]{4,20}$")] | None = None
    email: Annotated[str, StringConstraints(max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")] | None = None
    website: Annotated[str, StringConstraints(max_length=500, pattern=r"^https?://")] | None = None


class ServiceFields(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Text200 | None = None
    description: Annotated[str, StringConstraints(max_length=5000)] | None = None
    needs: list[NeedCode] | None = Field(None, max_length=20)
    capacity: Annotated[int, Field(ge=0, le=100_000)] | None = None
    safeguarding_policy_valid_until: date | None = None
    status: ServiceStatus | None = None
    postcode: Postcode | None = None
    email: Annotated[str, StringConstraints(max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")] | None = None
    url: Annotated[str, StringConstraints(max_length=500, pattern=r"^https?://")] | None = None
    # The service's venue (ORUK location); postcode above is its address's postcode.
    location_name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] | None = None
    address_1: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] | None = None
    city: Annotated[str, StringConstraints(strip_whitespace=True, max_length=100)] | None = None
    latitude: Annotated[float, Field(ge=-90, le=90)] | None = None
    longitude: Annotated[float, Field(ge=-180, le=180)] | None = None


class NewService(ServiceFields):
    organization_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    name: Text200
    needs: list[NeedCode] = Field(min_length=1, max_length=20)
    capacity: Annotated[int, Field(ge=0, le=100_000)]
    status: ServiceStatus = "active"


class NewTerm(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: NeedCode
    name: Text200
    description: Annotated[str, StringConstraints(max_length=2000)] = ""


class Decline(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: DeclineReason


def _service_out(row: dict[str, Any]) -> dict[str, Any]:
    gate = domain.gate(
        row["status"], row["capacity"], row["safeguarding_policy_valid_until"], datetime.now(timezone.utc).date()
    )
    return {
        "id": row["id"],
        "organization_id": row["organization_id"],
        "name": row["name"],
        "description": row["description"],
        "needs": row["needs"],
        "capacity": row["capacity"],
        "safeguarding_policy_valid_until": row["safeguarding_policy_valid_until"],
        "status": row["status"],
        "postcode": row["postcode"],
        "email": row["email"],
        "url": row["url"],
        "version": row["version"],
        "location_name": row["location_name"],
        "address_1": row["address_1"],
        "city": row["city"],
        "latitude": row["latitude"],
        "longitude": row["longitude"],
        "accepting_referrals": gate.accepting_referrals,
        "not_accepting_reason": gate.reason,
        "updated_at": row["updated_at"],
    }


@router.post("/organizations", status_code=201, tags=["management"], summary="Add an organisation (admin)")
async def create_organization(
    body: NewOrganization, request: Request, principal: Principal = Depends(require("admin"))
) -> dict[str, Any]:
    return await commands.register_organization(runtime_of(request), body.model_dump())


@router.post(
    "/taxonomy_terms",
    status_code=201,
    tags=["management"],
    summary="Add a need code to the directory's taxonomy (admin)",
)
async def create_taxonomy_term(
    body: NewTerm, request: Request, principal: Principal = Depends(require("admin"))
) -> dict[str, Any]:
    return await commands.add_taxonomy_term(runtime_of(request), body.model_dump())


@router.post(
    "/services",
    status_code=201,
    tags=["management"],
    summary="Add a service (admin, or a charity for its own organisation); publishes service.updated",
)
async def create_service(
    body: NewService,
    request: Request,
    principal: Principal = Depends(require("admin", "charity")),
    allow_duplicate: bool = Query(
        False, description="create even if the same organisation has a service of this name at this postcode"
    ),
) -> dict[str, Any]:
    row = await commands.add_service(
        runtime_of(request), principal.role, principal.organisation_id, body.model_dump(), allow_duplicate
    )
    return _service_out(row)


@router.patch(
    "/services/{service_id}",
    tags=["management"],
    summary="Change a service (admin, or its own charity); publishes service.updated",
)
async def update_service(
    service_id: str, body: ServiceFields, request: Request, principal: Principal = Depends(require("admin", "charity"))
) -> dict[str, Any]:
    row = await commands.change_service(
        runtime_of(request), principal.role, principal.organisation_id, service_id, body.model_dump(exclude_unset=True)
    )
    return _service_out(row)


@router.get("/inbox", tags=["referrals"], summary="Referrals sent to your organisation (charity)")
async def get_inbox(
    request: Request,
    principal: Principal = Depends(require("charity")),
    status_filter: Annotated[domain.InboxStatus | None, Query(alias="status")] = None,
    page: Page = 1,
    per_page: PerPage = 50,
) -> dict[str, Any]:
    total, rows = await store.inbox_page(runtime_of(request), principal.organisation_id, status_filter, page, per_page)
    # When an unanswered referral will be declined automatically, so a charity's pages need not know the rule.
    items = [{**r, "auto_decline_at": domain.auto_decline_at(r["status"], r["referred_at"])} for r in rows]
    return {"items": items, "page": page, "per_page": per_page, "total": total}


@router.post("/referrals/{referral_id}/accept", tags=["referrals"], summary="Accept a referral (its charity)")
async def accept_referral(
    referral_id: str, request: Request, principal: Principal = Depends(require("charity"))
) -> dict[str, Any]:
    event = await commands.decide(runtime_of(request), principal.organisation_id, referral_id, principal.sub)
    return event.model_dump(mode="json")


@router.post(
    "/referrals/{referral_id}/decline", tags=["referrals"], summary="Decline a referral with a reason (its charity)"
)
async def decline_referral(
    referral_id: str, body: Decline, request: Request, principal: Principal = Depends(require("charity"))
) -> dict[str, Any]:
    event = await commands.decide(
        runtime_of(request), principal.organisation_id, referral_id, principal.sub, decline_reason=body.reason
    )
    return event.model_dump(mode="json")


@router.post(
    "/imports",
    tags=["management"],
    summary="Import an Open Referral UK feed (admin): good records are upserted, bad ones reported",
)
async def import_feed(
    request: Request,
    feed: Annotated[
        Any, Body(description="ORUK JSON: a page, a list of services, a service, or an organization with services")
    ],
    principal: Principal = Depends(require("admin")),
) -> dict[str, Any]:
    return await importer.import_some(runtime_of(request), feed)


@router.get(
    "/referral-stats", tags=["referrals"], summary="Acceptance rate and typical (median) reply time per service (open)"
)
async def referral_stats(
    request: Request, service_id: Annotated[str | None, Query(max_length=64)] = None
) -> dict[str, Any]:
    by_service: dict[str, tuple[list[domain.Decision], list[int]]] = {}
    for row in await store.decisions(runtime_of(request), service_id):
        decisions, pending = by_service.setdefault(row.service_id, ([], [0]))
        if row.status == domain.DECIDABLE:
            pending[0] += 1
        else:
            decisions.append(domain.Decision(row.status, row.decline_reason, float(row.reply_s or 0)))
    return {
        "items": [
            {"service_id": sid, **domain.referral_stats(decisions, pending[0])}
            for sid, (decisions, pending) in sorted(by_service.items())
        ]
    }


@router.get("/asyncapi", tags=["events"], summary="AsyncAPI document of the topics the directory publishes")
async def asyncapi_document(request: Request) -> dict[str, Any]:
    return asyncapi.document(runtime_of(request).settings.kafka_bootstrap_servers)
