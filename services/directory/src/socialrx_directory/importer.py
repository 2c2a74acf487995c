"""Import an Open Referral UK feed so a PCN can seed its directory.

A feed is JSON in the standard's shape: a page envelope (`{"contents": [service, ...]}`), a list
of services, one service, or an organisation with `services`. Each service record is validated
against the standard's compiled service schema; a bad record is reported (its position, id and
why) and skipped, and the rest are imported, each in its own transaction.

Imported services are upserted by their ORUK id (a re-import updates, never doubles). A new one
starts with capacity 0 and no safeguarding policy, so it is not accepting referrals until its
charity (or an admin) confirms both: a feed says what a service is, not that it can take referrals.

    python -m socialrx_directory.importer FEED.json     # uses DIRECTORY_DATABASE_URL
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from socialrx_shared.db import run_migrations
from socialrx_shared.errors import Invalid
from socialrx_shared.events import ORGANISATION_REGISTERED, OrganisationRegistered
from socialrx_shared.runtime import ServiceRuntime

from . import commands, domain
from .settings import SERVICE, Settings
from .store import inbox, metadata, organizations, outbox, services, taxonomy_terms

STANDARD = Path(__file__).parent / "standards" / "oruk-hsds-3.0"
UK_POSTCODE = re.compile(r"^[A-Z]{1,2}[0-9][A-Z0-9]? ?[0-9][A-Z]{2}$")
MAX_RECORDS = 5000


class BadFeed(Invalid):
    """The feed as a whole is unusable (not one of the accepted shapes)."""


class BadRecord(ValueError):
    pass


@lru_cache(maxsize=1)
def _validator():
    # Imported lazily: only the importer needs jsonschema (see README, dependencies).
    from jsonschema import Draft202012Validator, FormatChecker

    schema = json.loads((STANDARD / "schema" / "compiled" / "service.json").read_text())
    return Draft202012Validator(schema, format_checker=FormatChecker())


def records_of(feed: Any) -> list[tuple[Any, dict | None]]:
    """(service record, organisation it sits under, if any) for each record of the feed."""
    found: list[tuple[Any, dict | None]]
    if isinstance(feed, list):
        found = [(r, None) for r in feed]
    elif isinstance(feed, dict) and isinstance(feed.get("contents"), list):
        found = [(r, None) for r in feed["contents"]]
    elif isinstance(feed, dict) and isinstance(feed.get("services"), list) and "status" not in feed:
        parent = {k: v for k, v in feed.items() if k != "services"}
        found = [(r, parent) for r in feed["services"]]
    elif isinstance(feed, dict) and "status" in feed:
        found = [(feed, None)]
    else:
        raise BadFeed(
            'a feed is a page ({"contents": [...]}), a list of services, a service, or an organization with "services"'
        )
    if len(found) > MAX_RECORDS:
        raise BadFeed(f"at most {MAX_RECORDS} records per import; split the feed")
    return found


def check(record: Any, parent: dict | None) -> dict:
    """The record's organisation, or BadRecord saying what is wrong with it."""
    if not isinstance(record, dict):
        raise BadRecord("a service record must be a JSON object")
    errors = sorted(_validator().iter_errors(record), key=lambda e: list(e.path))
    if errors:
        raise BadRecord("; ".join(f"{'/'.join(map(str, e.path)) or '<record>'}: {e.message[:200]}" for e in errors[:5]))
    org = record.get("organization") or parent
    if not org or not isinstance(org.get("id"), str) or not isinstance(org.get("name"), str):
        raise BadRecord("the service names no organization (nest it, or import an organization with its services)")
    if record.get("organization_id") not in (None, org["id"]):
        raise BadRecord("organization_id differs from the nested organization's id")
    for field, limit in (("email", 320), ("url", 500)):
        if len(record.get(field) or "") > limit:
            raise BadRecord(f"{field} longer than {limit} characters")
    return org


def _location(record: dict) -> dict:
    sal = next(iter(record.get("service_at_locations") or []), None) or {}
    loc = sal.get("location") or {}
    address = next(iter(loc.get("addresses") or []), None) or {}
    raw = str(address.get("postal_code") or "").upper().strip()
    compact = raw.replace(" ", "")
    postcode = f"{compact[:-3]} {compact[-3:]}" if UK_POSTCODE.match(raw) else None
    return {
        "service_at_location_id": sal.get("id"),
        "location_id": loc.get("id"),
        "location_name": loc.get("name"),
        "address_1": address.get("address_1"),
        "city": address.get("city"),
        "latitude": loc.get("latitude"),
        "longitude": loc.get("longitude"),
        "postcode": postcode,
    }


async def _needs(session: AsyncSession, record: dict) -> list[str]:
    """Need codes for the record's taxonomy terms, adding terms the directory does not know yet."""
    codes: list[str] = []
    for attribute in record.get("attributes") or []:
        term = attribute.get("taxonomy_term") or {}
        code = domain.slug(term.get("term") or term.get("name") or "")
        if not term.get("id") or not code:
            continue
        await session.execute(
            pg_insert(taxonomy_terms)
            .values(
                id=term["id"],
                code=code,
                name=term.get("name") or code,
                description=term.get("description") or "",
                vocabulary=(term.get("taxonomy") or "imported")[:64],
            )
            .on_conflict_do_nothing()
        )
        known = await session.scalar(select(taxonomy_terms.c.code).where(taxonomy_terms.c.id == term["id"]))
        codes.append(known or code)
    return sorted(set(codes))[:20]


async def _ensure_org(rt: ServiceRuntime, session: AsyncSession, org: dict, now: datetime) -> None:
    added = await session.scalar(
        pg_insert(organizations)
        .values(
            id=org["id"],
            name=org["name"],
            description=org.get("description") or "",
            email=(org.get("email") or None),
            website=(org.get("website") or None),
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(organizations.c.id)
    )
    if added is not None:  # a new organisation is announced, as one an admin adds is
        await rt.stage(
            session,
            ORGANISATION_REGISTERED,
            OrganisationRegistered(organisation_id=org["id"], name=org["name"][:300] or org["id"], registered_at=now),
        )


async def import_record(rt: ServiceRuntime, session: AsyncSession, record: dict, org: dict) -> str:
    """Upsert one checked record; 'created' or 'updated'."""
    now = datetime.now(timezone.utc)
    await _ensure_org(rt, session, org, now)
    fields = {
        "name": record["name"],
        "description": record.get("description") or "",
        "status": record["status"],
        "url": record.get("url"),
        "email": record.get("email"),
        "needs": await _needs(session, record),
        **_location(record),
    }
    owner = await session.scalar(
        select(services.c.organization_id).where(services.c.id == record["id"]).with_for_update()
    )
    if owner is not None and owner != org["id"]:
        raise BadRecord(f"service {record['id']} belongs to another organization in this directory")
    duplicate = await session.scalar(
        select(services.c.id).where(
            services.c.id != record["id"],
            services.c.organization_id == org["id"],
            func.lower(services.c.name) == record["name"].lower(),
            services.c.postcode.is_not_distinct_from(fields["postcode"]),
        )
    )
    if duplicate:
        raise BadRecord(f"duplicates existing service {duplicate} (same organization, name and postcode)")
    if owner is None:
        fields["service_at_location_id"] = fields["service_at_location_id"] or domain.derived_id(
            record["id"], "service_at_location"
        )
        await session.execute(
            insert(services).values(
                id=record["id"],
                organization_id=org["id"],
                capacity=0,
                safeguarding_policy_valid_until=None,
                version=0,
                published_accepting=False,
                created_at=now,
                updated_at=now,
                **fields,
            )
        )
    else:
        fields = {k: v for k, v in fields.items() if v is not None or k in ("url", "email")}
        await session.execute(update(services).where(services.c.id == record["id"]).values(**fields))
    await commands.stage_service_updated(rt, session, record["id"])
    return "created" if owner is None else "updated"


async def import_feed(rt: ServiceRuntime, feed: Any) -> dict:
    """Import every good record; report the bad ones. BadFeed if the feed's shape is wrong."""
    report: dict[str, Any] = {"created": 0, "updated": 0, "skipped": []}
    for index, (record, parent) in enumerate(records_of(feed)):
        record_id = record.get("id") if isinstance(record, dict) else None
        try:
            org = check(record, parent)
            async with rt.transaction() as session:
                outcome = await import_record(rt, session, record, org)
            report[outcome] += 1
        except BadRecord as exc:
            report["skipped"].append({"index": index, "id": record_id, "reason": str(exc)})
    report["imported"] = report["created"] + report["updated"]
    return report


async def import_some(rt: ServiceRuntime, feed: Any) -> dict:
    """As `import_feed`, but a feed of which no record could be imported is refused (with the report)."""
    report = await import_feed(rt, feed)
    if report["skipped"] and not report["imported"]:
        raise Invalid("no record of the feed could be imported", **report)
    return report


async def _main(path: str) -> int:
    settings = Settings()
    migrations = Path(__file__).parent / "migrations"
    await run_migrations(migrations, settings.database_url)
    # No Kafka here: the events wait in the outbox and the running directory's relay publishes them.
    rt = ServiceRuntime(SERVICE, settings, metadata, outbox, inbox, migrations)
    try:
        report = await import_feed(rt, json.loads(Path(path).read_text()))
    finally:
        await rt.engine.dispose()
    print(json.dumps(report, indent=2))
    return 1 if report["skipped"] else 0


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python -m socialrx_directory.importer FEED.json")
    sys.exit(asyncio.run(_main(sys.argv[1])))


if __name__ == "__main__":
    main()
