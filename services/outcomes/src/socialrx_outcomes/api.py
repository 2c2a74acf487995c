"""The outcomes API, kept thin: validate the shape, call a command (commands.py) or a report, render.
Refusals are the shared typed ones, mapped to HTTP once by the shared app."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field, StringConstraints

from socialrx_shared.auth import Principal, require
from socialrx_shared.errors import Invalid, TooLarge
from socialrx_shared.http import body_limit, content_disposition
from socialrx_shared.service import runtime_of

from . import commands, reports, upload
from .commands import NewOutcome

router = APIRouter(tags=["outcomes"])


class Correction(NewOutcome):
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=500)] = Field(
        description="Why the outcome is corrected (kept with the replaced values); no personal details"
    )


@router.post(
    "/referrals/{referral_id}/outcomes",
    status_code=201,
    summary="Record an outcome with wellbeing measures (accepting charity or the PCN's link worker)",
)
async def record_outcome(
    referral_id: str,
    body: NewOutcome,
    request: Request,
    principal: Principal = Depends(require("charity", "link_worker")),
) -> dict:
    rt = runtime_of(request)
    return await commands.record_outcome(rt.transaction, rt.stage, principal, referral_id, body.as_input())


@router.post(
    "/referrals/{referral_id}/outcomes/{outcome_id}/corrections",
    status_code=201,
    summary="Correct a recorded outcome: replaces its status, sessions and measures, keeps the old values",
)
async def correct_outcome(
    referral_id: str,
    outcome_id: str,
    body: Correction,
    request: Request,
    principal: Principal = Depends(require("charity", "link_worker")),
) -> dict:
    rt = runtime_of(request)
    return await commands.correct_outcome(
        rt.transaction, rt.stage, principal, referral_id, outcome_id, body.as_input(), body.reason
    )


@router.get(
    "/referrals/{referral_id}/outcomes",
    summary="A referral's outcomes and the change from baseline to the latest follow-up",
)
async def list_outcomes(
    referral_id: str, request: Request, principal: Principal = Depends(require("charity", "link_worker", "admin"))
) -> dict:
    return await commands.list_outcomes(runtime_of(request).sessionmaker, principal, referral_id)


Format = Literal["json", "csv"]


async def _report(
    request: Request,
    principal: Principal,
    kind: str,
    pcn_id: str | None,
    organisation_id: str | None,
    from_: date | None,
    to: date | None,
    group_by: str,
    fmt: Format,
) -> Any:
    scope = reports.scope_for(principal, pcn_id=pcn_id, organisation_id=organisation_id, from_=from_, to=to)
    if kind == "outcomes":
        report = await reports.outcomes_report(runtime_of(request), scope, reports.parse_group_by(group_by))
    else:
        report = await reports.inclusion_report(runtime_of(request), scope)
    if fmt == "csv":
        return Response(
            reports.to_csv(report),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": content_disposition(f"{kind}-report.csv")},
        )
    return report


REPORT_ROLES = require("finance", "link_worker", "charity", "admin")


@router.get(
    "/reports/outcomes",
    tags=["reports"],
    summary="Outcomes first, then engagement and referral flow, per PCN, link worker, organisation, service or month",
)
async def outcomes_report(
    request: Request,
    pcn_id: str | None = Query(None, description="Defaults to the caller's PCN (finance, link_worker)"),
    organisation_id: str | None = Query(None, description="Admin or charity (its own) only"),
    from_: date | None = Query(None, alias="from", description="First day of referral, inclusive"),
    to: date | None = Query(None, description="Last day of referral, inclusive"),
    group_by: str = Query("pcn", description="Comma-separated: pcn, link_worker, organisation, service, period"),
    format: Format = Query("json"),
    principal: Principal = Depends(REPORT_ROLES),
) -> Any:
    return await _report(request, principal, "outcomes", pcn_id, organisation_id, from_, to, group_by, format)


@router.get(
    "/reports/inclusion",
    tags=["reports"],
    summary="The same figures by age band, postcode district and accessibility need, under disclosure "
    "control (1-7 hidden, rounded to 5, secondary suppression)",
)
async def inclusion_report(
    request: Request,
    pcn_id: str | None = Query(None, description="Defaults to the caller's PCN (finance, link_worker)"),
    organisation_id: str | None = Query(None, description="Admin or charity (its own) only"),
    from_: date | None = Query(None, alias="from", description="First day of referral, inclusive"),
    to: date | None = Query(None, description="Last day of referral, inclusive"),
    format: Format = Query("json"),
    principal: Principal = Depends(REPORT_ROLES),
) -> Any:
    return await _report(request, principal, "inclusion", pcn_id, organisation_id, from_, to, "", format)


# --- Bulk upload ---------------------------------------------------------------------------------


class LineOut(BaseModel):
    line: int
    status: Literal["recorded", "already_recorded", "refused"]
    referral_id: str | None = None
    outcome_id: str | None = None
    error: str | None = None


class BulkOut(BaseModel):
    recorded: int
    already_recorded: int
    refused: int
    lines: list[LineOut]


@router.post(
    "/outcomes/bulk",
    response_model=BulkOut,
    summary="Record many outcomes from a spreadsheet (CSV; the charity the referrals were sent to)",
    description=f"A CSV file (`text/csv`, header row: {', '.join(upload.CSV_COLUMNS)}) of at most "
    f"{upload.MAX_LINES:,} rows and {upload.MAX_BYTES:,} bytes; answers of a measure in one cell, "
    "separated by spaces. Each row is checked like `POST /referrals/{id}/outcomes`; a refused row is "
    "reported with its row number and changes nothing, the others are recorded. Sending a row again "
    "records nothing new.",
    openapi_extra={
        **body_limit(upload.MAX_BYTES),
        "requestBody": {"required": True, "content": {"text/csv": {"schema": {"type": "string"}}}},
    },
)
async def bulk_record_outcomes(request: Request, principal: Principal = Depends(require("charity"))) -> BulkOut:
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type not in ("text/csv", "application/csv"):
        raise HTTPException(415, detail="send the file as text/csv (save the spreadsheet as 'CSV UTF-8')")
    try:
        lines = upload.csv_lines(await request.body())
    except upload.Unreadable as exc:
        raise Invalid(str(exc)) from None
    if not lines:
        raise Invalid("the file has no outcomes: after the header row, give one outcome per row")
    if len(lines) > upload.MAX_LINES:
        raise TooLarge(
            f"the file has {len(lines):,} rows; one upload takes at most {upload.MAX_LINES:,}: "
            "split it into several files"
        )
    rt = runtime_of(request)
    results = await commands.bulk_record_outcomes(
        rt.transaction, rt.stage_many, principal, [(line.number, line.record, line.error) for line in lines]
    )
    counts = {
        status: sum(1 for r in results if r.status == status) for status in ("recorded", "already_recorded", "refused")
    }
    return BulkOut(**counts, lines=[LineOut(**r.__dict__) for r in results])
