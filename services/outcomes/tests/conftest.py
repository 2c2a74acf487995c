"""Outcomes on the real broker and database: a running service and a way to send it referral events."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from socialrx_harness.testing import auth, running_service
from socialrx_outcomes import reports
from socialrx_outcomes.app import Settings, build
from socialrx_shared import events as ev


@dataclass
class Outcomes:
    client: httpx.AsyncClient
    kafka: str
    jwt_secret: str
    app: Any = None

    async def raw_report(
        self,
        kind: str = "outcomes",
        *,
        pcn_id: str | None = None,
        organisation_id: str | None = None,
        from_: date | None = None,
        to: date | None = None,
        group_by: str = "pcn",
    ) -> dict:
        """A report's exact figures, before disclosure control: to check the maths on a small population.

        The HTTP API never serves these (its tests check that); this reads the service's database.
        """
        scope = reports.Scope(pcn_id, organisation_id, from_, to)
        runtime = self.app.state.runtime
        if kind == "outcomes":
            return await reports.outcomes_report(
                runtime, scope, reports.parse_group_by(group_by), disclosure_control=False
            )
        return await reports.inclusion_report(runtime, scope, disclosure_control=False)

    def charity(self, organisation_id: str) -> dict[str, str]:
        return auth(self.jwt_secret, "charity", organisation_id=organisation_id)

    def link_worker(self, pcn_id: str) -> dict[str, str]:
        return auth(self.jwt_secret, "link_worker", pcn_id=pcn_id)

    def finance(self, pcn_id: str) -> dict[str, str]:
        return auth(self.jwt_secret, "finance", pcn_id=pcn_id)

    def admin(self) -> dict[str, str]:
        return auth(self.jwt_secret, "admin")

    async def publish(self, *items: tuple[ev.EventSpec, ev.Strict]) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.kafka, acks="all")
        await producer.start()
        try:
            for spec, data in items:
                envelope = ev.new_event(spec, data, source="test")
                await producer.send_and_wait(spec.topic, envelope.to_bytes(), key=envelope.subject.encode())
        finally:
            await producer.stop()


@pytest.fixture(scope="module")
async def outcomes(kafka, postgres, jwt_secret) -> AsyncIterator[Outcomes]:
    async with running_service(
        build,
        Settings,
        database_url=postgres.new_database("outcomes"),
        kafka=kafka.bootstrap_servers,
        jwt_secret=jwt_secret,
    ) as (app, client):
        yield Outcomes(client, kafka.bootstrap_servers, jwt_secret, app)


def new_pcn() -> str:
    return "P" + uuid.uuid4().hex[:8].upper()


def created(
    referral_id: str,
    *,
    pcn_id: str,
    organisation_id: str,
    at: datetime,
    service_id: str = "svc-1",
    link_worker_id: str = "lw-1",
    age_band: str = "35-44",
    postcode_district: str = "LS6",
    accessibility_needs: list[str] | None = None,
) -> tuple[ev.EventSpec, ev.Strict]:
    return ev.REFERRAL_CREATED, ev.ReferralCreated(
        referral_id=referral_id,
        pcn_id=pcn_id,
        practice_id="B86001",
        link_worker_id=link_worker_id,
        organisation_id=organisation_id,
        service_id=service_id,
        needs=["loneliness"],
        person_ref=uuid.uuid4().hex * 2,
        age_band=age_band,
        postcode_district=postcode_district,
        accessibility_needs=accessibility_needs or [],
        consent_to_share=True,
        created_at=at,
    )


def accepted(
    referral_id: str, *, pcn_id: str, organisation_id: str, at: datetime, service_id: str = "svc-1"
) -> tuple[ev.EventSpec, ev.Strict]:
    return ev.REFERRAL_ACCEPTED, ev.ReferralAccepted(
        referral_id=referral_id, organisation_id=organisation_id, service_id=service_id, pcn_id=pcn_id, accepted_at=at
    )


def declined(
    referral_id: str, *, pcn_id: str, organisation_id: str, at: datetime, reason: str, service_id: str = "svc-1"
) -> tuple[ev.EventSpec, ev.Strict]:
    return ev.REFERRAL_DECLINED, ev.ReferralDeclined(
        referral_id=referral_id,
        organisation_id=organisation_id,
        service_id=service_id,
        pcn_id=pcn_id,
        reason=reason,
        declined_at=at,
    )  # type: ignore[arg-type]


def answers(instrument: str, total: int) -> list[int]:
    """Answers to WEMWBS or SWEMWBS whose raw total is `total`."""
    items = {"WEMWBS": 14, "SWEMWBS": 7}[instrument]
    result, rest = [1] * items, total - items
    for i in range(items):
        step = min(4, rest)
        result[i] += step
        rest -= step
    assert rest == 0
    return result


# Tests reach these through the fixture: with --import-mode=importlib a conftest is not importable.
for _helper in (new_pcn, created, accepted, declined, answers):
    setattr(Outcomes, _helper.__name__, staticmethod(_helper))
