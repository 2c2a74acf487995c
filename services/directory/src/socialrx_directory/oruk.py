"""Rows -> Open Referral UK (HSDS 3.0 UK profile) JSON. Pure shaping, no I/O.

Optional fields are left out rather than sent as null: the standard's schemas type them as strings
or numbers, so a null would not validate. Our own facts that ORUK has no field for (capacity, the
referral gate) travel under the local extension key `x_socialrx`, as the profile recommends for
supplier-specific properties.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, timezone
from typing import Any

from . import domain

HSDS_VERSION = "3.0"
PROFILE_URL = "https://github.com/openreferral/uk-profile"


def _present(**fields: Any) -> dict:
    return {k: v for k, v in fields.items() if v is not None}


def _when(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def organization(org: Mapping, *, full: bool = False, services: list[dict] | None = None) -> dict:
    out = _present(
        id=org["id"], name=org["name"], description=org["description"] or "", email=org["email"], website=org["website"]
    )
    if full:
        out["organization_identifiers"] = (
            [
                {
                    "id": domain.derived_id(org["id"], "charity-number"),
                    "organization_id": org["id"],
                    "identifier_scheme": "GB-CHC",
                    "identifier_type": "Registered charity number",
                    "identifier": org["charity_number"],
                }
            ]
            if org["charity_number"]
            else []
        )
        out["services"] = services or []
    return out


def taxonomy_term(term: Mapping) -> dict:
    return {
        "id": term["id"],
        "name": term["name"],
        "description": term["description"] or term["name"],
        "taxonomy": term["vocabulary"],
        "taxonomy_id": domain.taxonomy_id(term["vocabulary"]),
        "term": term["code"],
    }


def taxonomy(vocabulary: str, terms: Sequence[Mapping] | None = None) -> dict:
    out: dict[str, Any] = {
        "id": domain.taxonomy_id(vocabulary),
        "name": vocabulary,
        "description": "Needs a social prescribing service meets"
        if vocabulary == domain.NEEDS_VOCABULARY
        else f"Terms imported from the {vocabulary!r} taxonomy",
    }
    if terms is not None:
        out["taxonomy_terms"] = [taxonomy_term(t) for t in terms]
    return out


def gate_extension(svc: Mapping, today: date) -> dict:
    gate = domain.gate(svc["status"], svc["capacity"], svc["safeguarding_policy_valid_until"], today)
    valid_until = svc["safeguarding_policy_valid_until"]
    return _present(
        capacity=svc["capacity"],
        accepting_referrals=gate.accepting_referrals,
        not_accepting_reason=gate.reason,
        needs=list(svc["needs"]),
        safeguarding_policy_valid_until=valid_until.isoformat() if valid_until else None,
    )


def service_summary(svc: Mapping, org: Mapping, today: date) -> dict:
    """A service with its one-to-one fields (the shape of /services list items)."""
    return {
        **_present(
            id=svc["id"],
            organization_id=svc["organization_id"],
            name=svc["name"],
            description=svc["description"] or "",
            url=svc["url"],
            email=svc["email"],
            status=svc["status"],
            last_modified=_when(svc["updated_at"]),
        ),
        "organization": organization(org),
        "x_socialrx": gate_extension(svc, today),
    }


def has_location(svc: Mapping) -> bool:
    return bool(svc["postcode"] or svc["location_id"] or svc["latitude"] is not None)


def location(svc: Mapping) -> dict:
    location_id = svc["location_id"] or domain.derived_id(svc["id"], "location")
    out = _present(
        id=location_id,
        location_type="physical",
        name=svc["location_name"],
        latitude=svc["latitude"],
        longitude=svc["longitude"],
    )
    out["addresses"] = (
        [
            {
                "id": domain.derived_id(location_id, "address"),
                "location_id": location_id,
                "address_1": svc["address_1"] or "",
                "city": svc["city"] or "",
                "state_province": "",
                "postal_code": svc["postcode"],
                "country": "GB",
                "address_type": "physical",
            }
        ]
        if svc["postcode"]
        else []
    )
    return out


def service_at_location(svc: Mapping, org: Mapping, today: date, *, nested_service: bool = True) -> dict:
    loc = location(svc)
    out = {
        "id": svc["service_at_location_id"] or domain.derived_id(svc["id"], "service_at_location"),
        "service_id": svc["id"],
        "location_id": loc["id"],
        "location": loc,
    }
    if nested_service:
        out["service"] = service_summary(svc, org, today)
    return out


def service_full(svc: Mapping, org: Mapping, terms: Mapping[str, Mapping], today: date) -> dict:
    """A fully nested service: its organisation, location, and needs as taxonomy-term attributes."""
    out = service_summary(svc, org, today)
    out["service_at_locations"] = (
        [service_at_location(svc, org, today, nested_service=False)] if has_location(svc) else []
    )
    out["attributes"] = [
        {
            "id": domain.derived_id(svc["id"], f"need/{code}"),
            "link_id": svc["id"],
            "link_type": "service",
            "taxonomy_term_id": terms[code]["id"],
            "taxonomy_term": taxonomy_term(terms[code]),
        }
        for code in svc["needs"]
        if code in terms
    ]
    return out
