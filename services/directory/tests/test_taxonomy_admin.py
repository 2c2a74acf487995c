"""Admins add need codes; services may only use known ones."""

from __future__ import annotations

from socialrx_directory.app import Settings, build
from socialrx_harness.testing import auth, running_service


async def test_admins_add_terms_and_services_use_only_known_ones(kafka, postgres, jwt_secret) -> None:
    admin = auth(jwt_secret, "admin")
    async with running_service(
        build, Settings, database_url=postgres.new_database("dir"), kafka=kafka.bootstrap_servers, jwt_secret=jwt_secret
    ) as (_app, client):
        org = (await client.post("/organizations", headers=admin, json={"name": "Digital Buddies"})).json()["id"]
        service = {"organization_id": org, "name": "Tablet club", "needs": ["digital-inclusion"], "capacity": 3}
        refused = await client.post("/services", headers=admin, json=service)
        assert refused.status_code == 422 and "unknown need code(s): digital-inclusion" in refused.json()["detail"]
        assert (await client.get("/services")).json()["total_items"] == 0

        added = await client.post(
            "/taxonomy_terms", headers=admin, json={"code": "digital-inclusion", "name": "Digital inclusion"}
        )
        assert added.status_code == 201, added.text
        again = await client.post("/taxonomy_terms", headers=admin, json={"code": "digital-inclusion", "name": "Again"})
        assert again.status_code == 409
        bad = await client.post("/taxonomy_terms", headers=admin, json={"code": "Not A Code", "name": "x"})
        assert bad.status_code == 422
        charity = auth(jwt_secret, "charity", organisation_id=org)
        assert (
            await client.post("/taxonomy_terms", headers=charity, json={"code": "x", "name": "x"})
        ).status_code == 403

        created = await client.post("/services", headers=admin, json=service)
        assert created.status_code == 201, created.text
        patched = await client.patch(f"/services/{created.json()['id']}", headers=admin, json={"needs": ["nope-nope"]})
        assert patched.status_code == 422
        terms = (await client.get("/taxonomy_terms?per_page=100")).json()["contents"]
        term = next(t for t in terms if t["name"] == "Digital inclusion")
        assert (await client.get(f"/taxonomy_terms/{term['id']}")).status_code == 200
        listed = (await client.get(f"/services?taxonomy_term_id={term['id']}")).json()
        assert [s["id"] for s in listed["contents"]] == [created.json()["id"]]
