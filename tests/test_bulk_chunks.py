"""A bulk referral upload written a chunk of lines per transaction, on the real PostgreSQL and Kafka
(referral-intake in-process, chunks of two lines so a small file spans several):

- the answer is line for line what one transaction gave: a line repeated in a later chunk answers
  with the referral its first copy made, refusals stay where they were, one row and one event each;
- a failure part-way keeps the chunks before it, and the same file sent again makes only the rest.
"""

from __future__ import annotations

import csv
import io
import uuid
from datetime import date, datetime, timezone

import pytest
from sqlalchemy import func, select

from socialrx_harness.testing import ConsumedRecord, auth, failing_on_call, running_service
from socialrx_referral_intake import commands
from socialrx_referral_intake.app import Settings, build
from socialrx_referral_intake.store import referrals
from socialrx_shared import events as ev

COLUMNS = [
    "service_id",
    "needs",
    "nhs_number",
    "given_name",
    "family_name",
    "date_of_birth",
    "postcode",
    "consent_given",
    "consent_recorded_at",
]
NHS = ["9990000018", "9990000026", "9990000034", "9990000042", "9990000050"]


def _csv(rows: list[tuple[str, str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for service_id, nhs, consent in rows:
        writer.writerow(
            [service_id, "loneliness", nhs, "Chunk", "Person", "1960-02-01", "LS6 2AB", consent, "2026-11-01T10:00:00Z"]
        )
    return out.getvalue().encode()


async def _service(rt, service_id: str) -> None:
    update = ev.ServiceUpdated(
        service_id=service_id,
        organisation_id="org-chunks",
        name="Chunked walks",
        status="active",
        needs=["loneliness"],
        capacity_available=50,
        safeguarding_policy_valid_until=date(2030, 1, 1),
        accepting_referrals=True,
        version=1,
        updated_at=datetime.now(timezone.utc),
    )
    event = ev.new_event(ev.SERVICE_UPDATED, update, source="directory")
    await rt.consumer.handle_batch([ConsumedRecord(ev.SERVICE_UPDATED.topic, event.to_bytes())])


async def _made(rt) -> int:
    async with rt.sessionmaker() as session:
        return await session.scalar(
            select(func.count()).select_from(referrals).where(referrals.c.idempotency_key.like("bulk:%"))
        )


@pytest.fixture
def chunks_of_two(monkeypatch) -> None:
    monkeypatch.setattr(commands, "BULK_LINES_PER_TRANSACTION", 2)


async def test_an_upload_across_chunks_answers_line_for_line_as_one_transaction(
    kafka, postgres, jwt_secret, chunks_of_two
) -> None:
    async with running_service(
        build,
        Settings,
        database_url=postgres.new_database("chunks"),
        kafka=kafka.bootstrap_servers,
        jwt_secret=jwt_secret,
    ) as (app, client):
        rt = app.state.runtime
        service_id = "svc-chunks-" + uuid.uuid4().hex[:6]
        await _service(rt, service_id)
        link_worker = auth(jwt_secret, "link_worker", pcn_id="U12345", practice_id="B82005")
        rows = [
            (service_id, NHS[0], "yes"),  # line 2: chunk 1
            (service_id, NHS[1], "no"),  # line 3: refused (no consent), never in a chunk
            (service_id, NHS[1], "yes"),  # line 4: chunk 1
            ("no-such-service", NHS[2], "yes"),  # line 5: chunk 2, refused there
            (service_id, NHS[0], "yes"),  # line 6: chunk 2, line 2 again
            (service_id, NHS[3], "yes"),  # line 7: chunk 3
            (service_id, NHS[4], "yes"),  # line 8: chunk 3
        ]
        headers = {**link_worker, "content-type": "text/csv"}
        answer = await client.post("/referrals/bulk", content=_csv(rows), headers=headers)
        assert answer.status_code == 200, answer.text
        lines = {line["line"]: line for line in answer.json()["lines"]}
        assert {n: line["status"] for n, line in lines.items()} == {
            2: "created",
            3: "refused",
            4: "created",
            5: "refused",
            6: "already_created",
            7: "created",
            8: "created",
        }
        assert lines[6]["referral_id"] == lines[2]["referral_id"]
        assert "unknown service" in lines[5]["error"]
        assert len({lines[n]["referral_id"] for n in (2, 4, 7, 8)}) == 4
        assert await _made(rt) == 4
        async with rt.sessionmaker() as session:
            staged = await session.scalar(
                select(func.count()).select_from(rt.outbox).where(rt.outbox.c.topic == ev.REFERRAL_CREATED.topic)
            )
        assert staged == 4

        again = await client.post("/referrals/bulk", content=_csv(rows), headers=headers)
        assert [line["status"] for line in again.json()["lines"]].count("already_created") == 5
        assert await _made(rt) == 4


async def test_a_failure_part_way_keeps_the_chunks_before_it_and_resending_makes_the_rest(
    kafka, postgres, jwt_secret, chunks_of_two
) -> None:
    async with running_service(
        build,
        Settings,
        database_url=postgres.new_database("chunkfail"),
        kafka=kafka.bootstrap_servers,
        jwt_secret=jwt_secret,
    ) as (app, client):
        rt = app.state.runtime
        service_id = "svc-chunkfail-" + uuid.uuid4().hex[:6]
        await _service(rt, service_id)
        headers = {**auth(jwt_secret, "link_worker", pcn_id="U12345", practice_id="B82005"), "content-type": "text/csv"}
        body = _csv([(service_id, nhs, "yes") for nhs in NHS])  # chunks: 2 + 2 + 1
        with failing_on_call(rt, "stage_many", 2, ConnectionResetError("the database went away")):
            failed = await client.post("/referrals/bulk", content=body, headers=headers)
        assert failed.status_code >= 500
        assert await _made(rt) == 2  # the first chunk stayed; the second was rolled back

        answer = await client.post("/referrals/bulk", content=body, headers=headers)
        assert answer.status_code == 200, answer.text
        assert [line["status"] for line in answer.json()["lines"]] == [
            "already_created",
            "already_created",
            "created",
            "created",
            "created",
        ]
        assert await _made(rt) == 5
