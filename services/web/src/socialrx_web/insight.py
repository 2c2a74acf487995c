"""Insight pages: the charity's forecast and late-payment figure (on "What we are owed"), and for
finance and admin, prompt payment and unmet need as tables with server-drawn charts.

Each page makes one bounded call per figure it shows; the services decide who may see what (a
charity asking for another organisation's forecast gets the ledger's 403, shown as a page).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .chart import PROMPT_SERIES, UNMET_SERIES, prompt_payment_chart, unmet_need_chart
from .core import need_role, render
from .finance import organisations

router = APIRouter()
FORECAST_WEEKS = 26
KINDS = {
    "open_payment_at_due_date": "Payment due (this PCN usually pays on time)",
    "open_payment_moved_by_pcn_median_lateness": "Payment due, moved by how late this PCN usually pays",
    "likely_outcome_fee": "Likely outcome fee (accepted referrals still waiting for an outcome)",
}


def _today() -> date:
    return datetime.now(timezone.utc).date()


def forecast_rows(forecast: dict) -> list[dict]:
    """The weeks that expect money, each line with its kind said in words."""
    return [
        {
            **week,
            "lines": [
                {**line, "kind_text": KINDS.get(line["kind"], line["kind"].replace("_", " "))} for line in week["lines"]
            ],
        }
        for week in forecast["by_week"]
        if week["lines"]
    ]


async def money_insight(request: Request, user, organisation_id: str) -> dict:
    """The forecast and the late-payment figure for one organisation: one call each."""
    apis = request.app.state.apis
    forecast = await apis.get(user, "funding-ledger", f"/forecast/{organisation_id}", weeks=FORECAST_WEEKS)
    late = await apis.get(user, "funding-ledger", f"/late-payment/{organisation_id}")
    return {"forecast": forecast, "weeks": forecast_rows(forecast), "late": late, "kinds": KINDS}


@router.get("/forecast/{organisation_id}")
async def forecast_page(request: Request, organisation_id: str) -> Response:
    """One organisation's forecast and late-payment figure (a charity: its own; finance: its PCN's share)."""
    user = need_role(request, "charity", "finance")
    return render(
        request, "forecast.html", organisation_id=organisation_id, **await money_insight(request, user, organisation_id)
    )


def window(start: str, end: str) -> tuple[dict, dict[str, str]]:
    """The report window from the form: default the last 12 months to today; refusals said plainly."""
    errors: dict[str, str] = {}
    values = {"start": start.strip(), "end": end.strip()}
    chosen: dict[str, date] = {}
    for field, name in (("start", "From"), ("end", "To")):
        if values[field]:
            try:
                chosen[field] = date.fromisoformat(values[field])
            except ValueError:
                errors[field] = f"Enter a real date for '{name}', like 2026-04-01"
                continue
            if not 2000 <= chosen[field].year <= 2100:
                errors[field] = f"Enter a date for '{name}' between the years 2000 and 2100"
    if errors:
        return values, errors
    to = chosen.get("end") or _today()
    from_ = chosen.get("start") or (to - timedelta(days=365))
    if from_ > to:
        return values, {"start": "The 'From' date must be on or before the 'To' date"}
    return {"start": from_.isoformat(), "end": to.isoformat()}, {}


@router.get("/prompt-payment")
async def prompt_payment(request: Request, start: str = "", end: str = "") -> Response:
    user = need_role(request, "finance", "admin")
    values, errors = window(start, end)
    if errors:
        return render(request, "prompt_payment.html", 400, values=values, errors=errors, report=None)
    report = await request.app.state.apis.get(
        user, "funding-ledger", "/reports/prompt-payment", **{"from": values["start"], "to": values["end"]}
    )
    orgs = await organisations(request)
    by_org = [(orgs.get(r["organisation_id"], r["organisation_id"]), r) for r in report["by_organisation"]]
    by_pcn = [(f"PCN {r['pcn_id']}", r) for r in report["by_pcn"]]
    svg = prompt_payment_chart(
        by_org,
        title=f"Payments due from {values['start']} to {values['end']}, by organisation "
        "and how promptly they were paid",
    )
    return render(
        request,
        "prompt_payment.html",
        values=values,
        errors={},
        report=report,
        by_org=by_org,
        by_pcn=by_pcn,
        svg=svg,
        series=PROMPT_SERIES,
    )


@router.get("/unmet-need")
async def unmet_need(request: Request, start: str = "", end: str = "") -> Response:
    user = need_role(request, "finance", "admin")
    values, errors = window(start, end)
    if errors:
        return render(request, "unmet_need.html", 400, values=values, errors=errors, report=None)
    report = await request.app.state.apis.get(
        user, "directory", "/reports/unmet-need", **{"from": values["start"], "to": values["end"]}
    )
    rows = [(f"{r['need'].replace('-', ' ').capitalize()}, {r['postcode_district']}", r) for r in report["items"]]
    svg = unmet_need_chart(
        rows, title=f"Unmet need from {values['start']} to {values['end']}, by need, district and reason"
    )
    return render(
        request, "unmet_need.html", values=values, errors={}, report=report, rows=rows, svg=svg, series=UNMET_SERIES
    )
