"""Unmet need: the directory counts referral-intake's refusals (`referral.refused`) with its own
declines for no capacity, and reports them to commissioners under the small-number rule."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from socialrx_shared import disclosure
from socialrx_shared.auth import Principal, require
from socialrx_shared.events import REFERRAL_REFUSED, Envelope, ReferralRefused
from socialrx_shared.runtime import ServiceRuntime
from socialrx_shared.service import runtime_of

from . import domain, unmet_need
from .store import referral_inbox, referral_refusals, services

router = APIRouter()


def register(rt: ServiceRuntime) -> None:
    @rt.consumer.on(REFERRAL_REFUSED.topic)
    async def on_refused(session: AsyncSession, envelope: Envelope, event: ReferralRefused) -> None:
        await session.execute(
            pg_insert(referral_refusals)
            .values(
                refusal_id=event.refusal_id,
                pcn_id=event.pcn_id,
                organisation_id=event.organisation_id,
                service_id=event.service_id,
                needs=event.needs,
                age_band=event.age_band,
                postcode_district=event.postcode_district,
                reason=event.reason,
                refused_at=event.refused_at,
            )
            .on_conflict_do_nothing(index_elements=["refusal_id"])
        )


def _day_bounds(from_: date, to: date) -> tuple[datetime, datetime]:
    return (
        datetime.combine(from_, time.min, timezone.utc),
        datetime.combine(to + timedelta(days=1), time.min, timezone.utc),
    )


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
) -> dict:
    today = datetime.now(timezone.utc).date()
    to = to or today
    from_ = from_ or to - timedelta(days=365)
    for name, day in (("from", from_), ("to", to)):
        if not 2000 <= day.year <= 2100:
            raise HTTPException(422, detail=f"{name} ({day}) is not a plausible date (years 2000 to 2100)")
    if from_ > to:
        raise HTTPException(422, detail=f"from ({from_}) is after to ({to}); give from on or before to")
    start, end = _day_bounds(from_, to)
    refused = select(referral_refusals).where(
        referral_refusals.c.refused_at >= start, referral_refusals.c.refused_at < end
    )
    declined = select(referral_inbox.c.needs, referral_inbox.c.postcode_district).where(
        referral_inbox.c.status == "declined",
        referral_inbox.c.decline_reason == "no_capacity",
        referral_inbox.c.decided_at >= start,
        referral_inbox.c.decided_at < end,
    )
    if principal.role == "finance":  # its own PCN's referrals only
        refused = refused.where(referral_refusals.c.pcn_id == principal.pcn_id)
        declined = declined.where(referral_inbox.c.pcn_id == principal.pcn_id)
    async with runtime_of(request).sessionmaker() as session:
        turned = [
            unmet_need.Turned(tuple(r.needs), r.postcode_district, unmet_need.REFUSAL_COLUMN[r.reason])
            for r in (await session.execute(refused)).all()
        ]
        turned += [
            unmet_need.Turned(tuple(r.needs), r.postcode_district, "declined_no_capacity")
            for r in (await session.execute(declined)).all()
        ]
        service_rows = (
            await session.execute(
                select(
                    services.c.id,
                    services.c.name,
                    services.c.needs,
                    services.c.postcode,
                    services.c.status,
                    services.c.capacity,
                    services.c.safeguarding_policy_valid_until,
                )
            )
        ).all()
    gaps = []
    for s in service_rows:
        gate = domain.gate(s.status, s.capacity, s.safeguarding_policy_valid_until, today)
        if gate.reason is not None and unmet_need.capacity_or_safeguarding(gate.reason):
            gaps.append(
                unmet_need.ServiceGap(
                    s.id, s.name, tuple(s.needs), domain.outward_code(s.postcode) if s.postcode else None, gate.reason
                )
            )
    return {
        "from": from_.isoformat(),
        "to": to.isoformat(),
        "pcn_id": principal.pcn_id if principal.role == "finance" else None,
        "disclosure_rule": disclosure.RULE,
        "items": unmet_need.report(turned, gaps),
    }
