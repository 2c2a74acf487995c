"""The Open Referral UK read API: every endpoint validates against the standard; paging and filters."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from socialrx_directory import domain
from socialrx_directory.app import Settings, build
from socialrx_harness.testing import auth, running_service

NEXT_YEAR = (date.today() + timedelta(days=365)).isoformat()


@pytest.fixture(scope="module")
async def directory(kafka, postgres, jwt_secret):
    """One directory with two organisations and four services (one without a location)."""
    async with running_service(
        build, Settings, database_url=postgres.new_database("dir"), kafka=kafka.bootstrap_servers, jwt_secret=jwt_secret
    ) as (_app, client):
        admin = auth(jwt_secret, "admin")
        orgs = {}
        for name, number in (("Leeds Walking Group", "1234567"), ("Citizens Help Leeds", None)):
            made = await client.post(
                "/organizations",
                headers=admin,
                json={
                    "name": name,
                    "charity_number": number,
                    "email": "hello@example.org",
                    "website": "https://example.org",
                },
            )
            assert made.status_code == 201, made.text
            orgs[name] = made.json()["id"]
        specs = [
            (
                "Walking for Health",
                "Leeds Walking Group",
                ["physical-activity", "nature"],
                "LS1 4AP",
                53.7997,
                -1.5492,
                3,
            ),
            ("Men's Shed", "Leeds Walking Group", ["loneliness"], "LS1 5AB", 53.8001, -1.5500, 0),
            ("Debt Advice Leeds", "Citizens Help Leeds", ["money-and-debt"], "LS6 1AA", 53.8200, -1.5800, 5),
            ("Online Art Club", "Citizens Help Leeds", ["arts-and-creativity"], None, None, None, 5),
        ]
        services = {}
        for name, org, needs, postcode, lat, lon, capacity in specs:
            body = {
                "organization_id": orgs[org],
                "name": name,
                "description": f"{name} for adults",
                "needs": needs,
                "capacity": capacity,
                "safeguarding_policy_valid_until": NEXT_YEAR,
                "url": "https://example.org/s",
            }
            if postcode:
                body.update(postcode=postcode, latitude=lat, longitude=lon, address_1="1 Park Row", city="Leeds")
            made = await client.post("/services", headers=admin, json=body)
            assert made.status_code == 201, made.text
            services[name] = made.json()["id"]
        yield client, orgs, services


def names(body: dict) -> set[str]:
    return {item.get("name") or item["service"]["name"] for item in body["contents"]}


async def test_every_endpoint_is_open_cors_and_validates_against_the_standard(directory, kit) -> None:
    client, orgs, services = directory
    walking = services["Walking for Health"]
    terms = (await client.get("/taxonomy_terms")).json()["contents"]
    taxonomies = (await client.get("/taxonomies")).json()["contents"]
    sals = (await client.get("/service_at_locations")).json()["contents"]
    calls = {
        "/": "/",
        "/services": "/services",
        "/services/{id}": f"/services/{walking}",
        "/taxonomies": "/taxonomies",
        "/taxonomies/{id}": f"/taxonomies/{taxonomies[0]['id']}",
        "/taxonomy_terms": "/taxonomy_terms",
        "/taxonomy_terms/{id}": f"/taxonomy_terms/{terms[0]['id']}",
        "/service_at_locations": "/service_at_locations",
        "/service_at_locations/{id}": f"/service_at_locations/{sals[0]['id']}",
        "/organizations": "/organizations",
        "/organizations/{id}": f"/organizations/{orgs['Leeds Walking Group']}",
    }
    for endpoint, path in calls.items():
        answer = await client.get(path)  # no Authorization header: the standard requires openness
        assert answer.status_code == 200, (path, answer.text)
        assert answer.headers["access-control-allow-origin"] == "*", path
        kit.oruk_valid(endpoint, answer.json())
    full = (await client.get(f"/services/{walking}")).json()
    assert {a["taxonomy_term"]["term"] for a in full["attributes"]} == {"physical-activity", "nature"}
    assert full["service_at_locations"][0]["location"]["addresses"][0]["postal_code"] == "LS1 4AP"
    assert full["x_socialrx"]["accepting_referrals"] is True
    shed = (await client.get(f"/services/{services[chr(77) + 'en' + chr(39) + 's Shed']}")).json()
    assert shed["x_socialrx"] == {**shed["x_socialrx"], "accepting_referrals": False, "capacity": 0}
    org = (await client.get(f"/organizations/{orgs['Leeds Walking Group']}")).json()
    assert org["organization_identifiers"][0]["identifier"] == "1234567"
    assert {s["name"] for s in org["services"]} == {"Walking for Health", "Men's Shed"}


async def test_default_needs_are_served_as_taxonomy_terms(directory) -> None:
    client, _, _ = directory
    terms = (await client.get("/taxonomy_terms?per_page=100")).json()
    assert {t["term"] for t in terms["contents"]} >= set(domain.DEFAULT_NEEDS)
    assert all(t["id"] == domain.term_id(t["term"]) for t in terms["contents"])
    taxonomy = (await client.get(f"/taxonomies/{domain.taxonomy_id(domain.NEEDS_VOCABULARY)}")).json()
    assert len(taxonomy["taxonomy_terms"]) == len(domain.DEFAULT_NEEDS)


async def test_pagination_edges(directory, kit) -> None:
    client, _, _ = directory
    first = (await client.get("/services?per_page=3&page=1")).json()
    assert (first["total_items"], first["total_pages"], first["size"]) == (4, 2, 3)
    assert first["first_page"] and not first["last_page"] and not first["empty"]
    last = (await client.get("/services?per_page=3&page=2")).json()
    assert (last["size"], last["first_page"], last["last_page"]) == (1, False, True)
    assert names(first).isdisjoint(names(last)) and len(names(first) | names(last)) == 4
    beyond = (await client.get("/services?per_page=3&page=3")).json()
    kit.oruk_valid("/services", beyond)
    assert beyond["contents"] == [] and beyond["empty"] and beyond["size"] == 0
    exact = (await client.get("/services?per_page=4")).json()
    assert exact["total_pages"] == 1 and exact["first_page"] and exact["last_page"]
    for bad in ("page=0", "per_page=0", "per_page=501", "page=x"):
        refused = await client.get(f"/services?{bad}")
        assert refused.status_code == 422 and "detail" in refused.json(), bad


async def test_each_filter(directory) -> None:
    client, orgs, _ = directory
    assert names((await client.get("/services?search=WALK")).json()) == {"Walking for Health"}
    assert names((await client.get("/services?search=adults")).json()) == {
        "Walking for Health",
        "Men's Shed",
        "Debt Advice Leeds",
        "Online Art Club",
    }
    lonely = domain.term_id("loneliness")
    assert names((await client.get(f"/services?taxonomy_term_id={lonely}")).json()) == {"Men's Shed"}
    assert (await client.get("/services?taxonomy_term_id=no-such-term")).json()["total_items"] == 0
    needs = domain.taxonomy_id(domain.NEEDS_VOCABULARY)
    assert (await client.get(f"/services?taxonomy_id={needs}")).json()["total_items"] == 4
    by_org = (await client.get(f"/services?organization_id={orgs['Citizens Help Leeds']}")).json()
    assert names(by_org) == {"Debt Advice Leeds", "Online Art Club"}
    past = (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    future = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert (await client.get("/services", params={"modified_after": past})).json()["total_items"] == 4
    assert (await client.get("/services", params={"modified_after": future})).json()["total_items"] == 0
    assert names((await client.get("/services?postcode=ls19zz")).json()) == {"Walking for Health", "Men's Shed"}
    near = (await client.get("/service_at_locations?postcode=LS1 4AP&proximity=500")).json()
    assert names(near) == {"Walking for Health", "Men's Shed"}
    wider = (await client.get("/service_at_locations?postcode=LS1 4AP&proximity=5000")).json()
    assert names(wider) == {"Walking for Health", "Men's Shed", "Debt Advice Leeds"}
    every = (await client.get("/service_at_locations")).json()
    assert "Online Art Club" not in names(every) and every["total_items"] == 3


async def test_bad_queries_and_unknown_ids_are_refused_clearly(directory) -> None:
    client, _, _ = directory
    for query in (
        "modified_after=yesterday",
        "modified_after=2026-01-01T00:00:00",
        "postcode=NOTAPOSTCODE",
        "proximity=500",
        "postcode=LS1 4AP&proximity=far",
        "postcode=LS1 4AP&proximity=-1",
        "postcode=ZZ9 9ZZ&proximity=500",
    ):
        refused = await client.get(f"/services?{query}")
        assert refused.status_code == 422, query
        assert refused.json()["detail"], query
    for path in (
        "/services/nope",
        "/service_at_locations/nope",
        "/organizations/nope",
        "/taxonomies/nope",
        "/taxonomy_terms/nope",
    ):
        missing = await client.get(path)
        assert missing.status_code == 404 and missing.json()["detail"].startswith("no such"), path
        assert missing.headers["access-control-allow-origin"] == "*"


async def test_duplicate_service_is_flagged_and_charity_manages_only_its_own(directory, jwt_secret) -> None:
    client, orgs, services = directory
    own = auth(jwt_secret, "charity", organisation_id=orgs["Leeds Walking Group"])
    duplicate = await client.post(
        "/services",
        headers=own,
        json={
            "organization_id": orgs["Leeds Walking Group"],
            "name": "walking for health",
            "needs": ["nature"],
            "capacity": 1,
            "postcode": "LS14AP",
        },
    )
    assert duplicate.status_code == 409
    assert duplicate.json()["detail"]["existing_service_id"] == services["Walking for Health"]
    other = await client.patch(f"/services/{services['Debt Advice Leeds']}", headers=own, json={"capacity": 9})
    assert other.status_code == 403
    assert (await client.get(f"/services/{services['Debt Advice Leeds']}")).json()["x_socialrx"]["capacity"] == 5
