"""Unmet need: the directory counts referral-intake's refusals (`referral.refused`, recorded by
`handlers.py`) with its own declines for no capacity, and reports them to commissioners under the
small-number rule. The HTTP edge of `unmet_need` (the rules) and `store.turned_away` (the read)."""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from socialrx_shared import disclosure
from socialrx_shared.auth import Principal, require
from socialrx_shared.service import runtime_of

from . import store, unmet_need

router = APIRouter()


@router.get(
    "/reports/unmet-need",
    tags=["reports"],
    summary="Referrals refused or declined for capacity or safeguarding, by need and district",
)
async def unmet_need_report(
    request: Request,
    principal: Principal = Depends(require("admin", "finance")),
    from_: Annotated[date | None, Query(alias="from")] = None,
    to: date | None = None,
) -> dict[str, Any]:
    today = datetime.now(timezone.utc).date()
    from_, to = unmet_need.period(from_, to, today)
    pcn_id = principal.pcn_id if principal.role == "finance" else None  # finance: its own PCN's referrals only
    turned, gaps = await store.turned_away(runtime_of(request), from_, to, pcn_id, today)
    return {
        "from": from_.isoformat(),
        "to": to.isoformat(),
        "pcn_id": pcn_id,
        "disclosure_rule": disclosure.RULE,
        "items": unmet_need.report(turned, gaps),
    }
