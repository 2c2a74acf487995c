"""The funding ledger's API for finance teams (and charities, for their own figures)."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timezone
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from sqlalchemy import func, insert, select

from socialrx_shared.auth import Principal, forbidden, require
from socialrx_shared.events import OutcomeStatus
from socialrx_shared.runtime import ServiceRuntime

from . import domain
from .store import agreements, journal_lines, payments

router = APIRouter()

# No fee, grant or cap above £10m: a typo in pence (an extra 00) is refused, not paid.
AbsurdPence = 1_000_000_000
Pence = Annotated[int, Field(ge=0, le=AbsurdPence)]


def runtime_of(request: Request) -> ServiceRuntime:
    return request.app.state.runtime


class NewAgreement(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)
    organisation_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    per_referral_pence: Pence = 0
    per_outcome_pence: Pence = 0
    outcome_statuses: list[OutcomeStatus] = Field(default_factory=lambda: ["completed"], min_length=1)
    block_grant_pence_per_period: Pence = 0
    cap_pence_per_year: Pence | None = None
    period: Literal["monthly", "quarterly"] = "quarterly"
    days_after_period_end: Annotated[int, Field(ge=0, le=365)] = 30
    starts_on: date
    ends_on: date | None = None

    @model_validator(mode="after")
    def _dates(self) -> "NewAgreement":
        if self.ends_on is not None and self.ends_on < self.starts_on:
            raise ValueError("ends_on is before starts_on")
        if not (self.per_referral_pence or self.per_outcome_pence or self.block_grant_pence_per_period):
            raise ValueError("an agreement must fund something: set a per-referral fee, a per-outcome fee or a block grant")
        return self


def _scope_pcn(principal: Principal) -> str | None:
    return principal.pcn_id if principal.role == "finance" else None


def _scope(query, table, principal: Principal, organisation_id: str | None):
    if principal.role == "finance":
        query = query.where(table.c.pcn_id == principal.pcn_id)
    elif principal.role == "charity":
        if organisation_id and organisation_id != principal.organisation_id:
            raise forbidden("a charity sees only its own organisation's figures")
        organisation_id = principal.organisation_id
    if organisation_id:
        query = query.where(table.c.organisation_id == organisation_id)
    return query


@router.post("/agreements", status_code=201, tags=["agreements"], summary="Agree funding with an organisation (finance)")
async def create_agreement(body: NewAgreement, request: Request, principal: Principal = Depends(require("finance"))) -> dict:
    rt = runtime_of(request)
    far_future = date(9999, 12, 31)
    async with rt.transaction() as session:
        # Lock the pair's agreements so two overlapping requests cannot both pass the check.
        existing = (await session.execute(
            select(agreements.c.id, agreements.c.starts_on, agreements.c.ends_on)
            .where(agreements.c.pcn_id == principal.pcn_id, agreements.c.organisation_id == body.organisation_id)
            .with_for_update()
        )).all()
        for other in existing:
            if body.starts_on <= (other.ends_on or far_future) and other.starts_on <= (body.ends_on or far_future):
                raise HTTPException(409, detail=f"overlaps agreement {other.id} ({other.starts_on} to "
                                                f"{other.ends_on or 'open-ended'}); end it first or change the dates")
        row = {"id": str(uuid.uuid4()), "pcn_id": principal.pcn_id, **body.model_dump(), "created_by": principal.sub}
        await session.execute(insert(agreements).values(**row))
    return row


@router.get("/agreements", tags=["agreements"], summary="Agreements in your scope")
async def list_agreements(request: Request, principal: Principal = Depends(require("finance", "charity", "admin")),
                          organisation_id: str | None = None) -> dict:
    query = _scope(select(agreements), agreements, principal, organisation_id).order_by(agreements.c.starts_on)
    async with runtime_of(request).sessionmaker() as session:
        rows = (await session.execute(query)).mappings().all()
    return {"items": [dict(r) for r in rows]}


@router.get("/payments", tags=["payments"], summary="Payments due, with what is still open")
async def list_payments(request: Request, principal: Principal = Depends(require("finance", "charity", "admin")),
                        organisation_id: str | None = None,
                        status: Literal["open", "settled"] | None = None,
                        referral_id: str | None = None,
                        page: Annotated[int, Query(ge=1)] = 1,
                        per_page: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict:
    query = _scope(select(payments), payments, principal, organisation_id)
    if status == "open":
        query = query.where(payments.c.open_pence > 0)
    elif status == "settled":
        query = query.where(payments.c.open_pence == 0)
    if referral_id:
        query = query.where(payments.c.referral_id == referral_id)
    async with runtime_of(request).sessionmaker() as session:
        total = await session.scalar(select(func.count()).select_from(query.subquery()))
        rows = (await session.execute(
            query.order_by(payments.c.due_date, payments.c.business_date, payments.c.payment_id)
            .offset((page - 1) * per_page).limit(per_page))).mappings().all()
    items = [{k: r[k] for k in ("payment_id", "agreement_id", "pcn_id", "organisation_id", "referral_id", "basis",
                                "amount_pence", "open_pence", "period", "due_date", "business_date",
                                "refused_over_cap_pence")} | {"currency": "GBP"} for r in rows]
    return {"items": items, "page": page, "per_page": per_page, "total": total}


@router.get("/arrears", tags=["payments"], summary="What is owed, aged by days past its due date")
async def arrears(request: Request, principal: Principal = Depends(require("finance", "charity", "admin")),
                  as_of: date | None = None, organisation_id: str | None = None) -> dict:
    as_of = as_of or datetime.now(timezone.utc).date()
    query = _scope(
        select(payments.c.organisation_id, payments.c.open_pence, payments.c.due_date).where(payments.c.open_pence > 0),
        payments, principal, organisation_id,
    )
    async with runtime_of(request).sessionmaker() as session:
        rows = (await session.execute(query)).all()
    total = dict.fromkeys(domain.BUCKETS, 0)
    by_org: dict[str, dict[str, int]] = {}
    for row in rows:
        bucket = domain.age_bucket(row.due_date, as_of)
        total[bucket] += row.open_pence
        org = by_org.setdefault(row.organisation_id, dict.fromkeys(domain.BUCKETS, 0))
        org[bucket] += row.open_pence
    summarise = lambda figures: {**figures, "owed_pence": sum(figures.values()),  # noqa: E731
                                 "overdue_pence": sum(v for k, v in figures.items() if k != "not_due")}
    return {
        "as_of": as_of.isoformat(), "currency": "GBP",
        "total": summarise(total),
        "by_organisation": [{"organisation_id": org, **summarise(figures)} for org, figures in sorted(by_org.items())],
    }


@router.get("/trial-balance", tags=["ledger"], summary="Total debits and credits (always equal)")
async def trial_balance(request: Request, principal: Principal = Depends(require("finance", "admin"))) -> dict:
    async with runtime_of(request).sessionmaker() as session:
        debits, credits = (await session.execute(
            select(func.coalesce(func.sum(journal_lines.c.debit_pence), 0),
                   func.coalesce(func.sum(journal_lines.c.credit_pence), 0)))).one()
    assert debits == credits, "trial balance broken: debits != credits"
    return {"debits_pence": int(debits), "credits_pence": int(credits), "balanced": debits == credits, "currency": "GBP"}
