"""The funding ledger's API for finance teams (and charities, for their own figures)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Header, HTTPException, Query, Request, Response, UploadFile
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from socialrx_shared.auth import Principal, forbidden, require
from socialrx_shared.events import Id, OutcomeStatus
from socialrx_shared.http import Page, body_limit, content_disposition, nul_error, per_page_up_to
from socialrx_shared.service import runtime_of

from . import commands, domain, reports

router = APIRouter()

# No fee, grant or cap above £10m: a typo in pence (an extra 00) is refused, not paid.
AbsurdPence = 1_000_000_000
Pence = Annotated[int, Field(ge=0, le=AbsurdPence)]
PositivePence = Annotated[int, Field(ge=1, le=AbsurdPence)]


def _plausible(on: date) -> date:
    # A year like 0226 or 2206 is a typo, not a date anyone is paid on.
    if not 2000 <= on.year <= 2100:
        raise ValueError(f"{on.isoformat()} is not a plausible date (years 2000 to 2100)")
    return on


LedgerDate = Annotated[date, AfterValidator(_plausible)]


class NewAgreement(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)
    organisation_id: Id
    per_referral_pence: Pence = 0
    per_outcome_pence: Pence = 0
    outcome_statuses: list[OutcomeStatus] = Field(default_factory=lambda: ["completed"], min_length=1)
    block_grant_pence_per_period: Pence = 0
    cap_pence_per_year: Pence | None = None
    period: Literal["monthly", "quarterly"] = "quarterly"
    days_after_period_end: Annotated[int, Field(ge=0, le=365)] = 30
    starts_on: LedgerDate
    ends_on: LedgerDate | None = None

    @model_validator(mode="after")
    def _dates(self) -> NewAgreement:
        if self.ends_on is not None and self.ends_on < self.starts_on:
            raise ValueError("ends_on is before starts_on")
        if not (self.per_referral_pence or self.per_outcome_pence or self.block_grant_pence_per_period):
            raise ValueError(
                "an agreement must fund something: set a per-referral fee, a per-outcome fee or a block grant"
            )
        return self


def _scope_pcn(principal: Principal) -> str | None:
    return principal.pcn_id if principal.role == "finance" else None


@router.post(
    "/agreements", status_code=201, tags=["agreements"], summary="Agree funding with an organisation (finance)"
)
async def create_agreement(
    body: NewAgreement, request: Request, principal: Principal = Depends(require("finance"))
) -> dict:
    return await commands.create_agreement(runtime_of(request), principal.pcn_id, principal.sub, body.model_dump())


class AgreementPatch(BaseModel):
    """End an agreement (ends_on; null makes it open-ended again), or amend its terms from a date."""

    model_config = ConfigDict(extra="forbid")
    ends_on: LedgerDate | None = None
    effective_from: LedgerDate | None = None
    per_referral_pence: Pence | None = None
    per_outcome_pence: Pence | None = None
    outcome_statuses: list[OutcomeStatus] | None = Field(None, min_length=1)
    block_grant_pence_per_period: Pence | None = None
    cap_pence_per_year: Pence | None = None
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)] | None = None


@router.patch(
    "/agreements/{agreement_id}",
    tags=["agreements"],
    summary="End an agreement, or amend its fees or cap from a date (finance of its PCN)",
)
async def change_agreement(
    agreement_id: str, body: AgreementPatch, request: Request, principal: Principal = Depends(require("finance"))
) -> dict:
    given = body.model_fields_set
    terms = {k: getattr(body, k) for k in commands.TERMS if k in given}
    if any(v is None for k, v in terms.items() if k != "cap_pence_per_year"):
        raise HTTPException(422, detail=f"{', '.join(k for k, v in terms.items() if v is None)} cannot be null")
    change = commands.AgreementChange(
        ends_on=body.ends_on,
        ends_on_given="ends_on" in given,
        effective_from=body.effective_from,
        terms=terms or None,
        reason=body.reason,
    )
    return await commands.change_agreement(runtime_of(request), principal.pcn_id, principal.sub, agreement_id, change)


@router.get("/agreements", tags=["agreements"], summary="Agreements in your scope, each with its versions")
async def list_agreements(
    request: Request,
    principal: Principal = Depends(require("finance", "charity", "admin")),
    organisation_id: str | None = None,
) -> dict:
    return await reports.read(runtime_of(request), reports.agreements_listed, **_scope_of(principal, organisation_id))


PaymentsPerPage = per_page_up_to(1000)


@router.get("/payments", tags=["payments"], summary="Payments due, with what is still open")
async def list_payments(
    request: Request,
    principal: Principal = Depends(require("finance", "charity", "admin")),
    organisation_id: str | None = None,
    status: Literal["open", "settled", "reversed"] | None = None,
    referral_id: str | None = None,
    page: Page = 1,
    per_page: PaymentsPerPage = 100,
) -> dict:
    return await reports.read(
        runtime_of(request),
        reports.payments_listed,
        **_scope_of(principal, organisation_id),
        status=status,
        referral_id=referral_id,
        page=page,
        per_page=per_page,
    )


@router.get("/agreements/{agreement_id}/cap", tags=["agreements"], summary="Cap use in a financial year")
async def cap_use(
    agreement_id: str,
    request: Request,
    principal: Principal = Depends(require("finance", "charity", "admin")),
    on: LedgerDate | None = None,
) -> dict:
    return await reports.read(
        runtime_of(request), reports.cap_use_of, agreement_id, on or domain.today_in_uk(), **_scope_of(principal, None)
    )


@router.get("/arrears", tags=["payments"], summary="What is owed, aged by days past its due date")
async def arrears(
    request: Request,
    principal: Principal = Depends(require("finance", "charity", "admin")),
    as_of: LedgerDate | None = None,
    organisation_id: str | None = None,
) -> dict:
    as_of = as_of or domain.today_in_uk()
    scope = _scope_of(principal, organisation_id)
    return await reports.read(runtime_of(request), reports.arrears, as_of, **scope)


def _scope_of(principal: Principal, organisation_id: str | None) -> dict:
    """pcn_id / organisation_id filters a caller is held to (finance: its PCN; charity: itself)."""
    if principal.role == "charity":
        if organisation_id and organisation_id != principal.organisation_id:
            raise forbidden("a charity sees only its own organisation's figures")
        return {"pcn_id": None, "organisation_id": principal.organisation_id}
    return {"pcn_id": _scope_pcn(principal), "organisation_id": organisation_id}


class GivenAllocation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    payment_id: Id
    amount_pence: PositivePence


class NewSettlement(BaseModel):
    model_config = ConfigDict(extra="forbid")
    organisation_id: Id
    amount_pence: PositivePence
    paid_on: LedgerDate
    reference: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=140)]
    allocations: list[GivenAllocation] | None = Field(None, max_length=1000)


IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=120)]


@router.post(
    "/settlements", status_code=201, tags=["settlements"], summary="Record a payment to an organisation (finance)"
)
async def create_settlement(
    body: NewSettlement,
    request: Request,
    response: Response,
    principal: Principal = Depends(require("finance")),
    idempotency_key: IdempotencyKey = None,
) -> dict:
    command = commands.SettlementRequest(
        body.organisation_id,
        body.amount_pence,
        body.paid_on,
        body.reference,
        None if body.allocations is None else [(a.payment_id, a.amount_pence) for a in body.allocations],
        idempotency_key,
    )
    view, created = await commands.settle(runtime_of(request), principal.pcn_id, command)
    if not created:
        response.status_code = 200  # the same request again: the first answer, nothing posted
    return view


@router.get("/settlements", tags=["settlements"], summary="Payments recorded, with their allocations")
async def list_settlements(
    request: Request,
    principal: Principal = Depends(require("finance", "charity", "admin")),
    organisation_id: str | None = None,
) -> dict:
    return await reports.read(runtime_of(request), reports.settlements_listed, **_scope_of(principal, organisation_id))


class BlockGrantCommand(BaseModel):
    model_config = ConfigDict(extra="forbid")
    on: LedgerDate
    agreement_id: Id | None = None


@router.post(
    "/block-grants", tags=["agreements"], summary="Accrue the block grants of the period holding `on` (idempotent)"
)
async def accrue_block_grants(
    body: BlockGrantCommand, request: Request, principal: Principal = Depends(require("finance"))
) -> dict:
    items = await commands.accrue_block_grants(runtime_of(request), principal.pcn_id, body.on, body.agreement_id)
    return {"on": body.on.isoformat(), "items": items}


# A year's statement can hold tens of thousands of lines: JSON clients (and the web app) may page it;
# without per_page every line comes back, as before paging existed.
StatementPerPage = per_page_up_to(5000)


@router.get("/statements/{organisation_id}", tags=["payments"], summary="An organisation's statement (json or csv)")
async def statement(
    organisation_id: str,
    request: Request,
    principal: Principal = Depends(require("finance", "charity", "admin")),
    from_: Annotated[LedgerDate | None, Query(alias="from")] = None,
    to: LedgerDate | None = None,
    format: Literal["json", "csv"] = "json",
    page: Page = 1,
    per_page: StatementPerPage | None = None,
):
    to = to or domain.today_in_uk()
    from_ = from_ or domain.financial_year_start(to)
    if from_ > to:
        raise HTTPException(422, detail=f"from ({from_}) is after to ({to})")
    if per_page is None and page != 1:
        raise HTTPException(422, detail="page needs per_page (lines per page); without both, every line is returned")
    if format == "csv" and per_page is not None:
        raise HTTPException(422, detail="the CSV is always the whole statement; leave out page and per_page")
    scope = _scope_of(principal, organisation_id)
    body = await reports.read(
        runtime_of(request),
        reports.statement,
        organisation_id,
        scope["pcn_id"],
        from_,
        to,
        page=page,
        per_page=per_page,
    )
    if format == "csv":
        return Response(
            reports.statement_csv(body),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": content_disposition(f"statement-{organisation_id}-{from_}-{to}.csv")},
        )
    # Already plain JSON types (dates as ISO text): rendered as it is, without FastAPI walking every
    # value of thousands of lines through jsonable_encoder (most of a year's statement's time).
    return JSONResponse(body)


MAX_UPLOAD_BYTES = 5 * 1024 * 1024


# The upload's own limit (the file plus its multipart framing), above the shared 1 MB one.
@router.post(
    "/reconciliation",
    tags=["settlements"],
    summary="Reconcile a remittance CSV against the ledger",
    openapi_extra=body_limit(MAX_UPLOAD_BYTES + 64 * 1024),
)
async def reconciliation(
    request: Request,
    file: UploadFile = File(...),
    post: bool = False,
    principal: Principal = Depends(require("finance")),
) -> dict:
    raw = await file.read(MAX_UPLOAD_BYTES + 1)
    if len(raw) > MAX_UPLOAD_BYTES:
        raise HTTPException(413, detail="the file is larger than 5 MB; split the remittance")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise HTTPException(422, detail="the file is not UTF-8 text; save it as CSV UTF-8") from None
    if "\x00" in text:  # the csv module reads it; PostgreSQL would refuse it mid-request
        raise nul_error(["body", "file"])
    return await commands.reconcile(runtime_of(request), principal.pcn_id, text, post)


@router.get("/trial-balance", tags=["ledger"], summary="Total debits and credits (always equal)")
async def trial_balance(request: Request, principal: Principal = Depends(require("finance", "admin"))) -> dict:
    return await reports.read(runtime_of(request), reports.trial_balance, _scope_pcn(principal))
