"""referral-intake's reads: what the API renders. No transaction, no change."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from socialrx_shared.auth import Principal

from .store import contact_access_audit, referrals, timeline

Sessions = async_sessionmaker[AsyncSession]

LISTED = (
    "id",
    "status",
    "service_id",
    "organisation_id",
    "pcn_id",
    "needs",
    "age_band",
    "postcode_district",
    "decline_reason",
    "created_at",
    "updated_at",
)


async def referral(sessions: Sessions, referral_id: str) -> dict[str, Any] | None:
    """A referral's row with its timeline (oldest first), or None."""
    async with sessions() as session:
        row = (await session.execute(select(referrals).where(referrals.c.id == referral_id))).mappings().first()
        if row is None:
            return None
        entries = (
            (
                await session.execute(
                    select(timeline.c.status, timeline.c.at, timeline.c.detail)
                    .where(timeline.c.referral_id == referral_id)
                    .order_by(timeline.c.at, timeline.c.id)
                )
            )
            .mappings()
            .all()
        )
    return {**dict(row), "timeline": [dict(e) for e in entries]}


def may_read(principal: Principal, row: dict[str, Any]) -> bool:
    if principal.role == "admin":
        return True
    if principal.role == "link_worker":
        return principal.pcn_id == row["pcn_id"]
    return principal.role == "charity" and principal.organisation_id == row["organisation_id"]


async def referrals_in_scope(
    sessions: Sessions, principal: Principal, status: str | None, page: int, per_page: int
) -> dict[str, Any]:
    query = select(referrals)
    if principal.role == "link_worker":
        query = query.where(referrals.c.pcn_id == principal.pcn_id)
    elif principal.role == "charity":
        query = query.where(referrals.c.organisation_id == principal.organisation_id)
    if status:
        query = query.where(referrals.c.status == status)
    async with sessions() as session:
        total = await session.scalar(select(func.count()).select_from(query.subquery()))
        rows = (
            (
                await session.execute(
                    query.order_by(referrals.c.created_at.desc()).offset((page - 1) * per_page).limit(per_page)
                )
            )
            .mappings()
            .all()
        )
    return {"items": [{k: row[k] for k in LISTED} for row in rows], "page": page, "per_page": per_page, "total": total}


async def contact_audit(sessions: Sessions, referral_id: str | None) -> list[dict[str, Any]]:
    query = select(contact_access_audit).order_by(contact_access_audit.c.at.desc()).limit(1000)
    if referral_id:
        query = query.where(contact_access_audit.c.referral_id == referral_id)
    async with sessions() as session:
        return [dict(r) for r in (await session.execute(query)).mappings().all()]
