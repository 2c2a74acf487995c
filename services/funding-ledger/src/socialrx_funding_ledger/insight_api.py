"""Insight for charities and commissioners: prompt payment, statutory late-payment interest, cash-flow
forecast, and the reference rates behind the interest. Thin edges over insight (rules) and
insight_store (reads)."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from socialrx_shared.auth import Principal, forbidden, require
from socialrx_shared.service import runtime_of

from . import domain, insight, insight_store
from .api import LedgerDate

router = APIRouter()

PROMPT_RULE = (
    "Payments that fell due in the window (by due date; fees taken back by a correction left out). "
    "on_time: paid in full on or before the due date; within_30_days: 1 to 30 days after it; later: "
    "more than 30 days after it; open: not yet paid in full. Shares are of everything that fell "
    "due, by number and by value (public bodies publish the share paid within 30 days). Days late "
    "count from the due date to the day of the last part payment, over the payments settled."
)
INTEREST_RULE = (
    "Late Payment of Commercial Debts (Interest) Act 1998: simple interest at 8 percentage points "
    "over the Bank of England's Bank Rate in force on the reference day (30 June for interest "
    "starting July to December, 31 December for interest starting January to June), fixed for the "
    "debt's life, for every day from the day after the due date to as_of (365-day year), on what "
    "was unpaid that day; plus a fixed sum per debt (£40 under £1,000, £70 from £1,000 to "
    "£9,999.99, £100 from £10,000). Rounded half-up to the penny per payment. A figure the "
    "charity may claim: nothing is posted to the ledger. Block grants are grants, not a contract "
    "price: left out."
)


def _window(from_: date | None, to: date | None) -> tuple[date, date]:
    to = to or domain.today_in_uk()
    from_ = from_ or domain.financial_year_start(to)
    if from_ > to:
        raise HTTPException(422, detail=f"from ({from_}) is after to ({to}); give from on or before to")
    return from_, to


def _by(payments: list[insight.DuePayment], key, as_of: date) -> list[dict]:
    groups: dict[tuple, list[insight.DuePayment]] = {}
    for p in payments:
        groups.setdefault(key(p), []).append(p)
    return [{"group": group, **insight.prompt_payment(items, as_of)} for group, items in sorted(groups.items())]


@router.get(
    "/reports/prompt-payment",
    tags=["insight"],
    summary="Who pays on time: payments due in a window, by PCN and organisation",
)
async def prompt_payment(
    request: Request,
    principal: Principal = Depends(require("finance", "admin", "charity")),
    pcn_id: str | None = None,
    from_: Annotated[LedgerDate | None, Query(alias="from")] = None,
    to: LedgerDate | None = None,
) -> dict:
    from_, to = _window(from_, to)
    organisation_id = None
    if principal.role == "finance":
        if pcn_id and pcn_id != principal.pcn_id:
            raise forbidden("finance sees prompt payment of its own PCN only")
        pcn_id = principal.pcn_id
    elif principal.role == "charity":
        organisation_id = principal.organisation_id  # the PCNs that owe it, its own payments only
    as_of = domain.today_in_uk()
    async with runtime_of(request).sessionmaker() as session:
        due = await insight_store.due_payments(
            session, due_from=from_, due_to=to, pcn_id=pcn_id, organisation_id=organisation_id
        )
    by_pcn = [{"pcn_id": g.pop("group")[0], **g} for g in _by(due, lambda p: (p.pcn_id,), as_of)]
    by_org = [
        {"pcn_id": (k := g.pop("group"))[0], "organisation_id": k[1], **g}
        for g in _by(due, lambda p: (p.pcn_id, p.organisation_id), as_of)
    ]
    return {
        "from": from_.isoformat(),
        "to": to.isoformat(),
        "as_of": as_of.isoformat(),
        "currency": "GBP",
        "rule": PROMPT_RULE,
        "total": insight.prompt_payment(due, as_of),
        "by_pcn": by_pcn,
        "by_organisation": by_org,
    }


PUBLIC_FIELDS = (
    "payments_due",
    "value_due_pence",
    "on_time_count",
    "on_time_pence",
    "within_30_days_count",
    "within_30_days_pence",
    "later_count",
    "later_pence",
    "open_count",
    "open_pence",
    "open_unpaid_pence",
    "open_overdue_count",
    "open_overdue_pence",
    "on_time_share_by_number_percent",
    "on_time_share_by_value_percent",
    "within_30_days_share_by_number_percent",
    "within_30_days_share_by_value_percent",
)


@router.get(
    "/public/prompt-payment", tags=["insight"], summary="Open summary of prompt payment per PCN (no organisation named)"
)
async def public_prompt_payment(
    request: Request, from_: Annotated[LedgerDate | None, Query(alias="from")] = None, to: LedgerDate | None = None
) -> dict:
    from_, to = _window(from_, to)
    as_of = domain.today_in_uk()
    async with runtime_of(request).sessionmaker() as session:
        due = await insight_store.due_payments(session, due_from=from_, due_to=to)
    by_pcn = [
        {"pcn_id": g["group"][0], **{k: g[k] for k in PUBLIC_FIELDS}} for g in _by(due, lambda p: (p.pcn_id,), as_of)
    ]
    return {
        "from": from_.isoformat(),
        "to": to.isoformat(),
        "as_of": as_of.isoformat(),
        "currency": "GBP",
        "rule": PROMPT_RULE,
        "by_pcn": by_pcn,
    }


def _organisation_scope(principal: Principal, organisation_id: str) -> str | None:
    """The PCN a caller is held to for one organisation's figures (None: every PCN)."""
    if principal.role == "charity" and organisation_id != principal.organisation_id:
        raise forbidden("a charity sees only its own organisation's figures")
    return principal.pcn_id if principal.role == "finance" else None


@router.get(
    "/late-payment/{organisation_id}",
    tags=["insight"],
    summary="Statutory late-payment interest and compensation the organisation may claim",
)
async def late_payment(
    organisation_id: str,
    request: Request,
    principal: Principal = Depends(require("charity", "finance", "admin")),
    as_of: LedgerDate | None = None,
) -> dict:
    pcn_id = _organisation_scope(principal, organisation_id)
    as_of = as_of or domain.today_in_uk()
    async with runtime_of(request).sessionmaker() as session:
        open_items = await insight_store.open_on(session, organisation_id, as_of, pcn_id)
        known_rates = await insight_store.rates(session)
    items, excluded = [], []
    for p in open_items:
        if p["due_date"] >= as_of:
            continue  # not overdue yet
        if p["basis"] == "block_grant":
            excluded.append(
                {
                    "payment_id": p["payment_id"],
                    "pcn_id": p["pcn_id"],
                    "due_date": p["due_date"].isoformat(),
                    "unpaid_pence": p["unpaid_pence"],
                    "reason": "a block grant is a grant, not a contract price: the Act does not apply",
                }
            )
            continue
        starts = insight.interest_starts_on(p["due_date"])
        half_year = insight.half_year_starting(starts)
        rate = known_rates.get(half_year)
        line = {
            "payment_id": p["payment_id"],
            "pcn_id": p["pcn_id"],
            "basis": p["basis"],
            "referral_id": p["referral_id"],
            "amount_pence": int(p["amount_pence"]),
            "unpaid_pence": p["unpaid_pence"],
            "due_date": p["due_date"].isoformat(),
            "interest_from": starts.isoformat(),
            "days_late": (as_of - p["due_date"]).days,
            "reference_date": insight.reference_date(starts).isoformat(),
            "compensation_pence": insight.compensation_pence(int(p["amount_pence"])),
        }
        if rate is None:
            line |= {
                "bank_rate_percent": None,
                "statutory_rate_percent": None,
                "interest_pence": None,
                "interest_status": f"unknown: an admin must add the reference rate for the half-year "
                f"starting {half_year.isoformat()}",
            }
        else:
            bp = insight.percent_to_basis_points(rate)
            line |= {
                "bank_rate_percent": f"{rate:.2f}",
                "statutory_rate_percent": f"{rate + 8:.2f}",
                "interest_pence": insight.statutory_interest_pence(
                    int(p["amount_pence"]), p["due_date"], p["paid"], as_of, bp
                ),
                "interest_status": "known",
            }
        items.append(line)
    known = [i for i in items if i["interest_pence"] is not None]
    return {
        "organisation_id": organisation_id,
        "as_of": as_of.isoformat(),
        "currency": "GBP",
        "rule": INTEREST_RULE,
        "interest_pence": sum(i["interest_pence"] for i in known),
        "compensation_pence": sum(i["compensation_pence"] for i in items),
        "claimable_pence": sum(i["interest_pence"] for i in known) + sum(i["compensation_pence"] for i in known),
        "interest_unknown_count": len(items) - len(known),
        "items": items,
        "excluded": excluded,
    }


class NewReferenceRate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    half_year_starting: LedgerDate
    rate_percent: Annotated[Decimal, Field(ge=0, lt=100, max_digits=6, decimal_places=2)]
    source: Annotated[str, Field(min_length=1, max_length=500)] = (
        "added by an admin from the Bank of England's Bank Rate history"
    )


@router.get("/reference-rates", tags=["insight"], summary="Bank Rate on each reference day, with its source")
async def list_reference_rates(request: Request) -> dict:
    async with runtime_of(request).sessionmaker() as session:
        return {"items": await insight_store.rate_rows(session)}


@router.post("/reference-rates", status_code=201, tags=["insight"], summary="Add a half-year's reference rate (admin)")
async def add_reference_rate(
    body: NewReferenceRate, request: Request, response: Response, principal: Principal = Depends(require("admin"))
) -> dict:
    if body.half_year_starting.day != 1 or body.half_year_starting.month not in (1, 7):
        raise HTTPException(422, detail="half_year_starting must be 1 January or 1 July of a year")
    table = insight_store.reference_rates
    async with runtime_of(request).transaction() as session:
        inserted = (
            await session.execute(
                pg_insert(table)
                .values(
                    half_year_starting=body.half_year_starting,
                    rate_percent=body.rate_percent,
                    source=body.source,
                    added_by=principal.sub,
                )
                .on_conflict_do_nothing()
                .returning(table.c.half_year_starting)
            )
        ).first()
        if inserted is None:
            existing = (
                await session.execute(
                    select(table.c.rate_percent).where(table.c.half_year_starting == body.half_year_starting)
                )
            ).scalar_one()
            if existing != body.rate_percent:
                raise HTTPException(
                    409,
                    detail=f"the half-year starting {body.half_year_starting} already has "
                    f"{existing:.2f}%; a reference rate is fixed once known",
                )
            response.status_code = 200
    return {
        "half_year_starting": body.half_year_starting.isoformat(),
        "rate_percent": f"{body.rate_percent:.2f}",
        "source": body.source,
    }


@router.get("/forecast/{organisation_id}", tags=["insight"], summary="Expected receipts by week")
async def forecast(
    organisation_id: str,
    request: Request,
    principal: Principal = Depends(require("charity", "finance")),
    weeks: Annotated[int, Query(ge=1, le=104)] = 26,
    as_of: LedgerDate | None = None,
) -> dict:
    pcn_id = _organisation_scope(principal, organisation_id)
    as_of = as_of or domain.today_in_uk()
    async with runtime_of(request).sessionmaker() as session:
        open_items = await insight_store.open_on(session, organisation_id, as_of, pcn_id)
        counts = [
            c
            for c in await insight_store.acceptance_counts(session, organisation_id)
            if pcn_id is None or c["pcn_id"] == pcn_id
        ]
        pcns = sorted({p["pcn_id"] for p in open_items} | {c["pcn_id"] for c in counts})
        # The PCN's lateness so far, over everything it owes (any organisation): payments settled by as_of.
        history = await insight_store.due_payments(session, pcn_ids=pcns, due_to=as_of)
    lateness = {
        pcn: insight.median_days_late(
            [h for h in history if h.pcn_id == pcn and (h.settled_on is None or h.settled_on <= as_of)]
        )
        for pcn in pcns
    }
    receipts = []
    for p in open_items:
        on, kind = insight.expected_on(p["due_date"], lateness[p["pcn_id"]])
        receipts.append(insight.ExpectedReceipt(kind, p["pcn_id"], on, p["unpaid_pence"], p["payment_id"]))
    # Referrals accepted but not yet paid an outcome fee: share of this organisation's accepted
    # referrals that earned one, per PCN; expected at the due date of the current period, moved by lateness.
    # Only referrals accepted under an agreement that pays for outcomes can earn an outcome fee.
    counts = [c for c in counts if c["agreement"] is not None and c["agreement"]["per_outcome_pence"]]
    accepted = sum(c["accepted"] for c in counts)
    with_fee = sum(c["with_fee"] for c in counts)
    for c in counts:
        agreement = c["agreement"]
        waiting = c["waiting"]  # no outcome recorded yet: one that did not qualify earns nothing
        if waiting <= 0:
            continue
        amount = insight.likely_fee_pence(agreement["per_outcome_pence"], waiting, with_fee, accepted)
        if amount:
            due = domain.due_date(as_of, agreement["period"], agreement["days_after_period_end"])
            receipts.append(
                insight.ExpectedReceipt(
                    insight.LIKELY_OUTCOME_FEE,
                    c["pcn_id"],
                    due + timedelta(days=lateness[c["pcn_id"]]),
                    amount,
                    referral_count=waiting,
                )
            )
    by_week = insight.weekly(receipts, as_of, weeks)
    horizon_end = as_of + timedelta(days=7 * weeks - 1)
    return {
        "organisation_id": organisation_id,
        "as_of": as_of.isoformat(),
        "weeks": weeks,
        "currency": "GBP",
        "outcome_share_percent": insight.one_decimal(Fraction(100 * with_fee, accepted)) if accepted else None,
        "median_days_late_by_pcn": lateness,
        "expected_pence": sum(w["expected_pence"] for w in by_week),
        "beyond_horizon_pence": sum(r.amount_pence for r in receipts if r.expected_on > horizon_end),
        "by_week": by_week,
    }
