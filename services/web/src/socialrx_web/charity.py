"""Charity pages: the inbox and its decisions, contact details, our services, webhooks, what we are owed."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta, timezone

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .api import ApiError
from .core import PageError, checked_form, is_htmx, need_role, render, see_other
from .insight import money_insight
from .link_worker import need_terms, service_names

router = APIRouter()
DECLINE_REASONS = {
    "no_capacity": "No capacity",
    "not_eligible": "Not eligible",
    "unable_to_contact": "Unable to contact",
    "person_declined": "The person declined",
    "other": "Other reason",
}
INBOX_STATUSES = {"received": "New", "accepted": "Accepted", "declined": "Declined", "finished": "Finished"}
POLICY_WARNING = timedelta(days=30)


def _today() -> date:
    return datetime.now(timezone.utc).date()


def _with_waiting(item: dict) -> dict:
    referred = datetime.fromisoformat(item["referred_at"]).date()
    return {**item, "days_waiting": (_today() - referred).days}


async def _inbox(request: Request, user) -> list[dict]:
    page = await request.app.state.apis.get(user, "directory", "/inbox", per_page=500)
    return [_with_waiting(i) for i in page["items"]]


@router.get("/inbox")
async def inbox(request: Request, status: str = "") -> Response:
    user = need_role(request, "charity")
    if status and status not in INBOX_STATUSES:
        raise PageError(400, "There is a problem", "Choose a status from the list.")
    items = await _inbox(request, user)
    counts = {s: sum(1 for i in items if i["status"] == s) for s in INBOX_STATUSES}
    shown = [i for i in items if not status or i["status"] == status]
    names = await service_names(request, user.organisation_id)
    return render(
        request,
        "inbox.html",
        items=shown,
        counts=counts,
        status=status,
        statuses=INBOX_STATUSES,
        names=names,
        reasons=DECLINE_REASONS,
    )


async def _decided(request: Request, user, referral_id: str, message: str) -> Response:
    if not is_htmx(request):
        return see_other(f"/inbox?decided={referral_id}")
    item = next((i for i in await _inbox(request, user) if i["referral_id"] == referral_id), None)
    if item is None:
        raise PageError(404, "Referral not found", "This referral is not in your organisation's inbox.")
    names = await service_names(request, user.organisation_id)
    return render(
        request,
        "_inbox_item.html",
        item=item,
        names=names,
        reasons=DECLINE_REASONS,
        statuses=INBOX_STATUSES,
        message=message,
    )


@router.post("/inbox/{referral_id}/accept")
async def accept(request: Request, referral_id: str) -> Response:
    user = need_role(request, "charity")
    await checked_form(request)
    await request.app.state.apis.json(user, "directory", "POST", f"/referrals/{referral_id}/accept")
    return await _decided(request, user, referral_id, "Accepted. You can now see the person's contact details.")


@router.post("/inbox/{referral_id}/decline")
async def decline(request: Request, referral_id: str) -> Response:
    user = need_role(request, "charity")
    form = await checked_form(request)
    reason = str(form.get("reason") or "")
    if reason not in DECLINE_REASONS:
        raise PageError(400, "Select a reason", "Select why you are declining the referral, then try again.")
    await request.app.state.apis.json(
        user, "directory", "POST", f"/referrals/{referral_id}/decline", json={"reason": reason}
    )
    return await _decided(request, user, referral_id, "Declined. The link worker will see the reason.")


@router.get("/referrals/{referral_id}/contact")
async def contact(request: Request, referral_id: str) -> Response:
    user = need_role(request, "charity")
    details = await _contact_once_accepted(request, user, referral_id)
    return render(request, "contact.html", c=details, referral_id=referral_id)


CONTACT_WAIT_S = 5.0


async def _contact_once_accepted(request: Request, user, referral_id: str) -> dict:
    """The acceptance reaches referral-intake as an event, a moment after the directory recorded it.

    A volunteer who clicks "Contact details" straight after "Accept" should see them, not a refusal:
    while the directory says this organisation accepted, wait a few seconds for referral-intake to agree.
    """
    apis = request.app.state.apis
    deadline = asyncio.get_running_loop().time() + CONTACT_WAIT_S
    while True:
        try:
            return await apis.get(user, "referral-intake", f"/referrals/{referral_id}/contact")
        except ApiError as exc:
            if exc.status != 403 or asyncio.get_running_loop().time() > deadline:
                raise
            if not await _directory_says_accepted(request, user, referral_id):
                raise
        await asyncio.sleep(0.25)


async def _directory_says_accepted(request: Request, user, referral_id: str) -> bool:
    item = next((i for i in await _inbox(request, user) if i["referral_id"] == referral_id), None)
    return item is not None and item.get("status") in ("accepted", "finished")


SERVICE_STATUSES = ("active", "temporarily closed", "inactive", "defunct")


@router.get("/our-services")
async def our_services(request: Request, changed: str = "") -> Response:
    user = need_role(request, "charity")
    return await _our_services(request, user, {}, {"needs": []}, changed=changed)


async def _our_services(
    request: Request, user, errors: dict, values: dict, status: int = 200, changed: str = ""
) -> Response:
    page = await request.app.state.apis.get(
        None, "directory", "/services", organization_id=user.organisation_id, per_page=500
    )
    terms = await need_terms(request)
    today = _today()
    services = []
    for svc in page["contents"]:
        gate = svc.get("x_socialrx", {})
        until = (
            date.fromisoformat(gate["safeguarding_policy_valid_until"])
            if gate.get("safeguarding_policy_valid_until")
            else None
        )
        services.append(
            {
                **svc,
                "gate": gate,
                "policy_until": until,
                "policy_warning": until is not None and today <= until <= today + POLICY_WARNING,
                "policy_expired": until is not None and until < today,
            }
        )
    return render(
        request,
        "our_services.html",
        status,
        services=services,
        terms=terms,
        errors=errors,
        values=values,
        statuses=SERVICE_STATUSES,
        changed=changed,
    )


def _service_fields(form, errors: dict, *, new: bool) -> dict:
    body: dict = {}
    capacity = str(form.get("capacity") or "").strip()
    if capacity or new:
        if not capacity.isdigit() or int(capacity) > 100_000:
            errors["capacity"] = "Enter the number of places, a whole number like 10 (0 when full)"
        else:
            body["capacity"] = int(capacity)
    until = str(form.get("safeguarding_policy_valid_until") or "").strip()
    if until:
        try:
            body["safeguarding_policy_valid_until"] = date.fromisoformat(until).isoformat()
        except ValueError:
            errors["safeguarding_policy_valid_until"] = (
                "Enter the date the safeguarding policy runs out, like 2027-03-31"
            )
    status = str(form.get("status") or "")
    if status:
        if status not in SERVICE_STATUSES:
            errors["status"] = "Select the service's status"
        else:
            body["status"] = status
    return body


@router.post("/our-services")
async def add_service(request: Request) -> Response:
    user = need_role(request, "charity")
    form = await checked_form(request)
    values = {
        k: str(form.get(k) or "").strip()
        for k in ("name", "description", "postcode", "capacity", "safeguarding_policy_valid_until")
    }
    values["needs"] = [str(n) for n in form.getlist("needs")]
    errors: dict[str, str] = {}
    if not values["name"]:
        errors["name"] = "Enter the service's name"
    if not values["needs"]:
        errors["needs"] = "Select at least one need the service meets"
    body = {
        "organization_id": user.organisation_id,
        "name": values["name"],
        "needs": values["needs"],
        **_service_fields(form, errors, new=True),
    }
    if values["description"]:
        body["description"] = values["description"]
    if values["postcode"]:
        body["postcode"] = values["postcode"].upper()
    if not errors:
        try:
            await request.app.state.apis.json(user, "directory", "POST", "/services", json=body)
            return see_other("/our-services?changed=added")
        except ApiError as exc:
            if exc.status not in (409, 422):
                raise
            errors["form"] = exc.message
    return await _our_services(request, user, errors, values, 400)


@router.post("/our-services/{service_id}")
async def update_service(request: Request, service_id: str) -> Response:
    user = need_role(request, "charity")
    form = await checked_form(request)
    errors: dict[str, str] = {}
    body = _service_fields(form, errors, new=False)
    if errors:
        return await _our_services(request, user, errors, {"needs": []}, 400)
    try:
        await request.app.state.apis.json(user, "directory", "PATCH", f"/services/{service_id}", json=body)
    except ApiError as exc:
        if exc.status != 422:
            raise
        return await _our_services(request, user, {"form": exc.message}, {"needs": []}, 400)
    return see_other("/our-services?changed=updated")


# --- webhooks ---------------------------------------------------------------------------------

WEBHOOK_EVENTS = ("referral.created", "referral.accepted", "referral.declined", "service.updated")


@router.get("/webhooks")
async def webhooks(request: Request) -> Response:
    user = need_role(request, "charity")
    page = await request.app.state.apis.get(user, "directory", "/subscriptions")
    return render(
        request,
        "webhooks.html",
        items=page["items"],
        events=WEBHOOK_EVENTS,
        errors={},
        values={"url": "", "events": list(WEBHOOK_EVENTS)},
        created=None,
    )


@router.post("/webhooks")
async def create_webhook(request: Request) -> Response:
    user = need_role(request, "charity")
    form = await checked_form(request)
    apis = request.app.state.apis
    values = {"url": str(form.get("url") or "").strip(), "events": [str(e) for e in form.getlist("events")]}
    errors, created = {}, None
    if not values["url"]:
        errors["url"] = "Enter the address that should receive your referral events, starting https://"
    if not values["events"]:
        errors["events"] = "Select at least one event"
    if not errors:
        try:
            created = await apis.json(user, "directory", "POST", "/subscriptions", json=values)
        except ApiError as exc:
            if exc.status not in (409, 422):
                raise
            errors["url"] = exc.message
    page = await apis.get(user, "directory", "/subscriptions")
    return render(
        request,
        "webhooks.html",
        400 if errors else 201,
        items=page["items"],
        events=WEBHOOK_EVENTS,
        errors=errors,
        values=values,
        created=created,
    )


@router.get("/webhooks/{subscription_id}")
async def deliveries(request: Request, subscription_id: str, replayed: str = "") -> Response:
    user = need_role(request, "charity")
    page = await request.app.state.apis.get(
        user, "directory", f"/subscriptions/{subscription_id}/deliveries", per_page=100
    )
    return render(
        request,
        "deliveries.html",
        items=page["items"],
        total=page["total"],
        subscription_id=subscription_id,
        replayed=replayed,
    )


@router.post("/webhooks/{subscription_id}/deliveries/{delivery_id}/replay")
async def replay(request: Request, subscription_id: str, delivery_id: int) -> Response:
    user = need_role(request, "charity")
    await checked_form(request)
    await request.app.state.apis.json(
        user, "directory", "POST", f"/subscriptions/{subscription_id}/deliveries/{delivery_id}/replay"
    )
    return see_other(f"/webhooks/{subscription_id}?replayed={delivery_id}")


# --- what we are owed ---------------------------------------------------------------------------


@router.get("/owed")
async def owed(request: Request) -> Response:
    user = need_role(request, "charity")
    apis = request.app.state.apis
    arrears = await apis.get(user, "funding-ledger", "/arrears")
    payments = await apis.get(user, "funding-ledger", "/payments", per_page=1000)
    money = await money_insight(request, user, user.organisation_id)
    return render(request, "owed.html", arrears=arrears, payments=payments["items"], total=payments["total"], **money)


@router.get("/owed/statement.csv")
async def our_statement(request: Request) -> Response:
    user = need_role(request, "charity")
    response = await request.app.state.apis.call(
        user, "funding-ledger", "GET", f"/statements/{user.organisation_id}", params={"format": "csv"}
    )
    return Response(
        response.content,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": response.headers.get("content-disposition", 'attachment; filename="statement.csv"')
        },
    )
