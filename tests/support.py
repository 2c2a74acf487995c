"""Shared steps of the end-to-end tests: the actors, a funded service, a referral's journey."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from socialrx_harness.platform import Platform
from socialrx_harness.testing import auth, publish_raw, wait_for  # noqa: F401 - re-exported for the tests
from socialrx_harness.testing import events_with_records as events_on  # noqa: F401

PCN = "U12345"
PRACTICE = "B82005"
# Valid modulus-11 NHS numbers (synthetic test range 999 ...).
NHS_NUMBERS = ["9434765919", "9999999999", "9000000009", "9876543210"]
PERSON = {
    "nhs_number": "9434765919",
    "given_name": "Ada",
    "family_name": "Okonkwo-Testperson",
    "date_of_birth": "1951-03-14",
    "postcode": "LS1 4AP",
    "phone": "07700 900123",
    "email": "ada.testperson@example.org",
    "accessibility_needs": ["step-free access"],
}


def referral_body(service_id: str, person: dict | None = None, **overrides: Any) -> dict:
    body = {
        "service_id": service_id,
        "needs": ["loneliness"],
        "person": person or PERSON,
        "consent": {"given": True, "recorded_at": "2026-11-01T10:00:00Z"},
    }
    body.update(overrides)
    return body


@dataclass
class World:
    """One organisation with one funded service, and tokens for everyone who touches it."""

    platform: Platform
    secret: str
    organisation_id: str
    service_id: str
    admin: dict[str, str]
    charity: dict[str, str]
    link_worker: dict[str, str]
    finance: dict[str, str]

    def url(self, service: str, path: str) -> str:
        return self.platform.url(service) + path


def make_world(
    platform: Platform,
    secret: str,
    *,
    capacity: int = 50,
    per_referral_pence: int = 5000,
    per_outcome_pence: int = 12000,
    fund: bool = True,
    safeguarding: str | None = "2030-01-01",
) -> World:
    admin = auth(secret, "admin")
    org = httpx.post(
        platform.url("directory") + "/organizations",
        headers=admin,
        json={"name": f"Test Neighbours {uuid.uuid4().hex[:6]}"},
        timeout=10,
    )
    assert org.status_code == 201, org.text
    organisation_id = org.json()["id"]
    charity = auth(secret, "charity", organisation_id=organisation_id)
    service = {
        "organization_id": organisation_id,
        "name": "Walk and talk",
        "needs": ["loneliness", "physical-activity"],
        "capacity": capacity,
        "postcode": "LS1 4AP",
    }
    if safeguarding:
        service["safeguarding_policy_valid_until"] = safeguarding
    created = httpx.post(platform.url("directory") + "/services", headers=charity, json=service, timeout=10)
    assert created.status_code == 201, created.text
    finance = auth(secret, "finance", pcn_id=PCN)
    if fund:
        body = {
            "organisation_id": organisation_id,
            "per_referral_pence": per_referral_pence,
            "per_outcome_pence": per_outcome_pence,
            "period": "quarterly",
            "days_after_period_end": 30,
            "starts_on": "2026-04-01",
        }
        deadline = time.monotonic() + 30
        while True:  # the ledger learns of the new organisation from the directory's organisation.registered
            agreement = httpx.post(
                platform.url("funding-ledger") + "/agreements", headers=finance, timeout=10, json=body
            )
            if "no organisation with id" not in agreement.text or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert agreement.status_code == 201, agreement.text
    return World(
        platform,
        secret,
        organisation_id,
        created.json()["id"],
        admin,
        charity,
        auth(secret, "link_worker", pcn_id=PCN, practice_id=PRACTICE),
        finance,
    )


async def eventually_status(
    client: httpx.AsyncClient,
    request: tuple[str, str],
    headers: dict,
    expected: int,
    json_body: Any = None,
    what: str = "",
    timeout_s: float = 30.0,
) -> httpx.Response:
    """Retry a request until it answers `expected`: the other services learn of things by events."""
    method, url = request

    async def attempt() -> httpx.Response | None:
        answer = await client.request(method, url, headers=headers, json=json_body)
        return answer if answer.status_code == expected else None

    return await wait_for(attempt, timeout_s=timeout_s, what=what or f"{method} {url} -> {expected}")


async def refer(client: httpx.AsyncClient, world: World, **kwargs: Any) -> dict:
    """Refer once the service's `service.updated` reached referral-intake."""
    answer = await eventually_status(
        client,
        ("POST", world.url("referral-intake", "/referrals")),
        world.link_worker,
        201,
        referral_body(world.service_id, **kwargs),
        what="referral accepted by intake",
    )
    return answer.json()
