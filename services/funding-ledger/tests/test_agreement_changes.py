"""Agreements change: ended, amended from a date as a new version (accruals keep their terms),
and back-dated to cover work accepted before they were made. Real broker and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timezone

from sqlalchemy import text

from socialrx_harness.testing import wait_for
from socialrx_shared import events as ev
from socialrx_shared.db import make_engine

from .conftest import new_org, new_pcn


async def _seen(ledger, table: str, column: str, value: str) -> None:
    """Wait until the ledger has stored an event's fact (no agreement covers it, so no payment shows it)."""
    engine = make_engine(ledger.database_url, pool_size=1)
    try:

        async def stored():
            async with engine.connect() as connection:
                return await connection.scalar(text(f"SELECT count(*) FROM {table} WHERE {column} = :v"), {"v": value})

        await wait_for(stored, what=f"{table} {value}")
    finally:
        await engine.dispose()


async def test_a_back_dated_agreement_covers_work_accepted_before_it_once_within_its_cap(ledger) -> None:
    pcn, org = new_pcn(), new_org()
    await ledger.register(org)
    inside = await ledger.accept(pcn, org, date(2026, 5, 4))
    before_start = await ledger.accept(pcn, org, date(2026, 3, 15))
    await ledger.publish(
        ev.OUTCOME_RECORDED,
        ev.OutcomeRecorded(
            outcome_id="o-" + inside,
            referral_id=inside,
            organisation_id=org,
            pcn_id=pcn,
            status="completed",
            sessions_attended=4,
            recorded_at=datetime(2026, 5, 20, 10, tzinfo=timezone.utc),
        ),
    )
    for referral in (inside, before_start):
        await _seen(ledger, "accepted_referrals", "referral_id", referral)
    await _seen(ledger, "outcomes", "referral_id", inside)

    agreement = await ledger.agree(
        pcn,
        organisation_id=org,
        per_referral_pence=5000,
        per_outcome_pence=12000,
        cap_pence_per_year=15000,
        period="quarterly",
        days_after_period_end=30,
        starts_on="2026-04-01",
    )
    assert agreement["covered_past_work"] == {"referrals": 1, "outcome_fees": 1}
    items = await ledger.payments(pcn, org, 2)
    assert sorted((p["basis"], p["referral_id"], p["amount_pence"], p["refused_over_cap_pence"]) for p in items) == [
        ("outcome_recorded", inside, 10000, 2000),
        ("referral_accepted", inside, 5000, 0),
    ]  # the cap holds

    again = await ledger.client.patch(
        f"/agreements/{agreement['id']}", headers=ledger.finance(pcn), json={"ends_on": "2027-03-31"}
    )
    assert again.status_code == 200, again.text
    assert again.json()["covered_past_work"] == {"referrals": 0, "outcome_fees": 0}  # once each
    assert len(await ledger.payments(pcn, org, 2)) == 2


async def test_an_agreement_is_amended_from_a_date_and_ended_and_every_change_is_kept(ledger) -> None:
    pcn, org = new_pcn(), new_org()
    finance = ledger.finance(pcn)
    agreement = await ledger.agree(
        pcn,
        organisation_id=org,
        per_referral_pence=1000,
        period="monthly",
        days_after_period_end=30,
        starts_on="2026-04-01",
    )
    path = f"/agreements/{agreement['id']}"
    await ledger.accept(pcn, org, date(2026, 5, 10))
    await ledger.payments(pcn, org, 1)

    amended = await ledger.client.patch(
        path,
        headers=finance,
        json={"effective_from": "2026-06-01", "per_referral_pence": 2000, "reason": "new rates from June"},
    )
    assert amended.status_code == 200, amended.text
    assert [
        (v["version"], v["effective_from"], v["per_referral_pence"], v["reason"]) for v in amended.json()["versions"]
    ] == [(1, "2026-04-01", 1000, "agreed"), (2, "2026-06-01", 2000, "new rates from June")]
    await ledger.accept(pcn, org, date(2026, 6, 10))
    items = await ledger.payments(pcn, org, 2)
    assert [(p["business_date"], p["amount_pence"]) for p in items] == [("2026-05-10", 1000), ("2026-06-10", 2000)]
    # May's work reported late is still paid at May's terms: the version in force on its business date.
    await ledger.accept(pcn, org, date(2026, 5, 20))
    items = await ledger.payments(pcn, org, 3)
    assert [(p["business_date"], p["amount_pence"]) for p in items] == [
        ("2026-05-10", 1000),
        ("2026-05-20", 1000),
        ("2026-06-10", 2000),
    ]

    too_early = await ledger.client.patch(path, headers=finance, json={"ends_on": "2026-05-31"})
    assert too_early.status_code == 409 and "work on 2026-06-10 is already accrued" in too_early.json()["detail"]
    ended = await ledger.client.patch(path, headers=finance, json={"ends_on": "2026-06-30"})
    assert ended.status_code == 200, ended.text
    assert ended.json()["ends_on"] == "2026-06-30" and len(ended.json()["versions"]) == 3

    # Work after the end is not covered, until the agreement that follows it (made afterwards) does.
    late = await ledger.accept(pcn, org, date(2026, 7, 5))
    await _seen(ledger, "accepted_referrals", "referral_id", late)
    overlap = await ledger.client.post(
        "/agreements",
        headers=finance,
        json={"organisation_id": org, "per_referral_pence": 3000, "starts_on": "2026-06-15"},
    )
    assert overlap.status_code == 409 and f"PATCH /agreements/{agreement['id']}" in overlap.json()["detail"]
    follow_on = await ledger.agree(
        pcn, organisation_id=org, per_referral_pence=3000, period="monthly", starts_on="2026-07-01"
    )
    assert follow_on["covered_past_work"]["referrals"] == 1
    items = await ledger.payments(pcn, org, 4)
    assert (items[-1]["referral_id"], items[-1]["amount_pence"], items[-1]["agreement_id"]) == (
        late,
        3000,
        follow_on["id"],
    )
    listed = (await ledger.client.get("/agreements", headers=finance)).json()["items"]
    assert [len(a["versions"]) for a in listed] == [3, 1]


async def test_bad_agreement_changes_are_refused_and_change_nothing(ledger) -> None:
    pcn, org = new_pcn(), new_org()
    finance = ledger.finance(pcn)
    agreement = await ledger.agree(pcn, organisation_id=org, per_referral_pence=1000, starts_on="2026-04-01")
    path = f"/agreements/{agreement['id']}"
    cases = [
        (f"/agreements/{uuid.uuid4()}", finance, {"ends_on": "2026-12-31"}, 404, "no agreement"),
        (path, ledger.finance(new_pcn()), {"ends_on": "2026-12-31"}, 403, "another PCN"),
        (path, finance, {"ends_on": "2026-03-31"}, 422, "before the agreement starts"),
        (path, finance, {}, 422, "nothing to change"),
        (path, finance, {"per_referral_pence": 5}, 422, "effective_from"),
        (path, finance, {"effective_from": "2026-01-01", "per_referral_pence": 5}, 422, "outside the agreement"),
        (path, finance, {"effective_from": "2026-05-01", "per_referral_pence": 0}, 422, "must fund something"),
        (path, finance, {"effective_from": "2026-05-01", "per_referral_pence": None}, 422, "cannot be null"),
        (path, finance, {"per_referral_pence": -1, "effective_from": "2026-05-01"}, 422, "greater than or equal"),
        (path, finance, {"surprise": 1}, 422, "surprise"),
    ]
    for url, headers, body, status, says in cases:
        answer = await ledger.client.patch(url, headers=headers, json=body)
        assert (answer.status_code, says in answer.text) == (status, True), (body, answer.text)
    [unchanged] = (await ledger.client.get("/agreements", headers=finance)).json()["items"]
    assert (unchanged["ends_on"], unchanged["per_referral_pence"], len(unchanged["versions"])) == (None, 1000, 1)
