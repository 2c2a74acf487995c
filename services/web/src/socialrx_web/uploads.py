"""Upload pages: a charity's outcomes from a spreadsheet; a link worker's referrals from another system.

The file goes to the service's bulk endpoint as it came (the service checks every line); the page
shows the per-line results. Nothing is decided here.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .api import ApiError
from .core import checked_form, need_role, render

router = APIRouter()
UPLOAD_TIMEOUT_S = 120.0

# The services' own limits (referral-intake 12 MB, outcomes 5 MB): refused here before sending.
PAGES = {
    "outcomes": {
        "path": "/upload-outcomes",
        "role": "charity",
        "service": "outcomes",
        "endpoint": "/outcomes/bulk",
        "max_bytes": 5_000_000,
        "title": "Upload outcomes",
    },
    "referrals": {
        "path": "/upload-referrals",
        "role": "link_worker",
        "service": "referral-intake",
        "endpoint": "/referrals/bulk",
        "max_bytes": 12_000_000,
        "title": "Upload referrals",
    },
}


def _page(request: Request, kind: str, status_code: int = 200, **context: object) -> Response:
    return render(
        request, "upload.html", status_code, kind=kind, page=PAGES[kind], **{"result": None, "error": None, **context}
    )


async def _upload(request: Request, kind: str) -> Response:
    page = PAGES[kind]
    user = need_role(request, str(page["role"]))
    form = await checked_form(request)
    upload = form.get("file")
    if upload is None or not hasattr(upload, "read"):
        return _page(request, kind, 400, error="Select a CSV file to upload")
    max_bytes = int(page["max_bytes"])  # type: ignore[call-overload]
    raw = await upload.read(max_bytes + 1)
    if not raw.strip():
        return _page(request, kind, 400, error="The file is empty. Select the CSV file you saved from the spreadsheet.")
    if len(raw) > max_bytes:
        return _page(
            request,
            kind,
            413,
            error=f"The file is larger than {max_bytes // 1_000_000} MB. Split it into several files and upload each.",
        )
    try:
        # A 20,000-line file takes longer than an ordinary call may; sending it again after a timeout
        # is safe (every line is idempotent), so the wait is bounded, not endless.
        result = await request.app.state.apis.json(
            user,
            str(page["service"]),
            "POST",
            str(page["endpoint"]),
            content=raw,
            headers={"content-type": "text/csv"},
            timeout=UPLOAD_TIMEOUT_S,
        )
    except ApiError as exc:
        if exc.status not in (413, 415, 422):
            raise
        return _page(request, kind, 400, error=exc.message)
    return _page(request, kind, result=result)


@router.get("/upload-outcomes")
async def outcomes_form(request: Request) -> Response:
    need_role(request, "charity")
    return _page(request, "outcomes")


@router.post("/upload-outcomes")
async def upload_outcomes(request: Request) -> Response:
    return await _upload(request, "outcomes")


@router.get("/upload-referrals")
async def referrals_form(request: Request) -> Response:
    need_role(request, "link_worker")
    return _page(request, "referrals")


@router.post("/upload-referrals")
async def upload_referrals(request: Request) -> Response:
    return await _upload(request, "referrals")
