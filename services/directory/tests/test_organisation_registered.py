"""An organisation an admin adds is announced (organisation.registered) through the outbox: the
funding ledger funds only organisations it has heard of."""

from __future__ import annotations

import uuid

from socialrx_directory.app import Settings, build
from socialrx_harness.testing import auth, events_on_topic, running_service, wait_for
from socialrx_shared import events as ev


async def test_adding_an_organisation_publishes_organisation_registered(kafka, postgres, jwt_secret) -> None:
    async with running_service(
        build,
        Settings,
        database_url=postgres.new_database("directory"),
        kafka=kafka.bootstrap_servers,
        jwt_secret=jwt_secret,
    ) as (_app, client):
        name = f"Registered Neighbours {uuid.uuid4().hex[:6]}"
        created = await client.post("/organizations", headers=auth(jwt_secret, "admin"), json={"name": name})
        assert created.status_code == 201, created.text
        organisation_id = created.json()["id"]

        async def announced():
            return (
                await events_on_topic(
                    kafka.bootstrap_servers, ev.ORGANISATION_REGISTERED.topic, organisation_id=organisation_id
                )
                or None
            )

        [envelope] = await wait_for(announced, what="organisation.registered")
        assert envelope.subject == organisation_id and envelope.data["name"] == name
