"""referral-intake's HTTP API: create and follow referrals; contact details for the accepting charity."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import date, datetime, timezone
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, field_validator
from sqlalchemy import func, insert, select
from sqlalchemy.dialects.postgresql import array as pg_array
from sqlalchemy.exc import IntegrityError

from socialrx_shared.auth import Principal, forbidden, require
from socialrx_shared.events import (
    REFERRAL_CREATED, REFERRAL_REFUSED, NeedCode, OdsCode, ReferralCreated, ReferralRefused,
)
from socialrx_shared.http import Page, PerPage
from socialrx_shared.runtime import ServiceRuntime
from socialrx_shared.service import runtime_of

from . import domain
from .store import contact_access_audit, person_details, referrals, services_view, timeline

router = APIRouter(tags=["referrals"])

# Who may follow referrals: the link workers of the PCN, the charity they were sent to, admins.
# Finance works from the ledger and has no need of referral details.
READERS = ("link_worker", "charity", "admin")

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class Person(BaseModel):
    model_config = ConfigDict(extra="forbid")
    nhs_number: Annotated[str, StringConstraints(strip_whitespace=True, max_length=12)]
    given_name: Name
    family_name: Name
    date_of_birth: date
    postcode: Annotated[str, StringConstraints(strip_whitespace=True, max_length=10)]
    phone: Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^\+?[0-9 ()-]{6,20}$")] | None = None
    email: Annotated[str, StringConstraints(max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")] | None = None
    accessibility_needs: list[Annotated[str, StringConstraints(max_length=64)]] = Field(default_factory=list, max_length=20)

    @field_validator("nhs_number")
    @classmethod
    def _nhs(cls, value: str) -> str:
        problem = domain.nhs_number_problem(value)
        if problem:
            raise ValueError(f"invalid NHS number: {problem}")
        return domain.normalise_nhs_number(value)

    @field_validator("postcode")
    @classmethod
    def _postcode(cls, value: str) -> str:
        normalised = domain.normalise_postcode(value)
        if normalised is None:
            raise ValueError("not a UK postcode (e.g. 'LS1 4AP')")
        return normalised

    @field_validator("date_of_birth")
    @classmethod
    def _dob(cls, value: date) -> date:
        if value > date.today() or value.year < 1900:
            raise ValueError("date of birth must be a real past date")
        return value


class Consent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    given: bool
    recorded_at: AwareDatetime


class NewReferral(BaseModel):
    model_config = ConfigDict(extra="forbid")
    service_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    needs: list[NeedCode] = Field(min_length=1, max_length=20)
    person: Person
    consent: Consent
    practice_id: OdsCode | None = Field(None, description="The GP practice's ODS code; defaults to the token's practice_id claim")


class TimelineEntry(BaseModel):
    status: str
    at: datetime
    detail: dict


class ReferralOut(BaseModel):
    id: str
    status: Literal["created", "accepted", "declined", "outcome_recorded"]
    service_id: str
    organisation_id: str
    pcn_id: str
    practice_id: str
    link_worker_id: str
    needs: list[str]
    age_band: str
    postcode_district: str
    decline_reason: str | None
    created_at: datetime
    updated_at: datetime
    timeline: list[TimelineEntry]


class ContactOut(BaseModel):
    referral_id: str
    given_name: str
    family_name: str
    phone: str | None
    email: str | None
    postcode: str
    accessibility_needs: list[str]


def _request_hash(body: NewReferral) -> str:
    return hashlib.sha256(json.dumps(body.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


async def _load(rt: ServiceRuntime, referral_id: str) -> ReferralOut | None:
    async with rt.sessionmaker() as session:
        row = (await session.execute(select(referrals).where(referrals.c.id == referral_id))).mappings().first()
        if row is None:
            return None
        entries = (
            await session.execute(
                select(timeline.c.status, timeline.c.at, timeline.c.detail)
                .where(timeline.c.referral_id == referral_id)
                .order_by(timeline.c.at, timeline.c.id)
            )
        ).mappings().all()
    return ReferralOut(**{k: row[k] for k in ReferralOut.model_fields if k != "timeline"},
                       timeline=[TimelineEntry(**e) for e in entries])


def _may_read(principal: Principal, row: ReferralOut) -> bool:
    if principal.role == "admin":
        return True
    if principal.role == "link_worker":
        return principal.pcn_id == row.pcn_id
    return principal.role == "charity" and principal.organisation_id == row.organisation_id


@router.post("/referrals", status_code=status.HTTP_201_CREATED, response_model=ReferralOut,
             summary="Refer a person to a service (link worker)")
async def create_referral(
    body: NewReferral,
    request: Request,
    principal: Principal = Depends(require("link_worker")),
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> ReferralOut:
    rt = runtime_of(request)
    if idempotency_key is not None and not idempotency_key.strip():
        # An empty key is almost always a shell variable that was never set (`$(uuidgen)` failing):
        # treating it as "no key" would silently lose the protection the caller asked for.
        raise HTTPException(400, detail="Idempotency-Key is empty: send a fresh unique value (e.g. a UUID) or "
                                        "leave the header out")
    if not body.consent.given:
        raise HTTPException(422, detail="consent.given must be true: a person must consent before they are referred")
    consent_problem = domain.consent_problem(body.consent.recorded_at, datetime.now(timezone.utc))
    if consent_problem:
        raise HTTPException(422, detail=consent_problem)
    practice_id = body.practice_id or principal.practice_id
    if practice_id is None:
        raise HTTPException(422, detail="practice_id is needed: the GP practice's ODS code, e.g. 'B82005'")
    request_hash = _request_hash(body)
    link_worker_id = domain.link_worker_ref(_ref_key(rt), principal.sub)
    if idempotency_key:
        existing = await _replay(rt, principal, link_worker_id, idempotency_key, request_hash)
        if existing is not None:
            return existing
    referral_id = str(uuid.uuid4())
    try:
        await _create(rt, principal, link_worker_id, body, referral_id, practice_id, idempotency_key, request_hash)
    except IntegrityError:
        # A concurrent request with the same Idempotency-Key won the race: answer with its referral.
        existing = (await _replay(rt, principal, link_worker_id, idempotency_key, request_hash)
                    if idempotency_key else None)
        if existing is None:
            raise
        return existing
    created = await _load(rt, referral_id)
    assert created is not None
    return created


def _ref_key(rt: ServiceRuntime) -> bytes:
    return rt.settings.person_ref_key.get_secret_value().encode()  # type: ignore[attr-defined]


async def _replay(rt: ServiceRuntime, principal: Principal, link_worker_id: str, key: str,
                  request_hash: str) -> ReferralOut | None:
    async with rt.sessionmaker() as session:
        row = (
            await session.execute(
                select(referrals.c.id, referrals.c.request_hash)
                # Rows written before link workers were pseudonymised hold the raw subject.
                .where(referrals.c.link_worker_id.in_([link_worker_id, principal.sub]),
                       referrals.c.idempotency_key == key)
            )
        ).first()
    if row is None:
        return None
    if row.request_hash != request_hash:
        raise HTTPException(409, detail="this Idempotency-Key was used for a different referral: use a new key")
    return await _load(rt, row.id)


async def _create(rt: ServiceRuntime, principal: Principal, link_worker_id: str, body: NewReferral,
                  referral_id: str, practice_id: str, idempotency_key: str | None, request_hash: str) -> None:
    now = datetime.now(timezone.utc)
    person = body.person
    ref_key = _ref_key(rt)
    async with rt.transaction() as session:
        service = (
            await session.execute(select(services_view).where(services_view.c.service_id == body.service_id))
        ).mappings().first()
        refusal = domain.service_refusal(dict(service) if service else None)
        if refusal:
            status_code = 404 if service is None else 409
            if service is not None:
                await _record_refusal(rt, principal, body, dict(service), now, idempotency_key)
            raise HTTPException(status_code, detail=refusal)
        unserved = sorted(set(body.needs) - set(service["needs"]))
        # Only a refused request pays for looking further: which of the unserved needs any service has.
        known_needs = set(await session.scalars(
            select(func.jsonb_array_elements_text(services_view.c.needs)).distinct()
            .where(services_view.c.needs.has_any(pg_array(unserved))))) if unserved else set()
        needs_problem = domain.needs_problem(body.needs, service["needs"], known_needs)
        if needs_problem:
            raise HTTPException(422, detail=needs_problem)
        event = ReferralCreated(
            referral_id=referral_id,
            pcn_id=principal.pcn_id,
            practice_id=practice_id,
            link_worker_id=link_worker_id,  # never the subject itself: it may be an email
            organisation_id=service["organisation_id"],
            service_id=body.service_id,
            needs=body.needs,
            person_ref=domain.person_ref(ref_key, person.nhs_number),
            age_band=domain.age_band(person.date_of_birth, now.date()),
            postcode_district=domain.postcode_district(person.postcode),
            accessibility_needs=person.accessibility_needs,
            consent_to_share=True,
            created_at=now,
        )
        await session.execute(
            insert(referrals).values(
                id=referral_id, pcn_id=event.pcn_id, practice_id=practice_id, link_worker_id=link_worker_id,
                organisation_id=event.organisation_id, service_id=event.service_id, needs=event.needs,
                accessibility_needs=event.accessibility_needs, person_ref=event.person_ref,
                age_band=event.age_band, postcode_district=event.postcode_district, status="created",
                created_at=now, updated_at=now, idempotency_key=idempotency_key, request_hash=request_hash,
            )
        )
        await session.execute(
            insert(person_details).values(
                referral_id=referral_id, nhs_number=person.nhs_number, given_name=person.given_name,
                family_name=person.family_name, date_of_birth=person.date_of_birth, postcode=person.postcode,
                phone=person.phone, email=person.email, consent_recorded_at=body.consent.recorded_at,
            )
        )
        await session.execute(insert(timeline).values(referral_id=referral_id, status="created", at=now,
                                                      detail={"service_id": body.service_id}))
        await rt.stage(session, REFERRAL_CREATED, event)


REFUSALS = uuid.UUID("6f1d2c55-5b8e-4d8c-9a61-2f0e7c1b9d40")


async def _record_refusal(rt: ServiceRuntime, principal: Principal, body: NewReferral, service: dict,
                          now: datetime, idempotency_key: str | None) -> None:
    """Publish the refusal as unmet need (its own transaction: the referral itself is not made).
    Only needs the service serves count: asking a service for what it never offers is not unmet need."""
    needs = [need for need in body.needs if need in service["needs"]]
    if not needs:
        return
    # A retry of the same request (same link worker and Idempotency-Key) keeps its id: counted once.
    refusal_id = (uuid.uuid5(REFUSALS, f"{principal.sub}:{idempotency_key}") if idempotency_key else uuid.uuid4())
    event = ReferralRefused(
        refusal_id=str(refusal_id), pcn_id=principal.pcn_id, organisation_id=service["organisation_id"],
        service_id=service["service_id"], needs=needs, age_band=domain.age_band(body.person.date_of_birth, now.date()),
        postcode_district=domain.postcode_district(body.person.postcode),
        reason=domain.refusal_reason(service, now.date()), refused_at=now)
    async with rt.transaction() as session:
        await rt.stage(session, REFERRAL_REFUSED, event)


@router.get("/referrals/{referral_id}", response_model=ReferralOut, summary="A referral, its status and timeline")
async def get_referral(referral_id: str, request: Request,
                       principal: Principal = Depends(require(*READERS))) -> ReferralOut:
    found = await _load(runtime_of(request), referral_id)
    if found is None or not _may_read(principal, found):
        # The same answer for "not there" and "not yours": a referral's existence is not disclosed.
        raise HTTPException(404, detail="no such referral")
    return found


@router.get("/referrals", summary="Referrals in your scope, newest first")
async def list_referrals(
    request: Request,
    principal: Principal = Depends(require(*READERS)),
    status_filter: Annotated[Literal["created", "accepted", "declined", "outcome_recorded"] | None, Query(alias="status")] = None,
    page: Page = 1,
    per_page: PerPage = 50,
) -> dict:
    rt = runtime_of(request)
    query = select(referrals)
    if principal.role == "link_worker":
        query = query.where(referrals.c.pcn_id == principal.pcn_id)
    elif principal.role == "charity":
        query = query.where(referrals.c.organisation_id == principal.organisation_id)
    if status_filter:
        query = query.where(referrals.c.status == status_filter)
    async with rt.sessionmaker() as session:
        total = await session.scalar(select(func.count()).select_from(query.subquery()))
        rows = (
            await session.execute(
                query.order_by(referrals.c.created_at.desc()).offset((page - 1) * per_page).limit(per_page)
            )
        ).mappings().all()
    items = [
        {k: row[k] for k in ("id", "status", "service_id", "organisation_id", "pcn_id", "needs", "age_band",
                             "postcode_district", "decline_reason", "created_at", "updated_at")}
        for row in rows
    ]
    return {"items": items, "page": page, "per_page": per_page, "total": total}


@router.get("/referrals/{referral_id}/contact", response_model=ContactOut,
            summary="The person's contact details (the charity that accepted the referral); audited")
async def get_contact(referral_id: str, request: Request,
                      principal: Principal = Depends(require("charity"))) -> ContactOut:
    rt = runtime_of(request)
    async with rt.transaction() as session:
        row = (
            await session.execute(
                select(referrals.c.status, referrals.c.organisation_id, person_details, referrals.c.accessibility_needs)
                .join(person_details, person_details.c.referral_id == referrals.c.id)
                .where(referrals.c.id == referral_id)
            )
        ).mappings().first()
        if row is None or row["organisation_id"] != principal.organisation_id:
            raise HTTPException(404, detail="no such referral")
        if row["status"] not in ("accepted", "outcome_recorded"):
            raise forbidden("contact details are available only after your organisation accepted the referral")
        await session.execute(
            insert(contact_access_audit).values(referral_id=referral_id, sub=principal.sub, role=principal.role,
                                                organisation_id=principal.organisation_id)
        )
    return ContactOut(referral_id=referral_id, given_name=row["given_name"], family_name=row["family_name"],
                      phone=row["phone"], email=row["email"], postcode=row["postcode"],
                      accessibility_needs=row["accessibility_needs"])


@router.get("/audit/contact-access", summary="Who read which person's contact details, when (admin)")
async def contact_audit(request: Request, principal: Principal = Depends(require("admin")),
                        referral_id: str | None = None) -> dict:
    query = select(contact_access_audit).order_by(contact_access_audit.c.at.desc()).limit(1000)
    if referral_id:
        query = query.where(contact_access_audit.c.referral_id == referral_id)
    async with runtime_of(request).sessionmaker() as session:
        rows = (await session.execute(query)).mappings().all()
    return {"items": [dict(r) for r in rows]}
