"""Link worker pages: find a service, refer a person, follow referrals, record outcomes.

The referral page and the outcome form are shared with the charity the referral was sent to.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timezone
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .api import ApiError
from .core import PageError, checked_form, need_role, render, see_other

router = APIRouter()
STATUSES = ("created", "accepted", "declined", "outcome_recorded")
PERSON_FIELDS = ("nhs_number", "given_name", "family_name", "postcode", "phone", "email")
INSTRUMENTS = {"ONS4": (4, 0, 10), "SWEMWBS": (7, 1, 5), "WEMWBS": (14, 1, 5)}
# The ONS personal well-being questions, published wording (Crown copyright, Open Government
# Licence v3.0). WEMWBS and SWEMWBS are licensed: shown by item number only.
ONS4_QUESTIONS = (
    "Overall, how satisfied are you with your life nowadays?",
    "Overall, to what extent do you feel that the things you do in your life are worthwhile?",
    "Overall, how happy did you feel yesterday?",
    "Overall, how anxious did you feel yesterday?",
)


async def need_terms(request: Request) -> list[dict]:
    page = await request.app.state.apis.get(None, "directory", "/taxonomy_terms", per_page=500)
    return sorted(page["contents"], key=lambda t: t["name"])


@router.get("/find")
async def find_service(request: Request, q: str = "", need: str = "", postcode: str = "") -> Response:
    user = need_role(request, "link_worker", "admin")
    apis = request.app.state.apis
    terms = await need_terms(request)
    results, error = None, None
    if q or need or postcode:
        term_id = next((t["id"] for t in terms if t["term"] == need), None)
        try:
            page = await apis.get(
                user,
                "directory",
                "/services",
                search=q.strip()[:200] or None,
                taxonomy_term_id=term_id if need else None,
                postcode=postcode.strip()[:10] or None,
                per_page=100,
            )
            results = page["contents"]
        except ApiError as exc:
            if exc.status != 422:
                raise
            error = exc.message
    return render(request, "find.html", terms=terms, results=results, q=q, need=need, postcode=postcode, error=error)


async def _service(request: Request, service_id: str) -> dict:
    try:
        return await request.app.state.apis.get(None, "directory", f"/services/{service_id}")
    except ApiError as exc:
        if exc.status == 404:
            raise PageError(404, "Service not found", "This service is not in the directory. Find another.") from None
        raise


def _form_values(form: Any) -> dict[str, str]:
    keys = (*PERSON_FIELDS, "dob_day", "dob_month", "dob_year", "practice_id", "idempotency_key")
    values = {k: str(form.get(k) or "").strip() for k in keys}
    values["needs"] = [str(n) for n in form.getlist("needs")]
    values["consent"] = form.get("consent") == "yes"
    return values


# Where an API validation error (its `loc`) belongs on the form.
FIELD_OF_LOC = {("person", k): k for k in PERSON_FIELDS} | {
    ("person", "date_of_birth"): "dob",
    ("needs",): "needs",
    ("practice_id",): "practice_id",
    ("consent",): "consent",
}
FIRST_INPUT = {"dob": "dob_day", "needs": "needs", "consent": "consent"}


def _referral_errors(values: dict) -> dict[str, str]:
    errors = {}
    for key, words in (
        ("given_name", "first name"),
        ("family_name", "last name"),
        ("nhs_number", "NHS number"),
        ("postcode", "postcode"),
    ):
        if not values[key]:
            errors[key] = f"Enter the person's {words}"
    try:
        born = date(int(values["dob_year"]), int(values["dob_month"]), int(values["dob_day"]))
        if born > date.today():
            errors["dob"] = "Date of birth must be in the past"
    except ValueError:
        errors["dob"] = "Enter the person's date of birth, like 14 3 1951"
    if not values["needs"]:
        errors["needs"] = "Select at least one need"
    if not values["consent"]:
        errors["consent"] = "The person must agree to be referred: confirm their consent"
    return errors


def _api_field_errors(exc: ApiError) -> dict[str, str]:
    if isinstance(exc.detail, list):
        errors = {}
        for item in exc.detail:
            loc = tuple(str(p) for p in item.get("loc", [])[1:])
            field = FIELD_OF_LOC.get(loc[:2]) or FIELD_OF_LOC.get(loc[:1]) or "form"
            message = str(item.get("msg", "is not valid")).removeprefix("Value error, ")
            errors.setdefault(field, message[:1].upper() + message[1:])
        return errors
    text = exc.message
    if "consent" in text:
        return {"consent": text}
    if "practice" in text:
        return {"practice_id": text}
    return {"form": text}


async def _refer_page(request: Request, service: dict, values: dict, errors: dict, status: int = 200) -> Response:
    terms = await need_terms(request)
    offered = set(service.get("x_socialrx", {}).get("needs", []))
    return render(
        request,
        "refer.html",
        status,
        service=service,
        values=values,
        errors=errors,
        terms=[t for t in terms if t["term"] in offered] or terms,
        first_input=FIRST_INPUT,
    )


@router.get("/refer/{service_id}")
async def refer_form(request: Request, service_id: str) -> Response:
    user = need_role(request, "link_worker")
    service = await _service(request, service_id)
    gate = service.get("x_socialrx", {})
    if not gate.get("accepting_referrals"):
        raise PageError(
            409,
            "This service is not accepting referrals",
            f"{service['name']}: {gate.get('not_accepting_reason') or 'not accepting referrals'}. "
            "Find another service.",
        )
    values = {
        "needs": [],
        "consent": False,
        "practice_id": user.practice_id or "",
        "idempotency_key": str(uuid.uuid4()),
    }
    return await _refer_page(request, service, values, {})


@router.post("/refer/{service_id}")
async def refer(request: Request, service_id: str) -> Response:
    user = need_role(request, "link_worker")
    form = await checked_form(request)
    service = await _service(request, service_id)
    values = _form_values(form)
    values["idempotency_key"] = values["idempotency_key"] or str(uuid.uuid4())
    errors = _referral_errors(values)
    if errors:
        return await _refer_page(request, service, values, errors, 400)
    person = {k: values[k] for k in PERSON_FIELDS if values[k]}
    person["date_of_birth"] = date(
        int(values["dob_year"]), int(values["dob_month"]), int(values["dob_day"])
    ).isoformat()
    body = {
        "service_id": service_id,
        "needs": values["needs"],
        "person": person,
        "consent": {"given": True, "recorded_at": datetime.now(timezone.utc).isoformat()},
    }
    if values["practice_id"]:
        body["practice_id"] = values["practice_id"].upper()
    try:
        created = await request.app.state.apis.json(
            user,
            "referral-intake",
            "POST",
            "/referrals",
            json=body,
            headers={"Idempotency-Key": values["idempotency_key"]},
        )
    except ApiError as exc:
        if exc.status not in (404, 409, 422):
            raise
        return await _refer_page(request, service, values, _api_field_errors(exc), 400)
    return see_other(f"/referrals/{created['id']}?created=1")


@router.get("/referrals")
async def my_referrals(request: Request, status: str = "") -> Response:
    user = need_role(request, "link_worker", "admin")
    if status and status not in STATUSES:
        raise PageError(400, "There is a problem", "Choose a status from the list.")
    apis = request.app.state.apis
    page = await apis.get(user, "referral-intake", "/referrals", status=status or None, per_page=500)
    names = await service_names(request)
    # Oldest first: the people waiting longest come to the top.
    items = sorted(page["items"], key=lambda r: r["created_at"])
    return render(
        request, "referrals.html", items=items, total=page["total"], status=status, statuses=STATUSES, names=names
    )


async def service_names(request: Request, organisation_id: str | None = None) -> dict[str, str]:
    page = await request.app.state.apis.get(
        None, "directory", "/services", per_page=500, organization_id=organisation_id
    )
    return {s["id"]: s["name"] for s in page["contents"]}


@router.get("/referrals/{referral_id}")
async def referral_page(request: Request, referral_id: str, created: str = "", recorded: str = "") -> Response:
    user = need_role(request, "link_worker", "charity", "admin")
    apis = request.app.state.apis
    referral = await apis.get(user, "referral-intake", f"/referrals/{referral_id}")
    try:
        outcomes = await apis.get(user, "outcomes", f"/referrals/{referral_id}/outcomes")
    except ApiError as exc:
        if exc.status != 404:  # a new referral may not have reached the outcomes service yet
            raise
        outcomes = None
    names = await service_names(request, referral["organisation_id"])
    return render(
        request,
        "referral.html",
        r=referral,
        outcomes=outcomes,
        created=bool(created),
        recorded=bool(recorded),
        service_name=names.get(referral["service_id"], "a service"),
    )


def _outcome_values(form: Any | None) -> dict:
    if form is None:
        return {"status": "", "sessions_attended": "", "measures": {}}
    values = {
        "status": str(form.get("status") or ""),
        "sessions_attended": str(form.get("sessions_attended") or "").strip(),
        "measures": {},
    }
    for name, (count, _, _) in INSTRUMENTS.items():
        values["measures"][name] = {
            "phase": str(form.get(f"{name}_phase") or ""),
            "answers": [str(form.get(f"{name}_{i}") or "") for i in range(1, count + 1)],
        }
    return values


def _outcome_body(values: dict) -> tuple[dict, dict[str, str]]:
    errors: dict[str, str] = {}
    if values["status"] not in ("engaged", "completed", "disengaged"):
        errors["status"] = "Select how the person took part"
    if not values["sessions_attended"].isdigit() or int(values["sessions_attended"]) > 1000:
        errors["sessions_attended"] = "Enter the number of sessions attended, a whole number like 6"
    measures = []
    for name, (_count, low, high) in INSTRUMENTS.items():
        given = values["measures"][name]
        if not given["phase"]:
            continue
        if given["phase"] not in ("baseline", "follow_up"):
            errors[f"{name}_phase"] = f"Select when {name} was answered"
            continue
        answers = given["answers"]
        bad = [i for i, a in enumerate(answers, 1) if not (a.isdigit() and low <= int(a) <= high)]
        if bad:
            errors[f"{name}_{bad[0]}"] = f"{name}: answer every item from {low} to {high} (item {bad[0]} is missing)"
            continue
        measures.append({"instrument": name, "phase": given["phase"], "answers": [int(a) for a in answers]})
    body = {
        "status": values["status"],
        "sessions_attended": int(values["sessions_attended"] or 0),
        "measures": measures,
    }
    return body, errors


@router.get("/referrals/{referral_id}/outcome")
async def outcome_form(request: Request, referral_id: str) -> Response:
    user = need_role(request, "link_worker", "charity")
    referral = await request.app.state.apis.get(user, "referral-intake", f"/referrals/{referral_id}")
    return render(
        request,
        "outcome.html",
        r=referral,
        values=_outcome_values(None),
        errors={},
        instruments=INSTRUMENTS,
        ons4=ONS4_QUESTIONS,
    )


@router.post("/referrals/{referral_id}/outcome")
async def record_outcome(request: Request, referral_id: str) -> Response:
    user = need_role(request, "link_worker", "charity")
    form = await checked_form(request)
    apis = request.app.state.apis
    values = _outcome_values(form)
    body, errors = _outcome_body(values)
    if not errors:
        try:
            await apis.json(user, "outcomes", "POST", f"/referrals/{referral_id}/outcomes", json=body)
            return see_other(f"/referrals/{referral_id}?recorded=1")
        except ApiError as exc:
            if exc.status not in (404, 409, 422):
                raise
            errors = {"form": exc.message}
    referral = await apis.get(user, "referral-intake", f"/referrals/{referral_id}")
    return render(
        request,
        "outcome.html",
        400,
        r=referral,
        values=values,
        errors=errors,
        instruments=INSTRUMENTS,
        ons4=ONS4_QUESTIONS,
    )
