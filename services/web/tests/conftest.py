"""Browser tests: Debian's chromium driven by Playwright against the real platform (Kafka,
PostgreSQL, the four services and the web app) that the harness starts."""

from __future__ import annotations

import os
import random
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest

from socialrx_harness.testing import auth

sys.path.insert(0, str(Path(__file__).parent))  # web_pages.py, the browser steps

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ROOT = Path(__file__).resolve().parents[3]
# Set SOCIALRX_SCREENSHOTS=1 to refresh the README's screenshots in docs/screenshots/.
SCREENSHOTS = ROOT / "docs" / "screenshots"


@pytest.fixture(scope="module")
def browser(platform) -> Iterator[object]:
    """Per module, started after the platform and closed before the next module: Playwright's sync
    API holds an event loop while it runs, and the harness's fixtures and async tests need theirs."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="session")
def web_url(platform) -> str:
    assert platform.web is not None, "the harness's platform starts the web app"
    return platform.web.url


@pytest.fixture(scope="session")
def shots_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.environ.get("SOCIALRX_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return SCREENSHOTS
    return tmp_path_factory.mktemp("screenshots")


@dataclass
class World:
    """Two organisations and their services, set up through the APIs; a PCN of its own."""

    pcn_id: str
    other_pcn_id: str
    organisation_id: str
    organisation_name: str
    other_organisation_id: str
    service_id: str
    full_service_id: str


def new_pcn() -> str:
    return f"Y{random.randint(10000, 99999)}"


@pytest.fixture(scope="module")
def world(platform, jwt_secret) -> World:
    admin = auth(jwt_secret, "admin")
    directory = platform.url("directory")
    suffix = uuid.uuid4().hex[:6]
    orgs = []
    for name in (f"Leeds Walking Friends {suffix}", f"Other Neighbours {suffix}"):
        answer = httpx.post(directory + "/organizations", headers=admin, json={"name": name}, timeout=10)
        assert answer.status_code == 201, answer.text
        orgs.append(answer.json()["id"])
    charity = auth(jwt_secret, "charity", organisation_id=orgs[0])
    soon = (date.today() + timedelta(days=20)).isoformat()
    services = []
    for name, capacity, until in ((f"Walk and talk {suffix}", 10, "2030-12-31"), (f"Lunch club {suffix}", 0, soon)):
        answer = httpx.post(
            directory + "/services",
            headers=charity,
            timeout=10,
            json={
                "organization_id": orgs[0],
                "name": name,
                "needs": ["loneliness"],
                "capacity": capacity,
                "safeguarding_policy_valid_until": until,
                "postcode": "LS1 4AP",
                "description": "Gentle group walks around the city centre, with a cup of tea after.",
            },
        )
        assert answer.status_code == 201, answer.text
        services.append(answer.json()["id"])
    other = auth(jwt_secret, "charity", organisation_id=orgs[1])
    answer = httpx.post(
        directory + "/services",
        headers=other,
        timeout=10,
        json={
            "organization_id": orgs[1],
            "name": f"Allotment group {suffix}",
            "needs": ["loneliness"],
            "capacity": 5,
            "safeguarding_policy_valid_until": "2030-12-31",
            "postcode": "LS2 7EY",
        },
    )
    assert answer.status_code == 201, answer.text
    return World(new_pcn(), new_pcn(), orgs[0], f"Leeds Walking Friends {suffix}", orgs[1], services[0], services[1])
