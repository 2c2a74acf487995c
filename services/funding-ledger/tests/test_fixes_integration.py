"""Regression tests of the issue-12 ledger defects, on the real broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from datetime import date, datetime, timezone

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from socialrx_harness.testing import auth, events_on_topic, wait_for
from socialrx_shared import events as ev
from socialrx_shared.db import make_engine

from .conftest import new_org, new_pcn

AGREEMENT = {"per_referral_pence": 1000, "period": "monthly", "days_after_period_end": 30, "starts_on": "2026-04-01"}


@pytest.mark.parametrize(
    "statement",
    ["TRUNCATE journal_lines", "TRUNCATE journal_entries CASCADE", "TRUNCATE journal_entries, journal_lines"],
)
async def test_the_journal_refuses_truncate(ledger, statement: str) -> None:
    pcn, org = new_pcn(), new_org()
    await ledger.agree(pcn, organisation_id=org, **AGREEMENT)
    await ledger.accept(pcn, org, date(2026, 4, 10))
    await ledger.payments(pcn, org, 1)
    engine = make_engine(ledger.database_url, pool_size=1)
    try:
        async with engine.connect() as connection:
            with pytest.raises(DBAPIError, match="journal entries are immutable"):
                await connection.execute(text(statement))
            await connection.rollback()
            assert await connection.scalar(text("SELECT count(*) FROM journal_lines")) > 0
    finally:
        await engine.dispose()


async def test_two_pcns_may_pay_one_organisation_with_the_same_reference(ledger) -> None:
    first, second, org = new_pcn(), new_pcn(), new_org()
    for pcn in (first, second):
        await ledger.agree(pcn, organisation_id=org, **AGREEMENT)
        await ledger.accept(pcn, org, date(2026, 4, 10))
        await ledger.payments(pcn, org, 1)
    body = {"organisation_id": org, "amount_pence": 1000, "paid_on": "2026-06-01", "reference": "APRIL"}
    paid = await ledger.client.post("/settlements", headers=ledger.finance(first), json=body)
    assert paid.status_code == 201, paid.text
    # The second PCN's reconciliation: the dry run and the post agree, and nothing names PCN one.
    remittance = "paid_on,organisation_id,amount_pence,reference\n" + f"2026-06-01,{org},1000,APRIL\n"
    upload = {"file": ("r.csv", remittance.encode(), "text/csv")}
    dry = (await ledger.client.post("/reconciliation", headers=ledger.finance(second), files=upload)).json()
    assert [(r["status"], r["recorded"]) for r in dry["lines"]] == [("matched", False)]
    posted = await ledger.client.post("/reconciliation?post=true", headers=ledger.finance(second), files=upload)
    assert posted.status_code == 200, posted.text
    [line] = posted.json()["lines"]
    assert line["status"] == "matched" and line["posted_settlement_id"] != paid.json()["settlement_id"]
    again = await ledger.client.post("/settlements", headers=ledger.finance(second), json=body)
    assert again.status_code == 200 and again.json()["settlement_id"] == line["posted_settlement_id"]
    for pcn in (first, second):
        settled = (await ledger.client.get("/settlements", headers=ledger.finance(pcn))).json()["items"]
        assert [(s["pcn_id"], s["reference"]) for s in settled] == [(pcn, "APRIL")]


async def test_a_race_on_one_idempotency_key_is_a_409_never_a_500(ledger) -> None:
    pcn = new_pcn()
    orgs = [new_org() for _ in range(2)]
    for org in orgs:
        await ledger.agree(pcn, organisation_id=org, **AGREEMENT)
    for round_ in range(6):
        headers = {**ledger.finance(pcn), "Idempotency-Key": f"race-{uuid.uuid4().hex}"}
        answers = await asyncio.gather(
            *(
                ledger.client.post(
                    "/settlements",
                    headers=headers,
                    json={
                        "organisation_id": org,
                        "amount_pence": 100,
                        "paid_on": "2026-06-01",
                        "reference": f"RACE-{round_}",
                    },
                )
                for org in orgs
            )
        )
        assert sorted(a.status_code for a in answers) == [201, 409], [a.text for a in answers]
        assert "Idempotency-Key" in next(a for a in answers if a.status_code == 409).json()["detail"]


async def test_trial_balance_shows_a_finance_officer_only_their_pcn(ledger) -> None:
    mine, theirs, org = new_pcn(), new_pcn(), new_org()
    await ledger.agree(mine, organisation_id=org, **AGREEMENT)
    await ledger.agree(theirs, organisation_id=org, **AGREEMENT | {"per_referral_pence": 7000})
    await ledger.accept(mine, org, date(2026, 4, 10))
    await ledger.accept(theirs, org, date(2026, 4, 10))
    await ledger.payments(mine, org, 1)
    await ledger.payments(theirs, org, 1)
    own = (await ledger.client.get("/trial-balance", headers=ledger.finance(mine))).json()
    assert (own["pcn_id"], own["debits_pence"], own["credits_pence"], own["balanced"]) == (mine, 1000, 1000, True)
    everyone = (await ledger.client.get("/trial-balance", headers=auth(ledger.jwt_secret, "admin"))).json()
    assert everyone["pcn_id"] is None and everyone["debits_pence"] >= 8000 and everyone["balanced"]


async def test_statement_csv_cannot_carry_a_spreadsheet_formula(ledger) -> None:
    pcn, org = new_pcn(), new_org()
    await ledger.agree(pcn, organisation_id=org, **AGREEMENT)
    await ledger.accept(pcn, org, date(2026, 4, 10))
    await ledger.payments(pcn, org, 1)
    for reference in ('=HYPERLINK("http://evil.example","x")', "+1+2", "-2+3", "@SUM(1)"):
        paid = await ledger.client.post(
            "/settlements",
            headers=ledger.finance(pcn),
            json={"organisation_id": org, "amount_pence": 300, "paid_on": "2026-06-01", "reference": reference},
        )
        assert paid.status_code == 201, paid.text
    answer = await ledger.client.get(
        f"/statements/{org}?from=2026-04-01&to=2026-06-30&format=csv", headers=ledger.finance(pcn)
    )
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    references = sorted(r["reference"] for r in rows if r["type"] == "payment")
    assert references == ["'+1+2", "'-2+3", '\'=HYPERLINK("http://evil.example","x")', "'@SUM(1)"]
    assert rows[-1]["balance_pence"] == "-200"  # figures stay numbers, a minus sign and all


async def test_work_just_after_midnight_in_summer_time_is_the_uk_day(ledger) -> None:
    pcn, org = new_pcn(), new_org()
    await ledger.agree(pcn, organisation_id=org, **AGREEMENT | {"period": "quarterly"})
    # 00:30 BST on 1 July = 23:30 UTC on 30 June: July's work (Q2), not June's (Q1).
    await ledger.publish(
        ev.REFERRAL_ACCEPTED,
        ev.ReferralAccepted(
            referral_id="r-" + uuid.uuid4().hex[:10],
            organisation_id=org,
            service_id="svc",
            pcn_id=pcn,
            accepted_at=datetime(2026, 6, 30, 23, 30, tzinfo=timezone.utc),
        ),
    )
    [payment] = await ledger.payments(pcn, org, 1)
    assert (payment["business_date"], payment["period"], payment["due_date"]) == (
        "2026-07-01",
        "2026/27-Q2",
        "2026-10-30",
    )


async def test_a_corrected_outcome_takes_its_paid_fee_back_as_a_credit(ledger) -> None:
    pcn, org = new_pcn(), new_org()
    finance = ledger.finance(pcn)
    await ledger.agree(
        pcn,
        organisation_id=org,
        per_referral_pence=5000,
        per_outcome_pence=12000,
        period="quarterly",
        days_after_period_end=30,
        starts_on="2026-04-01",
    )
    referral = await ledger.accept(pcn, org, date(2026, 5, 4))
    completed = ev.OutcomeRecorded(
        outcome_id="o-" + referral,
        referral_id=referral,
        organisation_id=org,
        pcn_id=pcn,
        status="completed",
        sessions_attended=6,
        recorded_at=datetime(2026, 6, 10, 10, tzinfo=timezone.utc),
    )
    await ledger.publish(ev.OUTCOME_RECORDED, completed)
    await ledger.payments(pcn, org, 2)
    paid = await ledger.client.post(
        "/settlements",
        headers=finance,
        json={"organisation_id": org, "amount_pence": 17000, "paid_on": "2026-07-15", "reference": "Q1"},
    )
    assert paid.status_code == 201 and paid.json()["unallocated_pence"] == 0, paid.text

    corrected = completed.model_copy(
        update={"status": "engaged", "revision": 2, "corrected_at": datetime(2026, 8, 3, 9, tzinfo=timezone.utc)}
    )
    await ledger.publish(ev.OUTCOME_RECORDED, corrected)
    await ledger.publish(ev.OUTCOME_RECORDED, corrected)  # a redelivery takes nothing back twice

    async def taken_back():
        items = (await ledger.client.get(f"/payments?organisation_id={org}", headers=finance)).json()["items"]
        return [p for p in items if p["reversed_pence"]] or None

    [fee] = await wait_for(taken_back, what="the outcome fee taken back")
    listed = (await ledger.client.get(f"/payments?organisation_id={org}&status=reversed", headers=finance)).json()
    assert [p["payment_id"] for p in listed["items"]] == [fee["payment_id"]]
    settled_only = (await ledger.client.get(f"/payments?organisation_id={org}&status=settled", headers=finance)).json()
    assert [p["basis"] for p in settled_only["items"]] == ["referral_accepted"]
    assert (fee["basis"], fee["amount_pence"], fee["reversed_pence"], fee["open_pence"]) == (
        "outcome_recorded",
        12000,
        12000,
        0,
    )

    # The fee was paid: the organisation now holds 12000 of credit, in arrears, statements and settlements.
    arrears = (await ledger.client.get("/arrears?as_of=2026-08-31", headers=finance)).json()
    assert (arrears["total"]["owed_pence"], arrears["total"]["credit_held_pence"]) == (0, 12000)
    before = (await ledger.client.get("/arrears?as_of=2026-08-02", headers=finance)).json()
    assert before["total"]["credit_held_pence"] == 0  # dated by the correction
    statement = (await ledger.client.get(f"/statements/{org}?from=2026-04-01&to=2026-08-31", headers=finance)).json()
    assert [(line["type"], line["charged_pence"], line["paid_pence"]) for line in statement["lines"]] == [
        ("accrual", 5000, 0),
        ("accrual", 12000, 0),
        ("payment", 0, 17000),
        ("reversal", -12000, 0),
    ]
    assert statement["closing_balance_pence"] == -12000
    settled = (await ledger.client.get("/settlements", headers=finance)).json()["items"]
    assert settled[0]["credit_held_pence"] == 12000
    balance = (await ledger.client.get("/trial-balance", headers=finance)).json()
    assert (
        balance["balanced"] and balance["debits_pence"] == 5000 + 12000 + 17000 + 12000
    )  # accruals, payment, reversal

    async def published():
        return await events_on_topic(ledger.bootstrap, ev.PAYMENT_REVERSED.topic, referral_id=referral) or None

    [envelope] = await wait_for(published, what="payment.reversed on its topic")
    event = envelope.payload()
    assert (
        event.payment_id,
        event.reversed_pence,
        event.open_cancelled_pence,
        event.overpaid_pence,
        event.business_date,
    ) == (fee["payment_id"], 12000, 0, 12000, date(2026, 8, 3))
    assert "engaged" in event.reason


async def test_a_settlement_pays_the_referral_fee_before_the_outcome_fee_of_the_same_day(ledger) -> None:
    from socialrx_funding_ledger.ledger import PAYMENT_NAMESPACE

    pcn, org = new_pcn(), new_org()
    await ledger.agree(
        pcn,
        organisation_id=org,
        per_referral_pence=5000,
        per_outcome_pence=12000,
        period="quarterly",
        days_after_period_end=30,
        starts_on="2026-04-01",
    )
    agreement_id = (await ledger.client.get("/agreements", headers=ledger.finance(pcn))).json()["items"][0]["id"]
    # A referral whose outcome fee's id sorts before its referral fee's: ordering by id gets it wrong.
    while True:
        referral = "r-" + uuid.uuid4().hex[:10]
        referral_fee = str(uuid.uuid5(PAYMENT_NAMESPACE, f"referral_accepted:{referral}"))
        outcome_fee = str(uuid.uuid5(PAYMENT_NAMESPACE, f"outcome_recorded:{referral}:{agreement_id}"))
        if outcome_fee < referral_fee:
            break
    await ledger.publish(
        ev.REFERRAL_ACCEPTED,
        ev.ReferralAccepted(
            referral_id=referral,
            organisation_id=org,
            service_id="svc",
            pcn_id=pcn,
            accepted_at=datetime(2026, 7, 1, 8, tzinfo=timezone.utc),
        ),
    )
    await ledger.publish(
        ev.OUTCOME_RECORDED,
        ev.OutcomeRecorded(
            outcome_id="o-" + referral,
            referral_id=referral,
            organisation_id=org,
            pcn_id=pcn,
            status="completed",
            sessions_attended=1,
            recorded_at=datetime(2026, 7, 1, 16, tzinfo=timezone.utc),
        ),
    )
    await ledger.payments(pcn, org, 2)
    paid = await ledger.client.post(
        "/settlements",
        headers=ledger.finance(pcn),
        json={"organisation_id": org, "amount_pence": 5000, "paid_on": "2026-11-01", "reference": "FIRST"},
    )
    assert [a["payment_id"] for a in paid.json()["allocations"]] == [referral_fee]


@pytest.mark.parametrize("organisation_id", ["0", "org-never-registered"])
async def test_an_agreement_for_an_organisation_nobody_registered_is_refused(ledger, organisation_id: str) -> None:
    pcn = new_pcn()
    response = await ledger.client.post(
        "/agreements", headers=ledger.finance(pcn), json={"organisation_id": organisation_id, **AGREEMENT}
    )
    assert response.status_code == 422
    assert f"no organisation with id '{organisation_id}'" in response.json()["detail"]
    assert (await ledger.client.get("/agreements", headers=ledger.finance(pcn))).json()["items"] == []


async def test_organisations_are_learnt_from_registrations_and_services(ledger) -> None:
    pcn, registered, with_service = new_pcn(), new_org(), new_org()
    await ledger.agree(pcn, organisation_id=registered, **AGREEMENT)  # organisation.registered
    await ledger.publish(
        ev.SERVICE_UPDATED,
        ev.ServiceUpdated(
            service_id="svc-" + uuid.uuid4().hex[:8],
            organisation_id=with_service,
            name="Walk",
            status="active",
            capacity_available=3,
            safeguarding_policy_valid_until=None,
            accepting_referrals=True,
            updated_at=datetime.now(timezone.utc),
        ),
    )
    from .conftest import post_once_known

    answer = await post_once_known(
        ledger.client, "/agreements", ledger.finance(pcn), {"organisation_id": with_service, **AGREEMENT}
    )
    assert answer.status_code == 201, answer.text


async def test_a_settlement_for_an_unknown_organisation_is_refused_even_with_an_old_agreement(ledger) -> None:
    pcn, ghost = new_pcn(), "ghost-" + uuid.uuid4().hex[:6]
    engine = make_engine(ledger.database_url, pool_size=1)
    try:  # an agreement made before organisations were checked
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO agreements (id, pcn_id, organisation_id, per_referral_pence, per_outcome_pence, "
                    "outcome_statuses, block_grant_pence_per_period, period, days_after_period_end, starts_on, created_by) "
                    "VALUES (:id, :pcn, :org, 1000, 0, '[\"completed\"]', 0, 'monthly', 30, '2026-04-01', 'test')"
                ),
                {"id": str(uuid.uuid4()), "pcn": pcn, "org": ghost},
            )
    finally:
        await engine.dispose()
    response = await ledger.client.post(
        "/settlements",
        headers=ledger.finance(pcn),
        json={"organisation_id": ghost, "amount_pence": 100, "paid_on": "2026-06-01", "reference": "X"},
    )
    assert response.status_code == 422 and f"no organisation with id '{ghost}'" in response.json()["detail"]
    assert (await ledger.client.get("/settlements", headers=ledger.finance(pcn))).json()["items"] == []
