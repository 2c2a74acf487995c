"""The Open Referral UK read API: open (no token), CORS `*`, the standard's page envelope.

Thin: parses the query (a bad value is an `Invalid`), reads through `oruk_reads`, renders with `oruk`.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from socialrx_shared.errors import Invalid
from socialrx_shared.http import Page, PerPage  # the shared, bounded paging
from socialrx_shared.service import runtime_of

from . import domain, oruk, oruk_reads
from .oruk_reads import ServiceFilter

router = APIRouter(tags=["Open Referral UK"])
# Every path this router serves starts with one of these; app.py adds the CORS header to them.
OPEN_PREFIXES = ("/services", "/taxonomies", "/taxonomy_terms", "/service_at_locations", "/organizations")

POSTCODE = re.compile(r"^[A-Z]{1,2}[0-9][A-Z0-9]?( ?[0-9][A-Z]{2})?$")


def _today(request: Request) -> date:
    today: date = request.app.state.clock().date()
    return today


def _envelope(total: int, page: int, per_page: int, contents: list[dict[str, Any]]) -> dict[str, Any]:
    return {**domain.page_envelope(total, page, per_page, len(contents)), "contents": contents}


def _modified_after(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise Invalid("modified_after must be an ISO 8601 date-time, e.g. 2026-01-31T00:00:00Z") from None
    if parsed.tzinfo is None:
        raise Invalid("modified_after needs a time zone, e.g. a trailing Z for UTC")
    return parsed


def _normal_postcode(value: str) -> str:
    compact = re.sub(r"\s+", "", value).upper()
    full = f"{compact[:-3]} {compact[-3:]}" if len(compact) > 4 else compact
    if not POSTCODE.match(full):
        raise Invalid("postcode must be a UK postcode or postcode district, e.g. 'LS1 4AP' or 'LS1'")
    return full


def _proximity_m(proximity: str) -> float:
    try:
        metres = float(proximity)
    except ValueError:
        raise Invalid("proximity must be a distance in metres, e.g. 2000") from None
    if not 0 < metres <= 1_000_000:
        raise Invalid("proximity must be more than 0 and at most 1,000,000 metres")
    return metres


def _filter(
    search: str | None,
    taxonomy_term_id: str | None,
    taxonomy_id: str | None,
    organization_id: str | None,
    modified_after: str | None,
    postcode: str | None,
    proximity: str | None,
) -> ServiceFilter:
    after = _modified_after(modified_after)
    if postcode is None and proximity is not None:
        raise Invalid("proximity needs a postcode to measure from")
    normal = _normal_postcode(postcode) if postcode is not None else None
    return ServiceFilter(
        search=search or None,
        taxonomy_term_id=taxonomy_term_id,
        taxonomy_id=taxonomy_id,
        organization_id=organization_id,
        modified_after=after,
        postcode=normal,
        proximity_m=_proximity_m(proximity) if proximity is not None else None,
    )


Search = Annotated[str | None, Query(max_length=200, description="Full-text search in name and description")]
TermId = Annotated[str | None, Query(max_length=64)]
ModifiedAfter = Annotated[str | None, Query(description="Only results modified on or after this ISO 8601 date-time")]
PostcodeQ = Annotated[
    str | None, Query(max_length=10, description="UK postcode: same district, or the centre for proximity")
]
Proximity = Annotated[str | None, Query(max_length=12, description="Metres from the postcode's centroid")]


@router.get("/", summary="About this API (HSDS version, profile, OpenAPI document)")
async def about(request: Request) -> dict[str, Any]:
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
) -> dict[str, Any]:
    f = _filter(search, taxonomy_term_id, taxonomy_id, organization_id, modified_after, postcode, proximity)
    total, rows, orgs = await oruk_reads.service_page(runtime_of(request), f, page, per_page)
    today = _today(request)
    return _envelope(total, page, per_page, [oruk.service_summary(r, orgs[r["organization_id"]], today) for r in rows])


@router.get("/services/{service_id}", summary="A fully nested service")
async def get_service(service_id: str, request: Request) -> dict[str, Any]:
    row, org, terms = await oruk_reads.service(runtime_of(request), service_id)
    return oruk.service_full(row, org, terms, _today(request))


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
) -> dict[str, Any]:
    f = _filter(search, taxonomy_term_id, taxonomy_id, organization_id, modified_after, postcode, proximity)
    total, rows, orgs = await oruk_reads.service_page(runtime_of(request), f, page, per_page, located=True)
    today = _today(request)
    return _envelope(
        total, page, per_page, [oruk.service_at_location(r, orgs[r["organization_id"]], today) for r in rows]
    )


@router.get("/service_at_locations/{sal_id}", summary="A service at a location, fully nested")
async def get_service_at_location(sal_id: str, request: Request) -> dict[str, Any]:
    row, org = await oruk_reads.service_at_location(runtime_of(request), sal_id)
    return oruk.service_at_location(row, org, _today(request))


@router.get("/organizations", summary="Paginated organisations")
async def list_organizations(
    request: Request, search: Search = None, page: Page = 1, per_page: PerPage = 50
) -> dict[str, Any]:
    total, rows = await oruk_reads.organization_page(runtime_of(request), search, page, per_page)
    return _envelope(total, page, per_page, [oruk.organization(r) for r in rows])


@router.get("/organizations/{organization_id}", summary="An organisation with its services")
async def get_organization(organization_id: str, request: Request) -> dict[str, Any]:
    org, rows = await oruk_reads.organization(runtime_of(request), organization_id)
    today = _today(request)
    return oruk.organization(org, full=True, services=[oruk.service_summary(r, org, today) for r in rows])


@router.get("/taxonomies", summary="Paginated taxonomies")
async def list_taxonomies(request: Request, page: Page = 1, per_page: PerPage = 50) -> dict[str, Any]:
    vocabularies = await oruk_reads.vocabularies(runtime_of(request))
    chosen = vocabularies[(page - 1) * per_page : page * per_page]
    return _envelope(len(vocabularies), page, per_page, [oruk.taxonomy(v) for v in chosen])


@router.get("/taxonomies/{taxonomy_id}", summary="A taxonomy with its terms")
async def get_taxonomy(taxonomy_id: str, request: Request) -> dict[str, Any]:
    vocabulary, terms = await oruk_reads.taxonomy(runtime_of(request), taxonomy_id)
    return oruk.taxonomy(vocabulary, terms)


@router.get("/taxonomy_terms", summary="Paginated taxonomy terms")
async def list_taxonomy_terms(
    request: Request, page: Page = 1, per_page: PerPage = 50, taxonomy_id: TermId = None
) -> dict[str, Any]:
    total, rows = await oruk_reads.term_page(runtime_of(request), taxonomy_id, page, per_page)
    return _envelope(total, page, per_page, [oruk.taxonomy_term(r) for r in rows])


@router.get("/taxonomy_terms/{term_id}", summary="A taxonomy term")
async def get_taxonomy_term(term_id: str, request: Request) -> dict[str, Any]:
    return oruk.taxonomy_term(await oruk_reads.term(runtime_of(request), term_id))
