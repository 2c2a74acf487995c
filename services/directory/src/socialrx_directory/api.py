"""The directory's management API: organisations, services, a charity's inbox and its decisions."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timezone
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import func, insert, select, update

from socialrx_shared.auth import Principal, forbidden, require
from socialrx_shared.events import (
    ORGANISATION_REGISTERED, DeclineReason, NeedCode, OrganisationRegistered, ServiceStatus,
)
from socialrx_shared.http import Page, PerPage
from socialrx_shared.service import runtime_of

from . import asyncapi, commands, domain, importer
from .store import organizations, referral_inbox, services, taxonomy_terms

router = APIRouter()

Text200 = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Postcode = Annotated[str, StringConstraints(strip_whitespace=True, to_upper=True,
                                            pattern=r"^[A-Z]{1,2}[0-9][A-Z0-9]? ?[0-9][A-Z]{2}$")]


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


def _service_out(row: dict) -> dict:
    gate = domain.gate(row["status"], row["capacity"], row["safeguarding_policy_valid_until"],
                       datetime.now(timezone.utc).date())
    return {
        "id": row["id"], "organization_id": row["organization_id"], "name": row["name"],
        "description": row["description"], "needs": row["needs"], "capacity": row["capacity"],
        "safeguarding_policy_valid_until": row["safeguarding_policy_valid_until"], "status": row["status"],
        "postcode": row["postcode"], "email": row["email"], "url": row["url"], "version": row["version"],
        "location_name": row["location_name"], "address_1": row["address_1"], "city": row["city"],
        "latitude": row["latitude"], "longitude": row["longitude"],
        "accepting_referrals": gate.accepting_referrals, "not_accepting_reason": gate.reason,
        "updated_at": row["updated_at"],
    }


def _normal_postcode(value: str | None) -> str | None:
    if value is None:
        return None
    compact = value.replace(" ", "")
    return f"{compact[:-3]} {compact[-3:]}"


async def _check_needs(session, needs: list[str] | None) -> None:
    """Needs are the directory's taxonomy terms: a typo must not make a service unfindable."""
    if not needs:
        return
    known = set((await session.execute(select(taxonomy_terms.c.code).where(taxonomy_terms.c.code.in_(needs)))).scalars())
    unknown = sorted(set(needs) - known)
    if unknown:
        raise HTTPException(422, detail=f"unknown need code(s): {', '.join(unknown)}; GET /taxonomy_terms lists "
                                        "them, and an admin can add one with POST /taxonomy_terms")


def _may_manage(principal: Principal, organization_id: str) -> None:
    if principal.role == "charity" and principal.organisation_id != organization_id:
        raise forbidden("a charity manages only its own organisation's services")


@router.post("/organizations", status_code=201, tags=["management"], summary="Add an organisation (admin)")
async def create_organization(body: NewOrganization, request: Request,
                              principal: Principal = Depends(require("admin"))) -> dict:
    now = datetime.now(timezone.utc)
    row = {"id": str(uuid.uuid4()), **body.model_dump(), "created_at": now, "updated_at": now}
    rt = runtime_of(request)
    async with rt.transaction() as session:
        await session.execute(insert(organizations).values(**row))
        # Announced through the outbox with the row: the ledger funds only organisations it has heard of.
        await rt.stage(session, ORGANISATION_REGISTERED,
                       OrganisationRegistered(organisation_id=row["id"], name=row["name"], registered_at=now))
    return row


@router.post("/taxonomy_terms", status_code=201, tags=["management"],
             summary="Add a need code to the directory's taxonomy (admin)")
async def create_taxonomy_term(body: NewTerm, request: Request, principal: Principal = Depends(require("admin"))) -> dict:
    row = {"id": str(uuid.uuid4()), **body.model_dump(), "vocabulary": domain.NEEDS_VOCABULARY}
    async with runtime_of(request).transaction() as session:
        if await session.scalar(select(taxonomy_terms.c.id).where(taxonomy_terms.c.code == body.code)):
            raise HTTPException(409, detail=f"the need code {body.code!r} already exists")
        await session.execute(insert(taxonomy_terms).values(**row))
    return row


@router.post("/services", status_code=201, tags=["management"],
             summary="Add a service (admin, or a charity for its own organisation); publishes service.updated")
async def create_service(body: NewService, request: Request,
                         principal: Principal = Depends(require("admin", "charity")),
                         allow_duplicate: bool = Query(False, description="create even if the same organisation has a service of this name at this postcode")) -> dict:
    _may_manage(principal, body.organization_id)
    rt = runtime_of(request)
    now = datetime.now(timezone.utc)
    postcode = _normal_postcode(body.postcode)
    async with rt.transaction() as session:
        if not await session.scalar(select(organizations.c.id).where(organizations.c.id == body.organization_id)):
            raise HTTPException(422, detail=f"no organisation {body.organization_id!r}: create it first")
        await _check_needs(session, body.needs)
        duplicate = await session.scalar(
            select(services.c.id).where(services.c.organization_id == body.organization_id,
                                        func.lower(services.c.name) == body.name.lower(),
                                        services.c.postcode.is_not_distinct_from(postcode))
        )
        if duplicate and not allow_duplicate:
            raise HTTPException(409, detail={"message": "this organisation already has a service of this name at "
                                             "this postcode; update it, or pass allow_duplicate=true",
                                             "existing_service_id": duplicate})
        service_id = str(uuid.uuid4())
        await session.execute(insert(services).values(
            id=service_id, organization_id=body.organization_id, name=body.name, description=body.description or "",
            needs=body.needs, capacity=body.capacity, safeguarding_policy_valid_until=body.safeguarding_policy_valid_until,
            status=body.status, postcode=postcode, email=body.email, url=body.url, version=0,
            location_name=body.location_name, address_1=body.address_1, city=body.city,
            latitude=body.latitude, longitude=body.longitude,
            location_id=domain.derived_id(service_id, "location"),
            service_at_location_id=domain.derived_id(service_id, "service_at_location"),
            published_accepting=False, created_at=now, updated_at=now,
        ))
        await commands.stage_service_updated(rt, session, service_id)
        row = (await session.execute(select(services).where(services.c.id == service_id))).mappings().one()
    return _service_out(dict(row))


@router.patch("/services/{service_id}", tags=["management"],
              summary="Change a service (admin, or its own charity); publishes service.updated")
async def update_service(service_id: str, body: ServiceFields, request: Request,
                         principal: Principal = Depends(require("admin", "charity"))) -> dict:
    rt = runtime_of(request)
    changes = body.model_dump(exclude_unset=True)
    if "postcode" in changes:
        changes["postcode"] = _normal_postcode(changes["postcode"])
    for required in ("name", "needs", "capacity", "status"):
        if required in changes and changes[required] is None:
            raise HTTPException(422, detail=f"{required} cannot be removed")
    async with rt.transaction() as session:
        owner = await session.scalar(select(services.c.organization_id).where(services.c.id == service_id).with_for_update())
        if owner is None:
            raise HTTPException(404, detail="no such service")
        _may_manage(principal, owner)
        await _check_needs(session, changes.get("needs"))
        if changes:
            await session.execute(update(services).where(services.c.id == service_id).values(**changes))
        await commands.stage_service_updated(rt, session, service_id)
        row = (await session.execute(select(services).where(services.c.id == service_id))).mappings().one()
    return _service_out(dict(row))


@router.get("/inbox", tags=["referrals"], summary="Referrals sent to your organisation (charity)")
async def get_inbox(request: Request, principal: Principal = Depends(require("charity")),
                    status_filter: Annotated[Literal["received", "accepted", "declined", "finished"] | None, Query(alias="status")] = None,
                    page: Page = 1, per_page: PerPage = 50) -> dict:
    query = select(referral_inbox).where(referral_inbox.c.organisation_id == principal.organisation_id)
    if status_filter:
        query = query.where(referral_inbox.c.status == status_filter)
    async with runtime_of(request).sessionmaker() as session:
        total = await session.scalar(select(func.count()).select_from(query.subquery()))
        rows = (await session.execute(query.order_by(referral_inbox.c.referred_at).offset((page - 1) * per_page).limit(per_page))).mappings().all()
    # When an unanswered referral will be declined automatically, so a charity's pages need not know the rule.
    items = [{**r, "auto_decline_at": r["referred_at"] + domain.AUTO_DECLINE_AFTER if r["status"] == domain.DECIDABLE
              else None} for r in rows]
    return {"items": items, "page": page, "per_page": per_page, "total": total}


async def _decide(request: Request, principal: Principal, referral_id: str, action) -> dict:
    rt = runtime_of(request)
    try:
        async with rt.transaction() as session:
            owner = await session.scalar(select(referral_inbox.c.organisation_id).where(referral_inbox.c.referral_id == referral_id))
            if owner is None or owner != principal.organisation_id:
                raise HTTPException(404, detail="no such referral in your organisation's inbox")
            event = await action(rt, session)
    except commands.NotFound:
        raise HTTPException(404, detail="no such referral in your organisation's inbox") from None
    except domain.DecisionConflict as exc:
        raise HTTPException(409, detail=str(exc)) from None
    return event.model_dump(mode="json")


@router.post("/referrals/{referral_id}/accept", tags=["referrals"], summary="Accept a referral (its charity)")
async def accept_referral(referral_id: str, request: Request, principal: Principal = Depends(require("charity"))) -> dict:
    return await _decide(request, principal, referral_id,
                         lambda rt, session: commands.accept(rt, session, referral_id, principal.sub))


@router.post("/referrals/{referral_id}/decline", tags=["referrals"], summary="Decline a referral with a reason (its charity)")
async def decline_referral(referral_id: str, body: Decline, request: Request,
                           principal: Principal = Depends(require("charity"))) -> dict:
    return await _decide(request, principal, referral_id,
                         lambda rt, session: commands.decline(rt, session, referral_id, body.reason, principal.sub))


@router.post("/imports", tags=["management"],
             summary="Import an Open Referral UK feed (admin): good records are upserted, bad ones reported")
async def import_feed(request: Request, feed: Annotated[Any, Body(description="ORUK JSON: a page, a list of services, "
                                                                         "a service, or an organization with services")],
                      principal: Principal = Depends(require("admin"))) -> dict:
    try:
        report = await importer.import_feed(runtime_of(request), feed)
    except importer.BadFeed as exc:
        raise HTTPException(422, detail=str(exc)) from None
    if report["skipped"] and not report["imported"]:
        raise HTTPException(422, detail={"message": "no record of the feed could be imported", **report})
    return report


@router.get("/referral-stats", tags=["referrals"],
            summary="Acceptance rate and typical (median) reply time per service (open)")
async def referral_stats(request: Request, service_id: Annotated[str | None, Query(max_length=64)] = None) -> dict:
    reply_s = func.extract("epoch", referral_inbox.c.decided_at - referral_inbox.c.referred_at)
    query = select(referral_inbox.c.service_id, referral_inbox.c.status, referral_inbox.c.decline_reason,
                   reply_s.label("reply_s"))
    if service_id is not None:
        query = query.where(referral_inbox.c.service_id == service_id)
    async with runtime_of(request).sessionmaker() as session:
        rows = (await session.execute(query)).all()
    by_service: dict[str, tuple[list[domain.Decision], list[int]]] = {}
    for row in rows:
        decisions, pending = by_service.setdefault(row.service_id, ([], [0]))
        if row.status == domain.DECIDABLE:
            pending[0] += 1
        else:
            decisions.append(domain.Decision(row.status, row.decline_reason, float(row.reply_s or 0)))
    return {"items": [{"service_id": sid, **domain.referral_stats(decisions, pending[0])}
                      for sid, (decisions, pending) in sorted(by_service.items())]}


@router.get("/asyncapi", tags=["events"], summary="AsyncAPI document of the topics the directory publishes")
async def asyncapi_document(request: Request) -> dict:
    return asyncapi.document(runtime_of(request).settings.kafka_bootstrap_servers)
