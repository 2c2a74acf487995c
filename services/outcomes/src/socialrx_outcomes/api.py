"""The outcomes API, kept thin: validate the shape, call a command (commands.py) or a report, render.
Refusals are the shared typed ones, mapped to HTTP once by the shared app."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from socialrx_shared.auth import Principal, require
from socialrx_shared.events import Instrument, OutcomeStatus, Phase
from socialrx_shared.http import content_disposition
from socialrx_shared.runtime import ServiceRuntime

from . import commands, reports
from .commands import MeasureInput, OutcomeInput

router = APIRouter(tags=["outcomes"])


def runtime_of(request: Request) -> ServiceRuntime:
    return request.app.state.runtime


class MeasureIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    instrument: Instrument
    phase: Phase
    # Typed loosely on purpose: domain.validate refuses 3.0, "3" or true with a message naming the
    # item, where pydantic would quietly coerce some of them.
    answers: list[Any] = Field(max_length=20, json_schema_extra={"items": {"type": "integer"}},
                               description="ONS4: 4 answers 0-10; WEMWBS: 14 answers 1-5; SWEMWBS: 7 answers 1-5")


class NewOutcome(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: OutcomeStatus
    sessions_attended: Annotated[int, Field(ge=0, le=1000)]
    measures: list[MeasureIn] = Field(default_factory=list, max_length=10)

    def as_input(self) -> OutcomeInput:
        return OutcomeInput(self.status, self.sessions_attended,
                            [MeasureInput(m.instrument, m.phase, m.answers) for m in self.measures])


class Correction(NewOutcome):
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=500)] = Field(
        description="Why the outcome is corrected (kept with the replaced values); no personal details")


@router.post("/referrals/{referral_id}/outcomes", status_code=201,
             summary="Record an outcome with wellbeing measures (accepting charity or the PCN's link worker)")
async def record_outcome(referral_id: str, body: NewOutcome, request: Request,
                         principal: Principal = Depends(require("charity", "link_worker"))) -> dict:
    rt = runtime_of(request)
    return await commands.record_outcome(rt.transaction, rt.stage, principal, referral_id, body.as_input())


@router.post("/referrals/{referral_id}/outcomes/{outcome_id}/corrections", status_code=201,
             summary="Correct a recorded outcome: replaces its status, sessions and measures, keeps the old values")
async def correct_outcome(referral_id: str, outcome_id: str, body: Correction, request: Request,
                          principal: Principal = Depends(require("charity", "link_worker"))) -> dict:
    rt = runtime_of(request)
    return await commands.correct_outcome(rt.transaction, rt.stage, principal, referral_id, outcome_id,
                                          body.as_input(), body.reason)


@router.get("/referrals/{referral_id}/outcomes",
            summary="A referral's outcomes and the change from baseline to the latest follow-up")
async def list_outcomes(referral_id: str, request: Request,
                        principal: Principal = Depends(require("charity", "link_worker", "admin"))) -> dict:
    return await commands.list_outcomes(runtime_of(request).sessionmaker, principal, referral_id)


Format = Literal["json", "csv"]


async def _report(request: Request, principal: Principal, kind: str, pcn_id: str | None, organisation_id: str | None,
                  from_: date | None, to: date | None, group_by: str, fmt: Format) -> Any:
    scope = reports.scope_for(principal, pcn_id=pcn_id, organisation_id=organisation_id, from_=from_, to=to)
    if kind == "outcomes":
        report = await reports.outcomes_report(runtime_of(request), scope, reports.parse_group_by(group_by))
    else:
        report = await reports.inclusion_report(runtime_of(request), scope)
    if fmt == "csv":
        return Response(reports.to_csv(report), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": content_disposition(f"{kind}-report.csv")})
    return report


REPORT_ROLES = require("finance", "link_worker", "charity", "admin")


@router.get("/reports/outcomes", tags=["reports"],
            summary="Outcomes first, then engagement and referral flow, per PCN, link worker, organisation, "
                    "service or month")
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


@router.get("/reports/inclusion", tags=["reports"],
            summary="The same figures by age band, postcode district and accessibility need, under disclosure "
                    "control (1-7 hidden, rounded to 5, secondary suppression)")
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
