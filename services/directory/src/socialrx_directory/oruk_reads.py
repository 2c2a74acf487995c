"""The reads the Open Referral UK API answers from: services (filtered by search, taxonomy, organisation,
date and place), organisations and the taxonomy. Read-only; a missing record is a `NotFound`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.dialects.postgresql import array
from sqlalchemy.ext.asyncio import AsyncSession

from socialrx_shared.errors import Invalid, NotFound
from socialrx_shared.runtime import ServiceRuntime

from . import domain
from .store import organizations, services, taxonomy_terms

EARTH_RADIUS_M = 6_371_000

Row = dict[str, Any]


@dataclass(frozen=True)
class ServiceFilter:
    """What a list of services is narrowed to; every field already parsed (postcode normalised)."""

    search: str | None = None
    taxonomy_term_id: str | None = None
    taxonomy_id: str | None = None
    organization_id: str | None = None
    modified_after: datetime | None = None
    postcode: str | None = None
    proximity_m: float | None = None


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def _page(
    session: AsyncSession, query: Select[Any], page: int, per_page: int, order_by: tuple[Any, ...]
) -> tuple[int, list[Row]]:
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    rows = (await session.execute(query.order_by(*order_by).offset((page - 1) * per_page).limit(per_page))).mappings()
    return total or 0, [dict(r) for r in rows.all()]


async def _one(session: AsyncSession, query: Select[Any], what: str) -> Row:
    row = (await session.execute(query)).mappings().first()
    if row is None:
        raise NotFound(f"no such {what}")
    return dict(row)


async def _orgs_of(session: AsyncSession, rows: list[Row]) -> dict[str, Row]:
    ids = {r["organization_id"] for r in rows}
    if not ids:
        return {}
    found = (await session.execute(select(organizations).where(organizations.c.id.in_(ids)))).mappings().all()
    return {o["id"]: dict(o) for o in found}


async def _terms(session: AsyncSession) -> dict[str, Row]:
    rows = (await session.execute(select(taxonomy_terms))).mappings().all()
    return {r["code"]: dict(r) for r in rows}


async def _vocabularies(session: AsyncSession) -> list[str]:
    query = select(taxonomy_terms.c.vocabulary).distinct().order_by(taxonomy_terms.c.vocabulary)
    return list((await session.execute(query)).scalars())


def _distance_m(lat: float, lon: float) -> ColumnElement[float]:
    """Great-circle distance from (lat, lon) to each service's location, in SQL (haversine)."""
    dlat = func.radians(services.c.latitude - lat) / 2
    dlon = func.radians(services.c.longitude - lon) / 2
    a = func.power(func.sin(dlat), 2) + func.cos(func.radians(lat)) * func.cos(
        func.radians(services.c.latitude)
    ) * func.power(func.sin(dlon), 2)
    return 2 * EARTH_RADIUS_M * func.asin(func.least(1.0, func.sqrt(a)))


async def _near(session: AsyncSession, postcode: str, proximity_m: float | None) -> ColumnElement[bool]:
    """The postcode filter: same district, or within `proximity_m` metres of the postcode's centroid."""
    if proximity_m is None:
        return func.split_part(services.c.postcode, " ", 1) == domain.outward_code(postcode)
    # No geocoder is bundled: a postcode is located from the directory's own geocoded locations.
    centroid = (
        await session.execute(
            select(func.avg(services.c.latitude), func.avg(services.c.longitude)).where(
                services.c.postcode == postcode, services.c.latitude.is_not(None), services.c.longitude.is_not(None)
            )
        )
    ).one()
    if centroid[0] is None:
        raise Invalid(
            f"the directory has no coordinates for postcode {postcode!r}; "
            "search by postcode alone (same district) instead"
        )
    return and_(services.c.latitude.is_not(None), _distance_m(centroid[0], centroid[1]) <= proximity_m)


async def _service_query(session: AsyncSession, f: ServiceFilter) -> Select[Any]:
    query = select(services)
    if f.search:
        query = query.where(or_(services.c.name.ilike(_like(f.search)), services.c.description.ilike(_like(f.search))))
    if f.taxonomy_term_id is not None or f.taxonomy_id is not None:
        codes = [
            t["code"]
            for t in (await _terms(session)).values()
            if t["id"] == f.taxonomy_term_id or domain.taxonomy_id(t["vocabulary"]) == f.taxonomy_id
        ]
        query = query.where(services.c.needs.has_any(array(codes or [""])))
    if f.organization_id is not None:
        query = query.where(services.c.organization_id == f.organization_id)
    if f.modified_after is not None:
        query = query.where(services.c.updated_at >= f.modified_after)
    if f.postcode is not None:
        query = query.where(await _near(session, f.postcode, f.proximity_m))
    return query


def _located() -> ColumnElement[bool]:
    return or_(services.c.postcode.is_not(None), services.c.latitude.is_not(None))


async def service_page(
    rt: ServiceRuntime, f: ServiceFilter, page: int, per_page: int, *, located: bool = False
) -> tuple[int, list[Row], dict[str, Row]]:
    """(how many, this page of services by name, their organisations by id); `located`: only services
    with a place (the service-at-location list)."""
    async with rt.sessionmaker() as session:
        query = await _service_query(session, f)
        if located:
            query = query.where(_located())
        total, rows = await _page(session, query, page, per_page, (services.c.name, services.c.id))
        return total, rows, await _orgs_of(session, rows)


async def service(rt: ServiceRuntime, service_id: str) -> tuple[Row, Row, dict[str, Row]]:
    """A service, its organisation and the taxonomy terms by code."""
    async with rt.sessionmaker() as session:
        row = await _one(session, select(services).where(services.c.id == service_id), "service")
        orgs = await _orgs_of(session, [row])
        return row, orgs[row["organization_id"]], await _terms(session)


async def service_at_location(rt: ServiceRuntime, sal_id: str) -> tuple[Row, Row]:
    """A located service by its service-at-location id, and its organisation."""
    async with rt.sessionmaker() as session:
        query = select(services).where(services.c.service_at_location_id == sal_id, _located())
        row = await _one(session, query, "service_at_location")
        orgs = await _orgs_of(session, [row])
        return row, orgs[row["organization_id"]]


async def organization_page(rt: ServiceRuntime, search: str | None, page: int, per_page: int) -> tuple[int, list[Row]]:
    query = select(organizations)
    if search:
        query = query.where(organizations.c.name.ilike("%" + search.replace("%", "\\%").replace("_", "\\_") + "%"))
    async with rt.sessionmaker() as session:
        return await _page(session, query, page, per_page, (organizations.c.name, organizations.c.id))


async def organization(rt: ServiceRuntime, organization_id: str) -> tuple[Row, list[Row]]:
    """An organisation and its services by name."""
    async with rt.sessionmaker() as session:
        org = await _one(session, select(organizations).where(organizations.c.id == organization_id), "organization")
        query = select(services).where(services.c.organization_id == organization_id).order_by(services.c.name)
        return org, [dict(r) for r in (await session.execute(query)).mappings().all()]


async def vocabularies(rt: ServiceRuntime) -> list[str]:
    async with rt.sessionmaker() as session:
        return await _vocabularies(session)


async def taxonomy(rt: ServiceRuntime, taxonomy_id: str) -> tuple[str, list[Row]]:
    """A vocabulary by its taxonomy id, and its terms by code."""
    async with rt.sessionmaker() as session:
        vocabulary = next((v for v in await _vocabularies(session) if domain.taxonomy_id(v) == taxonomy_id), None)
        if vocabulary is None:
            raise NotFound("no such taxonomy")
        terms = [t for t in (await _terms(session)).values() if t["vocabulary"] == vocabulary]
    return vocabulary, sorted(terms, key=lambda t: t["code"])


async def term_page(rt: ServiceRuntime, taxonomy_id: str | None, page: int, per_page: int) -> tuple[int, list[Row]]:
    query = select(taxonomy_terms)
    async with rt.sessionmaker() as session:
        if taxonomy_id is not None:
            chosen = [v for v in await _vocabularies(session) if domain.taxonomy_id(v) == taxonomy_id]
            query = query.where(taxonomy_terms.c.vocabulary.in_(chosen))
        return await _page(session, query, page, per_page, (taxonomy_terms.c.vocabulary, taxonomy_terms.c.code))


async def term(rt: ServiceRuntime, term_id: str) -> Row:
    async with rt.sessionmaker() as session:
        return await _one(session, select(taxonomy_terms).where(taxonomy_terms.c.id == term_id), "taxonomy term")
