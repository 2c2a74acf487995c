"""One funding-ledger service per test module, in-process on the real broker and database, and
helpers to feed it the events other services publish."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timezone

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from socialrx_funding_ledger.app import Settings, build
from socialrx_harness.testing import auth, running_service, wait_for
from socialrx_shared import events as ev


@dataclass
class Ledger:
    client: httpx.AsyncClient
    database_url: str
    bootstrap: str
    jwt_secret: str
    producer: AIOKafkaProducer

    def finance(self, pcn_id: str) -> dict[str, str]:
        return auth(self.jwt_secret, "finance", pcn_id=pcn_id)

    async def publish(self, spec: ev.EventSpec, data: ev.Strict) -> ev.Envelope:
        envelope = ev.new_event(spec, data, source="test")
        await self.producer.send_and_wait(spec.topic, envelope.to_bytes(), key=envelope.subject.encode())
        return envelope

    async def accept(self, pcn_id: str, organisation_id: str, on: date, referral_id: str | None = None) -> str:
        referral_id = referral_id or "r-" + uuid.uuid4().hex[:10]
        await self.publish(
            ev.REFERRAL_ACCEPTED,
            ev.ReferralAccepted(
                referral_id=referral_id,
                organisation_id=organisation_id,
                service_id="svc",
                pcn_id=pcn_id,
                accepted_at=datetime.combine(on, time(10), timezone.utc),
            ),
        )
        return referral_id

    async def payments(self, pcn_id: str, organisation_id: str, count: int) -> list[dict]:
        """Wait until `count` payments of the organisation are in the ledger, oldest first."""

        async def enough():
            answer = (
                await self.client.get(f"/payments?organisation_id={organisation_id}", headers=self.finance(pcn_id))
            ).json()
            return answer["items"] if answer["total"] >= count else None

        items = await wait_for(enough, what=f"{count} payments of {organisation_id}")
        assert len(items) == count, items
        return items

    async def register(self, organisation_id: str) -> None:
        """Announce an organisation as the directory does (the ledger funds only known ones)."""
        await self.publish(
            ev.ORGANISATION_REGISTERED,
            ev.OrganisationRegistered(
                organisation_id=organisation_id,
                name=f"Test {organisation_id}",
                registered_at=datetime.now(timezone.utc),
            ),
        )

    async def agree(self, pcn_id: str, **body) -> dict:
        await self.register(body["organisation_id"])
        response = await post_once_known(self.client, "/agreements", self.finance(pcn_id), body)
        assert response.status_code == 201, response.text
        return response.json()


async def post_once_known(client: httpx.AsyncClient, path: str, headers: dict, body: dict) -> httpx.Response:
    """POST, again while the ledger has not yet read the organisation's registration."""

    async def answered():
        response = await client.post(path, headers=headers, json=body)
        return None if response.status_code == 422 and "no organisation with id" in response.text else response

    return await wait_for(answered, what=f"the ledger to know organisation {body.get('organisation_id')}")


def new_pcn() -> str:
    return "P" + uuid.uuid4().hex[:8].upper()


def new_org() -> str:
    return "org-" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
async def ledger(kafka, postgres, jwt_secret):
    url = postgres.new_database("ledger")
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        async with running_service(
            build, Settings, database_url=url, kafka=kafka.bootstrap_servers, jwt_secret=jwt_secret
        ) as (_app, client):
            yield Ledger(client, url, kafka.bootstrap_servers, jwt_secret, producer)
    finally:
        await producer.stop()
