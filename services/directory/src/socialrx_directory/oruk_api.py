"""The Open Referral UK read API: open (no token), CORS `*`, the standard's page envelope."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.dialects.postgresql import array

from socialrx_shared.http import Page, PerPage  # the shared, bounded paging
from socialrx_shared.service import runtime_of

from . import domain, oruk
from .store import organizations, services, taxonomy_terms

router = APIRouter(tags=["Open Referral UK"])
# Every path this router serves starts with one of these; app.py adds the CORS header to them.
OPEN_PREFIXES = ("/services", "/taxonomies", "/taxonomy_terms", "/service_at_locations", "/organizations")

POSTCODE = re.compile(r"^[A-Z]{1,2}[0-9][A-Z0-9]?( ?[0-9][A-Z]{2})?$")
EARTH_RADIUS_M = 6_371_000


def _today(request: Request):
    return request.app.state.clock().date()


async def _page(request: Request, query: Select, page: int, per_page: int, order_by: tuple) -> tuple[int, list]:
    async with runtime_of(request).sessionmaker() as session:
        total = await session.scalar(select(func.count()).select_from(query.subquery()))
        rows = (
            (await session.execute(query.order_by(*order_by).offset((page - 1) * per_page).limit(per_page)))
            .mappings()
            .all()
        )
    return total or 0, [dict(r) for r in rows]


async def _one(request: Request, query: Select, what: str) -> dict:
    async with runtime_of(request).sessionmaker() as session:
        row = (await session.execute(query)).mappings().first()
    if row is None:
        raise HTTPException(404, detail=f"no such {what}")
    return dict(row)


async def _orgs_of(request: Request, rows: list[dict]) -> dict[str, dict]:
    ids = {r["organization_id"] for r in rows}
    if not ids:
        return {}
    async with runtime_of(request).sessionmaker() as session:
        found = (await session.execute(select(organizations).where(organizations.c.id.in_(ids)))).mappings().all()
    return {o["id"]: dict(o) for o in found}


async def _terms(request: Request) -> dict[str, dict]:
    async with runtime_of(request).sessionmaker() as session:
        rows = (await session.execute(select(taxonomy_terms))).mappings().all()
    return {r["code"]: dict(r) for r in rows}


def _envelope(total: int, page: int, per_page: int, contents: list[dict]) -> dict:
    return {**domain.page_envelope(total, page, per_page, len(contents)), "contents": contents}


def _modified_after(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise HTTPException(
            422, detail="modified_after must be an ISO 8601 date-time, e.g. 2026-01-31T00:00:00Z"
        ) from None
    if parsed.tzinfo is None:
        raise HTTPException(422, detail="modified_after needs a time zone, e.g. a trailing Z for UTC")
    return parsed


def _normal_postcode(value: str) -> str:
    compact = re.sub(r"\s+", "", value).upper()
    full = f"{compact[:-3]} {compact[-3:]}" if len(compact) > 4 else compact
    if not POSTCODE.match(full):
        raise HTTPException(422, detail="postcode must be a UK postcode or postcode district, e.g. 'LS1 4AP' or 'LS1'")
    return full


def _distance_m(lat: float, lon: float):
    """Great-circle distance from (lat, lon) to each service's location, in SQL (haversine)."""
    dlat = func.radians(services.c.latitude - lat) / 2
    dlon = func.radians(services.c.longitude - lon) / 2
    a = func.power(func.sin(dlat), 2) + func.cos(func.radians(lat)) * func.cos(
        func.radians(services.c.latitude)
    ) * func.power(func.sin(dlon), 2)
    return 2 * EARTH_RADIUS_M * func.asin(func.least(1.0, func.sqrt(a)))


async def _near(request: Request, postcode: str | None, proximity: str | None):
    """The postcode filter: same district, or within `proximity` metres of the postcode's centroid."""
    if postcode is None:
        if proximity is not None:
            raise HTTPException(422, detail="proximity needs a postcode to measure from")
        return None
    normal = _normal_postcode(postcode)
    if proximity is None:
        return func.split_part(services.c.postcode, " ", 1) == domain.outward_code(normal)
    try:
        metres = float(proximity)
    except ValueError:
        raise HTTPException(422, detail="proximity must be a distance in metres, e.g. 2000") from None
    if not 0 < metres <= 1_000_000:
        raise HTTPException(422, detail="proximity must be more than 0 and at most 1,000,000 metres")
    # No geocoder is bundled: a postcode is located from the directory's own geocoded locations.
    async with runtime_of(request).sessionmaker() as session:
        centroid = (
            await session.execute(
                select(func.avg(services.c.latitude), func.avg(services.c.longitude)).where(
                    services.c.postcode == normal, services.c.latitude.is_not(None), services.c.longitude.is_not(None)
                )
            )
        ).one()
    if centroid[0] is None:
        raise HTTPException(
            422,
            detail=f"the directory has no coordinates for postcode {normal!r}; "
            "search by postcode alone (same district) instead",
        )
    return and_(services.c.latitude.is_not(None), _distance_m(centroid[0], centroid[1]) <= metres)


async def _service_query(
    request: Request,
    search: str | None,
    taxonomy_term_id: str | None,
    taxonomy_id: str | None,
    organization_id: str | None,
    modified_after: str | None,
    postcode: str | None,
    proximity: str | None,
) -> Select:
    query = select(services)
    if search:
        pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(or_(services.c.name.ilike(pattern), services.c.description.ilike(pattern)))
    if taxonomy_term_id is not None or taxonomy_id is not None:
        terms = (await _terms(request)).values()
        codes = [
            t["code"]
            for t in terms
            if t["id"] == taxonomy_term_id or domain.taxonomy_id(t["vocabulary"]) == taxonomy_id
        ]
        query = query.where(services.c.needs.has_any(array(codes or [""])))
    if organization_id is not None:
        query = query.where(services.c.organization_id == organization_id)
    if (after := _modified_after(modified_after)) is not None:
        query = query.where(services.c.updated_at >= after)
    if (near := await _near(request, postcode, proximity)) is not None:
        query = query.where(near)
    return query


Search = Annotated[str | None, Query(max_length=200, description="Full-text search in name and description")]
TermId = Annotated[str | None, Query(max_length=64)]
ModifiedAfter = Annotated[str | None, Query(description="Only results modified on or after this ISO 8601 date-time")]
PostcodeQ = Annotated[
    str | None, Query(max_length=10, description="UK postcode: same district, or the centre for proximity")
]
Proximity = Annotated[str | None, Query(max_length=12, description="Metres from the postcode's centroid")]


@router.get("/", summary="About this API (HSDS version, profile, OpenAPI document)")
async def about(request: Request) -> dict:
    return {"version": oruk.HSDS_VERSION, "profile": oruk.PROFILE_URL, "openapi_url": f"{request.base_url}openapi.json"}


@router.get("/services", summary="Paginated services (one-to-one fields)")
async def list_services(
    request: Request,
    search: Search = None,
    page: Page = 1,
    per_page: PerPage = 50,
    taxonomy_term_id: TermId = None,
    taxonomy_id: TermId = None,
    organization_id: TermId = None,
    modified_after: ModifiedAfter = None,
    postcode: PostcodeQ = None,
    proximity: Proximity = None,
) -> dict:
    query = await _service_query(
        request, search, taxonomy_term_id, taxonomy_id, organization_id, modified_after, postcode, proximity
    )
    total, rows = await _page(request, query, page, per_page, (services.c.name, services.c.id))
    orgs, today = await _orgs_of(request, rows), _today(request)
    return _envelope(total, page, per_page, [oruk.service_summary(r, orgs[r["organization_id"]], today) for r in rows])


@router.get("/services/{service_id}", summary="A fully nested service")
async def get_service(service_id: str, request: Request) -> dict:
    row = await _one(request, select(services).where(services.c.id == service_id), "service")
    orgs = await _orgs_of(request, [row])
    return oruk.service_full(row, orgs[row["organization_id"]], await _terms(request), _today(request))


def _located():
    return or_(services.c.postcode.is_not(None), services.c.latitude.is_not(None))


@router.get("/service_at_locations", summary="Paginated services at their locations")
async def list_service_at_locations(
    request: Request,
    search: Search = None,
    page: Page = 1,
    per_page: PerPage = 50,
    taxonomy_term_id: TermId = None,
    taxonomy_id: TermId = None,
    organization_id: TermId = None,
    modified_after: ModifiedAfter = None,
    postcode: PostcodeQ = None,
    proximity: Proximity = None,
) -> dict:
    query = await _service_query(
        request, search, taxonomy_term_id, taxonomy_id, organization_id, modified_after, postcode, proximity
    )
    total, rows = await _page(request, query.where(_located()), page, per_page, (services.c.name, services.c.id))
    orgs, today = await _orgs_of(request, rows), _today(request)
    return _envelope(
        total, page, per_page, [oruk.service_at_location(r, orgs[r["organization_id"]], today) for r in rows]
    )


@router.get("/service_at_locations/{sal_id}", summary="A service at a location, fully nested")
async def get_service_at_location(sal_id: str, request: Request) -> dict:
    row = await _one(
        request, select(services).where(services.c.service_at_location_id == sal_id, _located()), "service_at_location"
    )
    orgs = await _orgs_of(request, [row])
    return oruk.service_at_location(row, orgs[row["organization_id"]], _today(request))


@router.get("/organizations", summary="Paginated organisations")
async def list_organizations(request: Request, search: Search = None, page: Page = 1, per_page: PerPage = 50) -> dict:
    query = select(organizations)
    if search:
        query = query.where(organizations.c.name.ilike("%" + search.replace("%", "\\%").replace("_", "\\_") + "%"))
    total, rows = await _page(request, query, page, per_page, (organizations.c.name, organizations.c.id))
    return _envelope(total, page, per_page, [oruk.organization(r) for r in rows])


@router.get("/organizations/{organization_id}", summary="An organisation with its services")
async def get_organization(organization_id: str, request: Request) -> dict:
    org = await _one(request, select(organizations).where(organizations.c.id == organization_id), "organization")
    async with runtime_of(request).sessionmaker() as session:
        rows = (
            (
                await session.execute(
                    select(services).where(services.c.organization_id == organization_id).order_by(services.c.name)
                )
            )
            .mappings()
            .all()
        )
    today = _today(request)
    return oruk.organization(org, full=True, services=[oruk.service_summary(r, org, today) for r in rows])


async def _vocabularies(request: Request) -> list[str]:
    async with runtime_of(request).sessionmaker() as session:
        return list(
            (
                await session.execute(
                    select(taxonomy_terms.c.vocabulary).distinct().order_by(taxonomy_terms.c.vocabulary)
                )
            ).scalars()
        )


@router.get("/taxonomies", summary="Paginated taxonomies")
async def list_taxonomies(request: Request, page: Page = 1, per_page: PerPage = 50) -> dict:
    vocabularies = await _vocabularies(request)
    chosen = vocabularies[(page - 1) * per_page : page * per_page]
    return _envelope(len(vocabularies), page, per_page, [oruk.taxonomy(v) for v in chosen])


@router.get("/taxonomies/{taxonomy_id}", summary="A taxonomy with its terms")
async def get_taxonomy(taxonomy_id: str, request: Request) -> dict:
    vocabulary = next((v for v in await _vocabularies(request) if domain.taxonomy_id(v) == taxonomy_id), None)
    if vocabulary is None:
        raise HTTPException(404, detail="no such taxonomy")
    terms = [t for t in (await _terms(request)).values() if t["vocabulary"] == vocabulary]
    return oruk.taxonomy(vocabulary, sorted(terms, key=lambda t: t["code"]))


@router.get("/taxonomy_terms", summary="Paginated taxonomy terms")
async def list_taxonomy_terms(
    request: Request, page: Page = 1, per_page: PerPage = 50, taxonomy_id: TermId = None
) -> dict:
    query = select(taxonomy_terms)
    if taxonomy_id is not None:
        vocabularies = [v for v in await _vocabularies(request) if domain.taxonomy_id(v) == taxonomy_id]
        query = query.where(taxonomy_terms.c.vocabulary.in_(vocabularies))
    total, rows = await _page(request, query, page, per_page, (taxonomy_terms.c.vocabulary, taxonomy_terms.c.code))
    return _envelope(total, page, per_page, [oruk.taxonomy_term(r) for r in rows])


@router.get("/taxonomy_terms/{term_id}", summary="A taxonomy term")
async def get_taxonomy_term(term_id: str, request: Request) -> dict[str, Any]:
    row = await _one(request, select(taxonomy_terms).where(taxonomy_terms.c.id == term_id), "taxonomy term")
    return oruk.taxonomy_term(row)
