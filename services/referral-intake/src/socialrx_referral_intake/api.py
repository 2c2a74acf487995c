"""referral-intake's HTTP API: create and follow referrals; contact details for the accepting charity.

Thin: parse the request, call a command (commands.py) or a read (views.py), render the answer.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, status
from pydantic import BaseModel

from socialrx_shared.auth import Principal, require
from socialrx_shared.errors import Invalid, NotFound, TooLarge
from socialrx_shared.http import Page, PerPage, body_limit
from socialrx_shared.runtime import ServiceRuntime
from socialrx_shared.service import runtime_of

from . import commands, upload, views
from .commands import NewReferral

router = APIRouter(tags=["referrals"])

# Who may follow referrals: the link workers of the PCN, the charity they were sent to, admins.
# Finance works from the ledger and has no need of referral details.
READERS = ("link_worker", "charity", "admin")


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


def _ref_key(rt: ServiceRuntime) -> bytes:
    return rt.settings.person_ref_key.get_secret_value().encode()  # type: ignore[attr-defined]


async def _found(rt: ServiceRuntime, principal: Principal, referral_id: str) -> ReferralOut:
    row = await views.referral(rt.sessionmaker, referral_id)
    if row is None or not views.may_read(principal, row):
        # The same answer for "not there" and "not yours": a referral's existence is not disclosed.
        raise NotFound("no such referral")
    return ReferralOut(
        **{k: row[k] for k in ReferralOut.model_fields if k != "timeline"},
        timeline=[TimelineEntry(**e) for e in row["timeline"]],
    )


def _checked_key(idempotency_key: str | None) -> str | None:
    if idempotency_key is not None and not idempotency_key.strip():
        # An empty key is almost always a shell variable that was never set (`$(uuidgen)` failing):
        # treating it as "no key" would silently lose the protection the caller asked for.
        raise HTTPException(
            400, detail="Idempotency-Key is empty: send a fresh unique value (e.g. a UUID) or leave the header out"
        )
    return idempotency_key


@router.post(
    "/referrals",
    status_code=status.HTTP_201_CREATED,
    response_model=ReferralOut,
    summary="Refer a person to a service (link worker)",
)
async def create_referral(
    body: NewReferral,
    request: Request,
    principal: Principal = Depends(require("link_worker")),
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> ReferralOut:
    rt = runtime_of(request)
    created = await commands.create_referral(
        rt.transaction, rt.stage, _ref_key(rt), principal, body, _checked_key(idempotency_key)
    )
    return await _found(rt, principal, created.referral_id)


@router.get("/referrals/{referral_id}", response_model=ReferralOut, summary="A referral, its status and timeline")
async def get_referral(
    referral_id: str, request: Request, principal: Principal = Depends(require(*READERS))
) -> ReferralOut:
    return await _found(runtime_of(request), principal, referral_id)


@router.get("/referrals", summary="Referrals in your scope, newest first")
async def list_referrals(
    request: Request,
    principal: Principal = Depends(require(*READERS)),
    status_filter: Annotated[
        Literal["created", "accepted", "declined", "outcome_recorded"] | None, Query(alias="status")
    ] = None,
    page: Page = 1,
    per_page: PerPage = 50,
) -> dict:
    return await views.referrals_in_scope(runtime_of(request).sessionmaker, principal, status_filter, page, per_page)


@router.get(
    "/referrals/{referral_id}/contact",
    response_model=ContactOut,
    summary="The person's contact details (the charity that accepted the referral); audited",
)
async def get_contact(
    referral_id: str, request: Request, principal: Principal = Depends(require("charity"))
) -> ContactOut:
    contact = await commands.read_contact(runtime_of(request).transaction, principal, referral_id)
    return ContactOut(**contact.__dict__)


@router.get("/audit/contact-access", summary="Who read which person's contact details, when (admin)")
async def contact_audit(
    request: Request, principal: Principal = Depends(require("admin")), referral_id: str | None = None
) -> dict:
    return {"items": await views.contact_audit(runtime_of(request).sessionmaker, referral_id)}


# --- Bulk upload ---------------------------------------------------------------------------------

BULK_MEDIA_TYPES = {
    "text/csv": "text/csv",
    "application/x-ndjson": "application/x-ndjson",
    "application/ndjson": "application/x-ndjson",
    "application/jsonl": "application/x-ndjson",
}


class LineOut(BaseModel):
    line: int
    status: Literal["created", "already_created", "refused"]
    referral_id: str | None = None
    error: str | None = None


class BulkOut(BaseModel):
    created: int
    already_created: int
    refused: int
    lines: list[LineOut]


@router.post(
    "/referrals/bulk",
    response_model=BulkOut,
    summary="Refer many people in one upload (a PCN moving from another system; link worker)",
    description=f"A CSV (`text/csv`, header row: {', '.join(upload.CSV_COLUMNS)}) or NDJSON "
    "(`application/x-ndjson`, one `POST /referrals` body per line) file of at most "
    f"{upload.MAX_LINES:,} lines and {upload.MAX_BYTES:,} bytes. Each line is checked like "
    "`POST /referrals`; a refused line is reported with its line number and changes nothing, the "
    "others are created. Sending a line again answers with the referral it made (nothing twice).",
    openapi_extra={
        **body_limit(upload.MAX_BYTES),
        "requestBody": {
            "required": True,
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/x-ndjson": {"schema": {"type": "string"}},
            },
        },
    },
)
async def bulk_create_referrals(request: Request, principal: Principal = Depends(require("link_worker"))) -> BulkOut:
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type not in BULK_MEDIA_TYPES:
        raise HTTPException(415, detail="send the file as text/csv or application/x-ndjson (one referral per line)")
    try:
        lines = upload.lines_of(await request.body(), BULK_MEDIA_TYPES[media_type])
    except upload.Unreadable as exc:
        raise Invalid(str(exc)) from None
    if not lines:
        raise Invalid("the file has no referrals: after the header, give one referral per line")
    if len(lines) > upload.MAX_LINES:
        raise TooLarge(
            f"the file has {len(lines):,} referrals; one upload takes at most {upload.MAX_LINES:,}: "
            "split it into several files"
        )
    rt = runtime_of(request)
    results = await commands.bulk_create_referrals(
        rt.transaction,
        rt.stage_many,
        _ref_key(rt),
        principal,
        [(line.number, line.record, line.error) for line in lines],
    )
    counts = {
        status: sum(1 for r in results if r.status == status) for status in ("created", "already_created", "refused")
    }
    return BulkOut(**counts, lines=[LineOut(**r.__dict__) for r in results])
