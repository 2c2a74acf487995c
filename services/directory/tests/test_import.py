"""Importing an Open Referral UK feed: good records in, the bad one reported, re-import never doubles."""

from __future__ import annotations

import copy
import uuid

from socialrx_directory.app import Settings, build
from socialrx_harness.testing import auth, events_on_topic, running_service, wait_for
from socialrx_shared import events as ev


def _feed(kit) -> tuple[dict, str, str]:
    first = kit.example("service_full.json")
    second = copy.deepcopy(first)
    second.update(id=str(uuid.uuid4()), name="Community Gardening")
    second["service_at_locations"][0]["id"] = str(uuid.uuid4())
    malformed = {"id": str(uuid.uuid4()), "name": 42, "status": "open"}
    return {"contents": [first, malformed, second]}, first["id"], second["id"]


async def test_import_takes_the_good_records_and_reports_the_malformed_one(kafka, postgres, jwt_secret, kit) -> None:
    feed, first_id, second_id = _feed(kit)
    admin = auth(jwt_secret, "admin")
    async with running_service(
        build, Settings, database_url=postgres.new_database("dir"), kafka=kafka.bootstrap_servers, jwt_secret=jwt_secret
    ) as (_app, client):
        report = await client.post("/imports", headers=admin, json=feed)
        assert report.status_code == 200, report.text
        body = report.json()
        assert (body["created"], body["updated"], body["imported"]) == (2, 0, 2)
        assert [(s["index"], s["id"]) for s in body["skipped"]] == [(1, feed["contents"][1]["id"])]
        assert "name" in body["skipped"][0]["reason"] and "status" in body["skipped"][0]["reason"]

        listed = (await client.get("/services")).json()
        assert {s["id"] for s in listed["contents"]} == {first_id, second_id}
        imported = (await client.get(f"/services/{first_id}")).json()
        kit.oruk_valid("/services/{id}", imported)
        assert imported["organization"]["id"] == feed["contents"][0]["organization"]["id"]
        # A feed says what a service is, not that it can take referrals.
        assert imported["x_socialrx"]["accepting_referrals"] is False
        assert imported["attributes"][0]["taxonomy_term"]["id"] == "3f7b145d-84af-42d7-8fae-eaca714b02b2"
        sal = imported["service_at_locations"][0]
        assert sal["id"] == "e94c9f38-1e8f-4564-91d4-d53501ab1765"
        kit.oruk_valid("/service_at_locations/{id}", (await client.get(f"/service_at_locations/{sal['id']}")).json())

        async def announced():
            keys = {
                e.data["service_id"] for e in await events_on_topic(kafka.bootstrap_servers, ev.SERVICE_UPDATED.topic)
            }
            return {first_id, second_id} <= keys

        await wait_for(announced, what="service.updated for both imported services")

        again = (await client.post("/imports", headers=admin, json=feed)).json()
        assert (again["created"], again["updated"]) == (0, 2)
        assert (await client.get("/services")).json()["total_items"] == 2


async def test_import_refusals_change_nothing(kafka, postgres, jwt_secret, kit) -> None:
    feed, _, _ = _feed(kit)
    async with running_service(
        build, Settings, database_url=postgres.new_database("dir"), kafka=kafka.bootstrap_servers, jwt_secret=jwt_secret
    ) as (_app, client):
        admin = auth(jwt_secret, "admin")
        charity = auth(jwt_secret, "charity", organisation_id="org-1")
        assert (await client.post("/imports", headers=charity, json=feed)).status_code == 403
        shapeless = await client.post("/imports", headers=admin, json={"hello": "world"})
        assert shapeless.status_code == 422 and "feed is a page" in shapeless.json()["detail"]
        all_bad = await client.post("/imports", headers=admin, json=[feed["contents"][1], "not a record"])
        assert all_bad.status_code == 422
        assert len(all_bad.json()["detail"]["skipped"]) == 2
        assert (await client.get("/services")).json()["total_items"] == 0
        assert (await client.get("/organizations")).json()["total_items"] == 0
