"""A charity's outcome upload written a chunk of lines per transaction (chunks of two here, so a small
file spans several), on the real PostgreSQL and Kafka:

- line for line the answer one transaction gave: a second baseline in a later chunk names the row of
  this file that holds the first; a repeated line finds the outcome its first copy recorded;
- a failure part-way keeps the chunks before it, and the same file sent again records only the rest.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest
from sqlalchemy import func, select

from socialrx_harness.testing import failing_on_call, wait_for
from socialrx_outcomes import commands
from socialrx_outcomes.store import outcomes as outcomes_table
from socialrx_outcomes.store import referral_view
from socialrx_shared import events as ev


@pytest.fixture
def chunks_of_two(monkeypatch) -> None:
    monkeypatch.setattr(commands, "BULK_LINES_PER_TRANSACTION", 2)


async def _accepted_referrals(outcomes, count: int) -> tuple[str, list[str]]:
    pcn, org = outcomes.new_pcn(), "org-" + uuid.uuid4().hex[:8]
    ids = ["r-" + uuid.uuid4().hex[:12] for _ in range(count)]
    now = datetime.now(timezone.utc)
    await outcomes.publish(
        *[outcomes.created(r, pcn_id=pcn, organisation_id=org, at=now) for r in ids],
        *[outcomes.accepted(r, pcn_id=pcn, organisation_id=org, at=now) for r in ids],
    )
    rt = outcomes.app.state.runtime

    async def all_accepted() -> bool:
        async with rt.sessionmaker() as session:
            query = select(func.count()).where(
                referral_view.c.referral_id.in_(ids), referral_view.c.status == "accepted"
            )
            return await session.scalar(query) == count

    await wait_for(all_accepted, what="the referrals accepted in outcomes' view")
    return org, ids


async def _upload(outcomes, org: str, rows: list[str]) -> dict:
    body = ("referral_id,status,sessions_attended,swemwbs_baseline\n" + "\n".join(rows) + "\n").encode()
    answer = await outcomes.client.post(
        "/outcomes/bulk", content=body, headers={**outcomes.charity(org), "content-type": "text/csv"}
    )
    return {"status": answer.status_code, "body": answer.json() if answer.status_code < 500 else None}


async def _recorded(outcomes, ids: list[str]) -> int:
    async with outcomes.app.state.runtime.sessionmaker() as session:
        return await session.scalar(select(func.count()).where(outcomes_table.c.referral_id.in_(ids)))


async def test_an_outcome_upload_across_chunks_answers_line_for_line_as_one_transaction(outcomes, chunks_of_two):
    org, (r1, r2, r3) = await _accepted_referrals(outcomes, 3)
    rows = [
        f"{r1},completed,6,1 2 3 4 5 1 2",  # line 2: chunk 1, a baseline
        f"{r2},completed,3,",  # line 3: chunk 1
        f"{r1},completed,7,2 2 2 2 2 2 2",  # line 4: chunk 2, a second baseline for r1
        f"{r1},completed,6,1 2 3 4 5 1 2",  # line 5: chunk 2, line 2 again
        f"{r3},engaged,2,",  # line 6: chunk 3
    ]
    answer = await _upload(outcomes, org, rows)
    assert answer["status"] == 200, answer
    lines = {line["line"]: line for line in answer["body"]["lines"]}
    assert {n: line["status"] for n, line in lines.items()} == {
        2: "recorded",
        3: "recorded",
        4: "refused",
        5: "already_recorded",
        6: "recorded",
    }
    assert "a SWEMWBS baseline is already recorded for this referral (row 2 of this file)" in lines[4]["error"]
    assert lines[5]["outcome_id"] == lines[2]["outcome_id"]
    assert await _recorded(outcomes, [r1, r2, r3]) == 3
    async with outcomes.app.state.runtime.sessionmaker() as session:
        outbox = outcomes.app.state.runtime.outbox
        staged = await session.scalar(
            select(func.count()).where(outbox.c.topic == ev.OUTCOME_RECORDED.topic, outbox.c.key.in_([r1, r2, r3]))
        )
    assert staged == 3


async def test_a_failure_part_way_keeps_the_chunks_before_it_and_resending_records_the_rest(outcomes, chunks_of_two):
    org, ids = await _accepted_referrals(outcomes, 5)
    rows = [f"{r},completed,{n + 1}," for n, r in enumerate(ids)]  # chunks: 2 + 2 + 1
    rt = outcomes.app.state.runtime
    with failing_on_call(rt, "stage_many", 2, ConnectionResetError("the database went away")):
        failed = await _upload(outcomes, org, rows)
    assert failed["status"] >= 500
    assert await _recorded(outcomes, ids) == 2  # the first chunk stayed; the second was rolled back

    again = await _upload(outcomes, org, rows)
    assert again["status"] == 200, again
    assert [line["status"] for line in again["body"]["lines"]] == [
        "already_recorded",
        "already_recorded",
        "recorded",
        "recorded",
        "recorded",
    ]
    assert await _recorded(outcomes, ids) == 5
