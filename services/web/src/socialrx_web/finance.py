"""Finance pages: agreements, payments due, arrears with a chart, statements, settlements, remittances."""

from __future__ import annotations

import re
import uuid
from datetime import date, datetime, timezone
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .api import ApiError
from .chart import BUCKETS, arrears_chart
from .core import PageError, checked_form, need_role, render, see_other

router = APIRouter()
POUNDS = re.compile(r"^£?\s*(\d{1,9})(?:\.(\d{1,2}))?$")
MAX_REMITTANCE_BYTES = 5 * 1024 * 1024


def pence_from(text: str) -> int | None:
    """'50', '50.5', '£1234.56' -> exact integer pence; anything else None (never a float)."""
    found = POUNDS.match(text.replace(",", "").strip())
    if not found:
        return None
    return int(found.group(1)) * 100 + int((found.group(2) or "0").ljust(2, "0"))


async def organisations(request: Request) -> dict[str, str]:
    page = await request.app.state.apis.get(None, "directory", "/organizations", per_page=500)
    return {o["id"]: o["name"] for o in page["contents"]}


def _parse_date(text: str, field: str, errors: dict, required: bool = True) -> date | None:
    if not text:
        if required:
            errors[field] = "Enter a date, like 2026-04-01"
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        errors[field] = "Enter a real date, like 2026-04-01"
        return None


@router.get("/agreements")
async def agreements(request: Request) -> Response:
    user = need_role(request, "finance")
    return await _agreements_page(request, user, {}, {"period": "quarterly", "days_after_period_end": "30"}, 200)


async def _agreements_page(request: Request, user, errors: dict, values: dict, status: int) -> Response:
    items = (await request.app.state.apis.get(user, "funding-ledger", "/agreements"))["items"]
    openapi = await request.app.state.apis.get(None, "funding-ledger", "/openapi.json")
    return render(
        request,
        "agreements.html",
        status,
        items=items,
        orgs=await organisations(request),
        errors=errors,
        values=values,
        can_end=patch_fields(openapi) >= {"ends_on"},
    )


def patch_fields(openapi: dict) -> set[str]:
    """The fields `PATCH /agreements/{agreement_id}` takes, if the ledger offers it (another change
    adds it): ending an agreement appears in the page only once the API can do it."""
    operation = openapi.get("paths", {}).get("/agreements/{agreement_id}", {}).get("patch")
    if not isinstance(operation, dict):
        return set()
    schema = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
    ref = schema.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        schema = openapi.get("components", {}).get("schemas", {}).get(ref.rsplit("/", 1)[1], {})
    return set(schema.get("properties", {}))


@router.post("/agreements/{agreement_id}/end")
async def end_agreement(request: Request, agreement_id: str) -> Response:
    user = need_role(request, "finance")
    form = await checked_form(request)
    errors: dict[str, str] = {}
    ends_on = _parse_date(str(form.get("ends_on") or "").strip(), f"ends_on-{agreement_id}", errors)
    if not errors:
        try:
            await request.app.state.apis.json(
                user, "funding-ledger", "PATCH", f"/agreements/{agreement_id}", json={"ends_on": ends_on.isoformat()}
            )
            return see_other("/agreements?ended=1")
        except ApiError as exc:
            if exc.status not in (404, 405, 409, 422):
                raise
            errors["form"] = exc.message
    return await _agreements_page(request, user, errors, {"period": "quarterly", "days_after_period_end": "30"}, 400)


@router.post("/agreements")
async def create_agreement(request: Request) -> Response:
    user = need_role(request, "finance")
    form = await checked_form(request)
    keys = (
        "organisation_id",
        "per_referral",
        "per_outcome",
        "block_grant",
        "cap",
        "period",
        "days_after_period_end",
        "starts_on",
        "ends_on",
    )
    values = {k: str(form.get(k) or "").strip() for k in keys}
    errors: dict[str, str] = {}
    if not values["organisation_id"]:
        errors["organisation_id"] = "Select the organisation"
    body: dict = {"organisation_id": values["organisation_id"], "period": values["period"] or "quarterly"}
    for key, api_key in (
        ("per_referral", "per_referral_pence"),
        ("per_outcome", "per_outcome_pence"),
        ("block_grant", "block_grant_pence_per_period"),
        ("cap", "cap_pence_per_year"),
    ):
        if values[key]:
            pence = pence_from(values[key])
            if pence is None:
                errors[key] = "Enter an amount in pounds, like 50 or 50.00"
            else:
                body[api_key] = pence
    if not values["days_after_period_end"].isdigit():
        errors["days_after_period_end"] = "Enter a number of days, like 30"
    else:
        body["days_after_period_end"] = int(values["days_after_period_end"])
    starts = _parse_date(values["starts_on"], "starts_on", errors)
    ends = _parse_date(values["ends_on"], "ends_on", errors, required=False)
    body.update(starts_on=starts.isoformat() if starts else None, ends_on=ends.isoformat() if ends else None)
    if not errors:
        try:
            await request.app.state.apis.json(user, "funding-ledger", "POST", "/agreements", json=body)
            return see_other("/agreements?created=1")
        except ApiError as exc:
            if exc.status not in (409, 422):
                raise
            errors["form"] = exc.message
    return await _agreements_page(request, user, errors, values, 400)


@router.get("/payments")
async def payments(request: Request, status: str = "open") -> Response:
    user = need_role(request, "finance")
    if status not in ("open", "settled", "all"):
        raise PageError(400, "There is a problem", "Choose open, settled or all.")
    page = await request.app.state.apis.get(
        user, "funding-ledger", "/payments", per_page=1000, status=None if status == "all" else status
    )
    return render(
        request,
        "payments.html",
        items=page["items"],
        total=page["total"],
        status=status,
        orgs=await organisations(request),
    )


@router.get("/arrears")
async def arrears(request: Request, as_of: str = "") -> Response:
    user = need_role(request, "finance")
    errors: dict[str, str] = {}
    chosen = _parse_date(as_of, "as_of", errors, required=False) if as_of else datetime.now(timezone.utc).date()
    if errors:
        raise PageError(400, "There is a problem", "Enter the date as 2026-11-30.")
    report = await request.app.state.apis.get(user, "funding-ledger", "/arrears", as_of=chosen.isoformat())
    orgs = await organisations(request)
    rows = [(orgs.get(r["organisation_id"], r["organisation_id"]), r) for r in report["by_organisation"]]
    svg = arrears_chart([(name, r) for name, r in rows], title=f"Arrears by age at {chosen:%-d %B %Y}")
    return render(request, "arrears.html", report=report, rows=rows, svg=svg, as_of=chosen.isoformat(), buckets=BUCKETS)


# A year's statement can run to thousands of lines: the page shows them 200 at a time, each with the
# statement's running balance; the CSV download is always the whole statement.
STATEMENT_LINES_PER_PAGE = 200


@router.get("/statements/{organisation_id}")
async def statement(
    request: Request, organisation_id: str, start: str = "", end: str = "", page: str = "1"
) -> Response:
    user = need_role(request, "finance", "admin")
    if not page.isdigit() or not 1 <= int(page) <= 100_000:
        raise PageError(400, "There is a problem", "The page number must be a whole number from 1.")
    body = await request.app.state.apis.get(
        user,
        "funding-ledger",
        f"/statements/{organisation_id}",
        **{"from": start or None, "to": end or None},
        page=int(page),
        per_page=STATEMENT_LINES_PER_PAGE,
    )
    orgs = await organisations(request)
    return render(
        request,
        "statement.html",
        s=body,
        organisation_id=organisation_id,
        name=orgs.get(organisation_id, organisation_id),
        start=start,
        end=end,
        pages=_line_pages(body, f"/statements/{organisation_id}?" + urlencode({"start": start, "end": end})),
    )


def _line_pages(body: dict, base_url: str) -> dict:
    """The previous and next links of a paged statement, labelled by the lines they show."""
    page, per_page, total = body["page"], body["per_page"], body["total"]

    def link(n: int) -> dict:
        first, last = (n - 1) * per_page + 1, min(n * per_page, total)
        return {"href": f"{base_url}&page={n}", "labelText": f"Lines {first} to {last} of {total}"}

    return {
        "previous": link(page - 1) if page > 1 and total else {},
        "next": link(page + 1) if page * per_page < total else {},
    }


@router.get("/statements/{organisation_id}/csv")
async def statement_csv(request: Request, organisation_id: str, start: str = "", end: str = "") -> Response:
    user = need_role(request, "finance", "admin")
    params = {k: v for k, v in (("from", start), ("to", end), ("format", "csv")) if v}
    response = await request.app.state.apis.call(
        user, "funding-ledger", "GET", f"/statements/{organisation_id}", params=params
    )
    return Response(
        response.content,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": response.headers.get("content-disposition", 'attachment; filename="statement.csv"')
        },
    )


@router.get("/settlements")
async def settlements(request: Request) -> Response:
    user = need_role(request, "finance")
    return await _settlements_page(request, user, {}, {"idempotency_key": str(uuid.uuid4())}, 200)


async def _settlements_page(request: Request, user, errors: dict, values: dict, status: int) -> Response:
    items = (await request.app.state.apis.get(user, "funding-ledger", "/settlements"))["items"]
    return render(
        request,
        "settlements.html",
        status,
        items=items,
        orgs=await organisations(request),
        errors=errors,
        values=values,
    )


@router.post("/settlements")
async def record_settlement(request: Request) -> Response:
    user = need_role(request, "finance")
    form = await checked_form(request)
    values = {
        k: str(form.get(k) or "").strip()
        for k in ("organisation_id", "amount", "paid_on", "reference", "idempotency_key")
    }
    errors: dict[str, str] = {}
    if not values["organisation_id"]:
        errors["organisation_id"] = "Select the organisation you paid"
    amount = pence_from(values["amount"])
    if not amount:
        errors["amount"] = "Enter the amount paid in pounds, like 170.00"
    paid_on = _parse_date(values["paid_on"], "paid_on", errors)
    if not values["reference"]:
        errors["reference"] = "Enter the payment's reference, as on the bank statement"
    if not errors:
        try:
            await request.app.state.apis.json(
                user,
                "funding-ledger",
                "POST",
                "/settlements",
                json={
                    "organisation_id": values["organisation_id"],
                    "amount_pence": amount,
                    "paid_on": paid_on.isoformat(),
                    "reference": values["reference"],
                },
                headers={"Idempotency-Key": values["idempotency_key"] or str(uuid.uuid4())},
            )
            return see_other("/settlements?recorded=1")
        except ApiError as exc:
            if exc.status not in (409, 422):
                raise
            errors["form"] = exc.message
    return await _settlements_page(request, user, errors, values, 400)


@router.get("/reconciliation")
async def reconciliation_form(request: Request) -> Response:
    need_role(request, "finance")
    return render(request, "reconciliation.html", result=None, csv_text="", error=None)


@router.post("/reconciliation")
async def reconcile(request: Request) -> Response:
    """Preview an uploaded remittance (nothing posted); the same text is posted by the next form."""
    user = need_role(request, "finance")
    form = await checked_form(request)
    upload = form.get("file")
    text = str(form.get("csv_text") or "")
    post = form.get("post") == "yes"
    if upload is not None and hasattr(upload, "read"):
        raw = await upload.read(MAX_REMITTANCE_BYTES + 1)
        if len(raw) > MAX_REMITTANCE_BYTES:
            return render(
                request,
                "reconciliation.html",
                413,
                result=None,
                csv_text="",
                error="The file is larger than 5 MB. Split the remittance and upload each part.",
            )
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            return render(
                request,
                "reconciliation.html",
                400,
                result=None,
                csv_text="",
                error="The file is not UTF-8 text. Save it as 'CSV UTF-8' and upload it again.",
            )
    if not text.strip():
        return render(
            request,
            "reconciliation.html",
            400,
            result=None,
            csv_text="",
            error="Select a remittance CSV file to upload",
        )
    try:
        result = await request.app.state.apis.json(
            user,
            "funding-ledger",
            "POST",
            "/reconciliation",
            params={"post": "true" if post else "false"},
            files={"file": ("remittance.csv", text.encode(), "text/csv")},
        )
    except ApiError as exc:
        if exc.status not in (413, 422):
            raise
        return render(request, "reconciliation.html", 400, result=None, csv_text="", error=exc.message)
    return render(
        request, "reconciliation.html", result=result, csv_text=text, error=None, orgs=await organisations(request)
    )
