"""Insight endpoints on the real broker and database: scenarios built here, figures worked out here."""

from __future__ import annotations

import uuid
from datetime import date, datetime, time, timezone
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

from socialrx_harness.testing import auth
from socialrx_shared import events as ev


def new_pcn() -> str:
    return "P" + uuid.uuid4().hex[:8].upper()


def new_org() -> str:
    return "org-" + uuid.uuid4().hex[:8]


def _half_up(value: Fraction) -> int:
    return int((Decimal(value.numerator) / Decimal(value.denominator)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _interest(amount: int, due_on: date, as_of: date, bank_rate: str) -> int:
    """Day by day, from the day after the due date to as_of: amount x (rate + 8%) / 365."""
    days = (as_of - due_on).days
    return _half_up(Fraction(amount) * (Fraction(Decimal(bank_rate)) + 8) / 100 * days / 365)


async def _settle(ledger, pcn: str, org: str, payment: dict, paid_on: date) -> None:
    answer = await ledger.client.post(
        "/settlements",
        headers=ledger.finance(pcn),
        json={
            "organisation_id": org,
            "amount_pence": payment["amount_pence"],
            "paid_on": paid_on.isoformat(),
            "reference": "R-" + uuid.uuid4().hex[:8],
            "allocations": [{"payment_id": payment["payment_id"], "amount_pence": payment["amount_pence"]}],
        },
    )
    assert answer.status_code == 201, answer.text


async def _pcn_that_pays_early_on_the_day_10_and_45_days_late(ledger):
    """Org A (£10 a referral): paid 5 days early, on the day, 10 days late. Org B (£30): 45 days late,
    and one still open. Monthly periods, due 30 days after the month ends."""
    pcn, org_a, org_b = new_pcn(), new_org(), new_org()
    monthly = {"period": "monthly", "days_after_period_end": 30, "starts_on": "2026-04-01"}
    await ledger.agree(pcn, organisation_id=org_a, per_referral_pence=1000, **monthly)
    await ledger.agree(pcn, organisation_id=org_b, per_referral_pence=3000, per_outcome_pence=12000, **monthly)
    for day in (date(2026, 4, 10), date(2026, 5, 10), date(2026, 6, 10)):
        await ledger.accept(pcn, org_a, day)
    b_referrals = [await ledger.accept(pcn, org_b, day) for day in (date(2026, 7, 10), date(2026, 8, 10))]
    a = await ledger.payments(pcn, org_a, 3)
    b = await ledger.payments(pcn, org_b, 2)
    assert [p["due_date"] for p in a + b] == ["2026-05-30", "2026-06-30", "2026-07-30", "2026-08-30", "2026-09-30"]
    await _settle(ledger, pcn, org_a, a[0], date(2026, 5, 25))
    await _settle(ledger, pcn, org_a, a[1], date(2026, 6, 30))
    await _settle(ledger, pcn, org_a, a[2], date(2026, 8, 9))
    await _settle(ledger, pcn, org_b, b[0], date(2026, 10, 14))
    return pcn, org_a, org_b, b_referrals


async def test_prompt_payment_by_pcn_and_organisation_and_the_public_summary(ledger) -> None:
    pcn, org_a, org_b, _ = await _pcn_that_pays_early_on_the_day_10_and_45_days_late(ledger)
    window = "from=2026-05-01&to=2026-09-30"
    answer = await ledger.client.get(f"/reports/prompt-payment?{window}", headers=ledger.finance(pcn))
    assert answer.status_code == 200, answer.text
    report = answer.json()
    [by_pcn] = report["by_pcn"]
    assert by_pcn["pcn_id"] == pcn and report["total"] == {k: v for k, v in by_pcn.items() if k != "pcn_id"}
    # By hand: 5 payments, £90; on time: 2 (£20); within 30 days: 1 (£10); later: 1 (£30); open: 1 (£30).
    assert (by_pcn["payments_due"], by_pcn["value_due_pence"]) == (5, 9000)
    assert [(by_pcn[f"{k}_count"], by_pcn[f"{k}_pence"]) for k in ("on_time", "within_30_days", "later", "open")] == [
        (2, 2000),
        (1, 1000),
        (1, 3000),
        (1, 3000),
    ]
    assert (by_pcn["open_overdue_count"], by_pcn["open_overdue_pence"]) == (1, 3000)
    assert by_pcn["on_time_share_by_number_percent"] == 40.0  # 2 of 5
    assert by_pcn["on_time_share_by_value_percent"] == 22.2  # 2000 of 9000
    assert by_pcn["within_30_days_share_by_number_percent"] == 60.0
    assert by_pcn["within_30_days_share_by_value_percent"] == 33.3  # 3000 of 9000
    assert (by_pcn["mean_days_late"], by_pcn["median_days_late"]) == (13.8, 5.0)  # 0, 0, 10, 45
    orgs = {row["organisation_id"]: row for row in report["by_organisation"]}
    assert (orgs[org_a]["payments_due"], orgs[org_a]["on_time_count"], orgs[org_a]["mean_days_late"]) == (3, 2, 3.3)
    assert (orgs[org_b]["later_count"], orgs[org_b]["open_count"], orgs[org_b]["median_days_late"]) == (1, 1, 45.0)

    # A charity sees the same figures for the PCN that owes it, its own payments only.
    charity_a = auth(ledger.jwt_secret, "charity", organisation_id=org_a)
    mine = (await ledger.client.get(f"/reports/prompt-payment?{window}", headers=charity_a)).json()
    assert [r["organisation_id"] for r in mine["by_organisation"]] == [org_a]
    assert mine["by_pcn"][0]["payments_due"] == 3 and mine["by_organisation"][0] == orgs[org_a]
    # An admin may ask for one PCN; finance of another PCN may not.
    admin = auth(ledger.jwt_secret, "admin")
    assert (await ledger.client.get(f"/reports/prompt-payment?{window}&pcn_id={pcn}", headers=admin)).json()[
        "total"
    ] == report["total"]
    other = await ledger.client.get(f"/reports/prompt-payment?{window}&pcn_id={pcn}", headers=ledger.finance(new_pcn()))
    assert other.status_code == 403 and pcn not in other.text
    backwards = await ledger.client.get("/reports/prompt-payment?from=2026-10-01&to=2026-09-30", headers=admin)
    assert backwards.status_code == 422 and "after" in backwards.json()["detail"]

    public = await ledger.client.get(f"/public/prompt-payment?{window}")
    assert public.status_code == 200
    [summary] = [row for row in public.json()["by_pcn"] if row["pcn_id"] == pcn]
    assert (summary["payments_due"], summary["on_time_share_by_value_percent"], summary["later_pence"]) == (
        5,
        22.2,
        3000,
    )
    assert org_a not in public.text and org_b not in public.text and "organisation" not in public.text
    assert "mean_days_late" not in summary


async def test_late_payment_interest_rates_either_side_of_the_reference_day_and_unknown_rates(ledger) -> None:
    pcn, org = new_pcn(), new_org()
    # £1,000 a referral (the £70 band) and a block grant, which the Act leaves out.
    await ledger.agree(
        pcn,
        organisation_id=org,
        per_referral_pence=100_000,
        block_grant_pence_per_period=50_000,
        period="monthly",
        days_after_period_end=30,
        starts_on="2025-04-01",
    )
    await ledger.accept(pcn, org, date(2025, 11, 10))  # due 30 Dec 2025: interest from 31 Dec, 30 June's rate
    await ledger.accept(pcn, org, date(2025, 12, 10))  # due 30 Jan 2026: interest from 31 Jan, 31 December's rate
    grant = await ledger.client.post("/block-grants", headers=ledger.finance(pcn), json={"on": "2025-11-15"})
    assert grant.status_code == 200, grant.text
    items = await ledger.payments(pcn, org, 3)
    charity = auth(ledger.jwt_secret, "charity", organisation_id=org)

    answer = await ledger.client.get(f"/late-payment/{org}?as_of=2026-03-01", headers=charity)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    by_due = {i["due_date"]: i for i in body["items"]}
    december, january = by_due["2025-12-30"], by_due["2026-01-30"]
    assert (december["reference_date"], december["bank_rate_percent"], december["statutory_rate_percent"]) == (
        "2025-06-30",
        "4.25",
        "12.25",
    )
    assert (january["reference_date"], january["bank_rate_percent"]) == ("2025-12-31", "3.75")
    assert december["interest_pence"] == _interest(100_000, date(2025, 12, 30), date(2026, 3, 1), "4.25") == 2047
    assert january["interest_pence"] == _interest(100_000, date(2026, 1, 30), date(2026, 3, 1), "3.75") == 966
    assert december["compensation_pence"] == january["compensation_pence"] == 7000
    assert (body["interest_pence"], body["compensation_pence"], body["claimable_pence"]) == (3013, 14000, 17013)
    assert [e["reason"].startswith("a block grant is a grant") for e in body["excluded"]] == [True]
    # Much later the December debt still keeps its first rate (12.25%), though newer debts take 11.75%.
    later = (await ledger.client.get(f"/late-payment/{org}?as_of=2026-06-30", headers=charity)).json()
    assert {i["due_date"]: i["bank_rate_percent"] for i in later["items"]}["2025-12-30"] == "4.25"

    # A part payment: interest only on what was unpaid each day.
    [first_fee] = [p for p in items if p["basis"] == "referral_accepted" and p["due_date"] == "2025-12-30"]
    await _settle(ledger, pcn, org, {**first_fee, "amount_pence": 60_000}, date(2026, 1, 9))
    part = (await ledger.client.get(f"/late-payment/{org}?as_of=2026-03-01", headers=charity)).json()
    december = {i["due_date"]: i for i in part["items"]}["2025-12-30"]
    # 10 days (31 Dec to 9 Jan) on £1,000, then 51 days on £400, at 12.25%.
    assert (
        december["interest_pence"]
        == _half_up(Fraction(100_000 * 10 + 40_000 * 51) * Fraction(1225, 10000) / 365)
        == 1020
    )
    assert december["unpaid_pence"] == 40_000 and december["compensation_pence"] == 7000  # the debt's band

    # No rate for the half-year starting 1 July 2026 yet: unknown, not zero, until an admin adds one.
    await ledger.accept(pcn, org, date(2026, 6, 10))  # due 30 July 2026
    await ledger.payments(pcn, org, 4)
    unknown = (await ledger.client.get(f"/late-payment/{org}?as_of=2026-08-29", headers=charity)).json()
    july = {i["due_date"]: i for i in unknown["items"]}["2026-07-30"]
    assert july["interest_pence"] is None and "an admin must add the reference rate" in july["interest_status"]
    assert unknown["interest_unknown_count"] == 1
    admin = auth(ledger.jwt_secret, "admin")
    for bad, says in (
        ({"half_year_starting": "2026-07-02", "rate_percent": "4.00"}, "1 January or 1 July"),
        ({"half_year_starting": "2026-07-01", "rate_percent": "-1"}, "rate_percent"),
        ({"half_year_starting": "2026-07-01", "rate_percent": "4.001"}, "rate_percent"),
    ):
        refused = await ledger.client.post("/reference-rates", headers=admin, json=bad)
        assert refused.status_code == 422 and says in refused.text, refused.text
    assert (
        await ledger.client.post(
            "/reference-rates", headers=charity, json={"half_year_starting": "2026-07-01", "rate_percent": "4.00"}
        )
    ).status_code == 403
    added = await ledger.client.post(
        "/reference-rates", headers=admin, json={"half_year_starting": "2026-07-01", "rate_percent": "4.00"}
    )
    assert added.status_code in (200, 201), added.text
    clash = await ledger.client.post(
        "/reference-rates", headers=admin, json={"half_year_starting": "2026-07-01", "rate_percent": "4.50"}
    )
    assert clash.status_code == 409 and "fixed once known" in clash.json()["detail"]
    known = (await ledger.client.get(f"/late-payment/{org}?as_of=2026-08-29", headers=charity)).json()
    july = {i["due_date"]: i for i in known["items"]}["2026-07-30"]
    assert july["interest_pence"] == _interest(100_000, date(2026, 7, 30), date(2026, 8, 29), "4.00")
    rates = (await ledger.client.get("/reference-rates")).json()["items"]
    assert {"half_year_starting": "2024-01-01", "rate_percent": "5.25"}.items() <= next(
        r for r in rates if r["half_year_starting"] == "2024-01-01"
    ).items()

    # Refusals: another charity, finance of another PCN sees nothing of it.
    stranger = auth(ledger.jwt_secret, "charity", organisation_id=new_org())
    refused = await ledger.client.get(f"/late-payment/{org}", headers=stranger)
    assert refused.status_code == 403 and org not in refused.text
    assert (await ledger.client.get(f"/late-payment/{org}?as_of=2026-03-01", headers=ledger.finance(new_pcn()))).json()[
        "items"
    ] == []


async def test_forecast_moves_open_payments_by_median_lateness_and_adds_likely_outcome_fees(ledger) -> None:
    pcn, _org_a, org_b, (r4, _r5) = await _pcn_that_pays_early_on_the_day_10_and_45_days_late(ledger)
    # r4 went on to a qualifying outcome (its £120 fee falls due 30 November); r5 is still waiting.
    await ledger.publish(
        ev.OUTCOME_RECORDED,
        ev.OutcomeRecorded(
            outcome_id="o-" + r4,
            referral_id=r4,
            organisation_id=org_b,
            pcn_id=pcn,
            status="completed",
            sessions_attended=6,
            recorded_at=datetime.combine(date(2026, 10, 15), time(10), timezone.utc),
        ),
    )
    await ledger.payments(pcn, org_b, 3)
    charity = auth(ledger.jwt_secret, "charity", organisation_id=org_b)
    answer = await ledger.client.get(f"/forecast/{org_b}?weeks=8&as_of=2026-10-20", headers=charity)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    # The PCN's lateness so far: 0, 0, 10, 45 days -> median 5.
    assert body["median_days_late_by_pcn"] == {pcn: 5} and body["outcome_share_percent"] == 50.0
    lines = [
        (w["week"], line["kind"], line["expected_on"], line["amount_pence"])
        for w in body["by_week"]
        for line in w["lines"]
    ]
    assert sorted(lines) == sorted(
        [
            (1, "open_payment_moved_by_pcn_median_lateness", "2026-10-05", 3000),  # due 30 Sept, overdue: week 1
            (7, "open_payment_moved_by_pcn_median_lateness", "2026-12-05", 12000),  # the outcome fee due 30 Nov
            (7, "likely_outcome_fee", "2026-12-05", 6000),  # £120 x 1 waiting x 1 of 2 accepted earned it
        ]
    )
    assert body["expected_pence"] == 21000 and body["beyond_horizon_pence"] == 0
    assert len(body["by_week"]) == 8 and body["by_week"][6]["starts_on"] == "2026-12-01"

    # A PCN with no history yet: open payments at their due date.
    fresh_pcn, fresh_org = new_pcn(), new_org()
    await ledger.agree(
        fresh_pcn,
        organisation_id=fresh_org,
        per_referral_pence=2500,
        period="monthly",
        days_after_period_end=30,
        starts_on="2026-04-01",
    )
    await ledger.accept(fresh_pcn, fresh_org, date(2026, 10, 5))
    await ledger.payments(fresh_pcn, fresh_org, 1)
    fresh = (
        await ledger.client.get(f"/forecast/{fresh_org}?weeks=26&as_of=2026-10-20", headers=ledger.finance(fresh_pcn))
    ).json()
    [line] = [line for w in fresh["by_week"] for line in w["lines"]]
    assert (line["kind"], line["expected_on"], line["amount_pence"]) == ("open_payment_at_due_date", "2026-11-30", 2500)

    # Refusals: another organisation's forecast, finance of another PCN sees none of this one's money.
    other = await ledger.client.get(
        f"/forecast/{org_b}", headers=auth(ledger.jwt_secret, "charity", organisation_id=new_org())
    )
    assert other.status_code == 403 and org_b not in other.text
    assert (await ledger.client.get(f"/forecast/{org_b}?as_of=2026-10-20", headers=ledger.finance(new_pcn()))).json()[
        "expected_pence"
    ] == 0
    for bad in ("weeks=0", "weeks=105", "weeks=many", "as_of=2026-02-30"):
        assert (await ledger.client.get(f"/forecast/{org_b}?{bad}", headers=charity)).status_code == 422
    assert (await ledger.client.get(f"/forecast/{org_b}", headers=auth(ledger.jwt_secret, "admin"))).status_code == 403
