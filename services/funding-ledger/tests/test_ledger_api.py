"""The finance API on the real broker and database: agreements, caps, settlements, arrears,
statements, reconciliation, block grants. Refusals are checked to change nothing."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import date

import pytest

from socialrx_harness.testing import auth


def new_pcn() -> str:
    return "P" + uuid.uuid4().hex[:8].upper()


def new_org() -> str:
    return "org-" + uuid.uuid4().hex[:8]


async def _balance(ledger, pcn: str) -> dict:
    answer = (await ledger.client.get("/trial-balance", headers=ledger.finance(pcn))).json()
    assert answer["debits_pence"] == answer["credits_pence"]
    return answer


AGREEMENT = {"per_referral_pence": 1000, "period": "monthly", "days_after_period_end": 30, "starts_on": "2026-04-01"}


@pytest.mark.parametrize(
    ("change", "status", "says"),
    [
        ({"per_referral_pence": -1}, 422, "greater than or equal to 0"),
        ({"per_referral_pence": 10_000_000_000}, 422, "less than or equal to"),
        ({"per_referral_pence": 12.5}, 422, "integer"),
        ({"cap_pence_per_year": -100}, 422, "greater than or equal to 0"),
        ({"days_after_period_end": 400}, 422, "less than or equal to 365"),
        ({"ends_on": "2026-03-31"}, 422, "ends_on is before starts_on"),
        ({"starts_on": "0226-04-01"}, 422, "not a plausible date"),
        ({"per_referral_pence": 0}, 422, "must fund something"),
        ({"period": "weekly"}, 422, "monthly"),
        ({"outcome_statuses": ["finished"]}, 422, "outcome_statuses"),
        ({"organisation_id": "has space"}, 422, "organisation_id"),
        ({"surprise": 1}, 422, "surprise"),
    ],
)
async def test_bad_agreements_are_refused_and_change_nothing(ledger, change: dict, status: int, says: str) -> None:
    pcn, org = new_pcn(), new_org()
    response = await ledger.client.post(
        "/agreements", headers=ledger.finance(pcn), json={"organisation_id": org, **AGREEMENT, **change}
    )
    assert response.status_code == status, response.text
    assert says in response.text
    listed = (await ledger.client.get("/agreements", headers=ledger.finance(pcn))).json()
    assert listed["items"] == []


async def test_overlapping_agreement_refused_other_pcn_and_roles(ledger) -> None:
    pcn, org = new_pcn(), new_org()
    await ledger.agree(pcn, organisation_id=org, **AGREEMENT | {"ends_on": "2027-03-31"})
    overlap = await ledger.client.post(
        "/agreements",
        headers=ledger.finance(pcn),
        json={"organisation_id": org, **AGREEMENT, "starts_on": "2027-03-31"},
    )
    assert overlap.status_code == 409 and "overlaps agreement" in overlap.json()["detail"]
    await ledger.agree(pcn, organisation_id=org, **AGREEMENT | {"starts_on": "2027-04-01"})  # the day after: fine
    await ledger.agree(new_pcn(), organisation_id=org, **AGREEMENT)  # another PCN's own agreement
    charity = auth(ledger.jwt_secret, "charity", organisation_id=org)
    assert (
        await ledger.client.post("/agreements", headers=charity, json={"organisation_id": org, **AGREEMENT})
    ).status_code == 403
    assert (await ledger.client.post("/agreements", json={"organisation_id": org, **AGREEMENT})).status_code == 401
    assert len((await ledger.client.get("/agreements", headers=ledger.finance(pcn))).json()["items"]) == 2
    assert len((await ledger.client.get("/agreements", headers=charity)).json()["items"]) == 3
    other = auth(ledger.jwt_secret, "charity", organisation_id=new_org())
    assert (await ledger.client.get(f"/agreements?organisation_id={org}", headers=other)).status_code == 403


async def test_cap_reached_mid_period_owes_the_rest_and_reports_the_refusal(ledger) -> None:
    pcn, org = new_pcn(), new_org()
    agreement = await ledger.agree(
        pcn,
        organisation_id=org,
        per_referral_pence=5000,
        cap_pence_per_year=12000,
        period="quarterly",
        days_after_period_end=30,
        starts_on="2026-04-01",
    )
    for count, day in enumerate([date(2026, 4, 5), date(2026, 5, 6), date(2026, 6, 7), date(2026, 6, 20)], start=1):
        await ledger.accept(pcn, org, day)
        items = await ledger.payments(pcn, org, count)  # one at a time: the order the cap sees is known
    assert [(p["business_date"], p["amount_pence"], p["refused_over_cap_pence"]) for p in items] == [
        ("2026-04-05", 5000, 0),
        ("2026-05-06", 5000, 0),
        ("2026-06-07", 2000, 3000),
        ("2026-06-20", 0, 5000),
    ]
    cap = (
        await ledger.client.get(f"/agreements/{agreement['id']}/cap?on=2026-06-30", headers=ledger.finance(pcn))
    ).json()
    assert (cap["accrued_pence"], cap["refused_over_cap_pence"], cap["remaining_pence"]) == (12000, 8000, 0)
    await ledger.accept(pcn, org, date(2027, 4, 2))  # a new financial year: the cap starts again
    items = await ledger.payments(pcn, org, 5)
    assert items[-1]["amount_pence"] == 5000 and items[-1]["due_date"] == "2027-07-30"
    arrears = (await ledger.client.get("/arrears?as_of=2027-12-31", headers=ledger.finance(pcn))).json()
    assert arrears["total"]["owed_pence"] == 17000  # the refused amounts are never owed


async def _three_monthly_payments(ledger) -> tuple[str, str, list[dict]]:
    pcn, org = new_pcn(), new_org()
    await ledger.agree(pcn, organisation_id=org, **AGREEMENT)
    for day in (date(2026, 4, 10), date(2026, 6, 15), date(2026, 8, 31)):
        await ledger.accept(pcn, org, day)
    return pcn, org, await ledger.payments(pcn, org, 3)


def _buckets(figures: dict) -> tuple:
    return tuple(figures[k] for k in ("not_due", "days_1_30", "days_31_60", "days_61_90", "days_over_90"))


async def test_settlements_arrears_and_statement(ledger) -> None:
    pcn, org, items = await _three_monthly_payments(ledger)
    finance = ledger.finance(pcn)
    assert [p["due_date"] for p in items] == ["2026-05-30", "2026-07-30", "2026-09-30"]

    async def arrears(as_of: str) -> dict:
        answer = (await ledger.client.get(f"/arrears?as_of={as_of}", headers=finance)).json()
        assert answer["total"]["owed_pence"] == sum(_buckets(answer["total"]))
        return answer

    # By hand, at 2026-09-30: 123 days past 30 May, 62 past 30 July, the third due that very day.
    before = await arrears("2026-09-30")
    assert _buckets(before["total"]) == (1000, 0, 0, 1000, 1000)
    assert before["by_organisation"][0]["oldest_days_outstanding"] == 173  # 10 April to 30 September
    assert _buckets((await arrears("2026-05-30"))["total"]) == (1000, 0, 0, 0, 0)  # later work not yet done

    paid = await ledger.client.post(
        "/settlements",
        headers=finance,
        json={"organisation_id": org, "amount_pence": 1000, "paid_on": "2026-10-05", "reference": "BACS-1"},
    )
    assert paid.status_code == 201, paid.text
    assert paid.json()["allocations"] == [
        {"payment_id": items[0]["payment_id"], "amount_pence": 1000, "payment_amount_pence": 1000, "open_pence": 0}
    ]
    again = await ledger.client.post(
        "/settlements",
        headers=finance,
        json={"organisation_id": org, "amount_pence": 1000, "paid_on": "2026-10-05", "reference": "BACS-1"},
    )
    assert again.status_code == 200 and again.json()["settlement_id"] == paid.json()["settlement_id"]
    clash = await ledger.client.post(
        "/settlements",
        headers=finance,
        json={"organisation_id": org, "amount_pence": 999, "paid_on": "2026-10-05", "reference": "BACS-1"},
    )
    assert clash.status_code == 409

    # More than is owed: 2000 settles the rest, 500 is held as a credit; an Idempotency-Key repeats once.
    keyed = {**finance, "Idempotency-Key": "remit-" + uuid.uuid4().hex}
    body = {"organisation_id": org, "amount_pence": 2500, "paid_on": "2026-10-20", "reference": "BACS-2"}
    over = await ledger.client.post("/settlements", headers=keyed, json=body)
    assert over.status_code == 201, over.text
    assert (over.json()["allocated_pence"], over.json()["unallocated_pence"], over.json()["credit_held_pence"]) == (
        2000,
        500,
        500,
    )
    assert (await ledger.client.post("/settlements", headers=keyed, json=body)).status_code == 200
    assert len((await ledger.client.get("/settlements", headers=finance)).json()["items"]) == 2

    assert _buckets((await arrears("2026-09-30"))["total"]) == (1000, 0, 0, 1000, 1000)  # paid later
    at_5_oct = await arrears("2026-10-05")
    assert _buckets(at_5_oct["total"]) == (0, 1000, 0, 1000, 0)  # 5 and 67 days late
    settled = await arrears("2026-10-20")
    assert settled["total"]["owed_pence"] == 0 and settled["total"]["credit_held_pence"] == 500
    assert (await ledger.client.get(f"/payments?organisation_id={org}&status=open", headers=finance)).json()[
        "total"
    ] == 0
    balance = await _balance(ledger, pcn)
    assert balance["balanced"]

    charity = auth(ledger.jwt_secret, "charity", organisation_id=org)
    assert (await ledger.client.get("/arrears?as_of=2026-10-05", headers=charity)).json()["total"] == at_5_oct["total"]
    assert (await ledger.client.get(f"/arrears?organisation_id={new_org()}", headers=charity)).status_code == 403

    statement = (await ledger.client.get(f"/statements/{org}?from=2026-06-01&to=2026-10-31", headers=finance)).json()
    assert (
        statement["opening_balance_pence"],
        statement["charged_pence"],
        statement["paid_pence"],
        statement["closing_balance_pence"],
    ) == (1000, 2000, 3500, -500)
    as_csv = await ledger.client.get(f"/statements/{org}?from=2026-06-01&to=2026-10-31&format=csv", headers=charity)
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [r["type"] for r in rows] == [
        "opening_balance",
        "accrual",
        "accrual",
        "payment",
        "payment",
        "closing_balance",
    ]
    assert (rows[3]["date"], rows[3]["paid_pence"], rows[3]["paid_gbp"], rows[3]["reference"]) == (
        "2026-10-05",
        "1000",
        "10.00",
        "BACS-1",
    )
    assert (rows[-1]["balance_pence"], rows[-1]["balance_gbp"]) == ("-500", "-5.00")
    bad_range = await ledger.client.get(f"/statements/{org}?from=2026-11-01&to=2026-10-31", headers=finance)
    assert bad_range.status_code == 422

    # Paged: the same lines two at a time, each with the whole statement's running balance.
    whole = f"/statements/{org}?from=2026-06-01&to=2026-10-31"
    pages = [(await ledger.client.get(f"{whole}&per_page=2&page={n}", headers=charity)).json() for n in (1, 2, 3)]
    assert [(p["page"], p["total"], len(p["lines"])) for p in pages] == [(1, 4, 2), (2, 4, 2), (3, 4, 0)]
    assert pages[0]["lines"] + pages[1]["lines"] == statement["lines"]
    assert {p["closing_balance_pence"] for p in pages} == {-500}
    for query, says in (
        ("&page=2", "page needs per_page"),
        ("&per_page=2&format=csv", "the CSV is always the whole statement"),
        ("&per_page=0", "greater than or equal to 1"),
        ("&per_page=5001", "less than or equal to 5000"),
        ("&per_page=2&page=0", "greater than or equal to 1"),
    ):
        refused = await ledger.client.get(whole + query, headers=finance)
        assert refused.status_code == 422 and says in refused.text, (query, refused.text)


@pytest.mark.parametrize(
    ("change", "status", "says"),
    [
        ({"amount_pence": 0}, 422, "greater than or equal to 1"),
        ({"amount_pence": -5}, 422, "greater than or equal to 1"),
        ({"amount_pence": 10.5}, 422, "integer"),
        ({"paid_on": "2026-02-30"}, 422, "paid_on"),
        ({"reference": "  "}, 422, "reference"),
        ({"organisation_id": "nobody-we-fund"}, 422, "no funding agreement"),
        ({"allocations": [{"payment_id": "not-a-payment", "amount_pence": 100}]}, 422, "not an open payment"),
        ({"allocations": [{"payment_id": "FIRST", "amount_pence": 1001}]}, 422, "exceeds its open 1000"),
    ],
)
async def test_bad_settlements_are_refused_and_change_nothing(ledger, change: dict, status: int, says: str) -> None:
    pcn, org, items = await _three_monthly_payments(ledger)
    for allocation in change.get("allocations", []):
        if allocation["payment_id"] == "FIRST":
            allocation["payment_id"] = items[0]["payment_id"]
    before = await _balance(ledger, pcn)
    response = await ledger.client.post(
        "/settlements",
        headers=ledger.finance(pcn),
        json={"organisation_id": org, "amount_pence": 1500, "paid_on": "2026-10-01", "reference": "R-1", **change},
    )
    assert response.status_code == status, response.text
    assert says in response.text
    assert await _balance(ledger, pcn) == before
    assert (await ledger.client.get("/settlements", headers=ledger.finance(pcn))).json()["items"] == []
    assert [p["open_pence"] for p in await ledger.payments(pcn, org, 3)] == [1000, 1000, 1000]


async def test_given_allocations_are_used_as_given(ledger) -> None:
    pcn, org, items = await _three_monthly_payments(ledger)
    response = await ledger.client.post(
        "/settlements",
        headers=ledger.finance(pcn),
        json={
            "organisation_id": org,
            "amount_pence": 1000,
            "paid_on": "2026-10-01",
            "reference": "R-given",
            "allocations": [{"payment_id": items[2]["payment_id"], "amount_pence": 600}],
        },
    )
    assert response.status_code == 201, response.text
    assert response.json()["unallocated_pence"] == 400
    assert [p["open_pence"] for p in await ledger.payments(pcn, org, 3)] == [1000, 1000, 400]
    charity = auth(ledger.jwt_secret, "charity", organisation_id=org)
    assert (
        await ledger.client.post(
            "/settlements",
            headers=charity,
            json={"organisation_id": org, "amount_pence": 1, "paid_on": "2026-10-01", "reference": "x"},
        )
    ).status_code == 403


def _upload(text: str | bytes) -> dict:
    return {"file": ("remittance.csv", text.encode() if isinstance(text, str) else text, "text/csv")}


async def test_reconciliation_reports_every_kind_of_line_and_posts_only_when_asked(ledger) -> None:
    pcn, org, _items = await _three_monthly_payments(ledger)
    finance = ledger.finance(pcn)
    for reference in ("REC-1", "REC-2"):
        await ledger.client.post(
            "/settlements",
            headers=finance,
            json={"organisation_id": org, "amount_pence": 1000, "paid_on": "2026-10-01", "reference": reference},
        )
    remittance = "\n".join(
        [
            "paid_on,organisation_id,amount_pence,reference",
            f"2026-10-01,{org},1000,REC-1",  # 2 matched: recorded as it is
            f"2026-10-01,{org},900,REC-2",  # 3 part-matched: recorded with 1000
            f"2026-10-30,{org},600,NEW-1",  # 4 matched: 1000 still open
            f"2026-10-30,{org},800,NEW-2",  # 5 part-matched: only 400 left open
            "2026-10-30,org-unknown,100,NEW-3",  # 6 unmatched
            f"2026-10-31,{org},600,NEW-1",  # 7 duplicate of line 4
            f"2026-10-xx,{org},100,BAD-1",  # 8 malformed
            f"2026-10-31,{org},1.5,BAD-2",  # 9 malformed
        ]
    )
    before = await _balance(ledger, pcn)
    report = await ledger.client.post("/reconciliation", headers=finance, files=_upload(remittance))
    assert report.status_code == 200, report.text
    lines = report.json()["lines"]
    assert [(r["line"], r["reference"], r["status"]) for r in lines] == [
        (2, "REC-1", "matched"),
        (3, "REC-2", "part_matched"),
        (4, "NEW-1", "matched"),
        (5, "NEW-2", "part_matched"),
        (6, "NEW-3", "unmatched"),
        (7, "NEW-1", "duplicate"),
        (8, "BAD-1", "malformed"),
        (9, "BAD-2", "malformed"),
    ]
    assert report.json()["counts"] == {"matched": 2, "part_matched": 2, "unmatched": 1, "duplicate": 1, "malformed": 2}
    assert await _balance(ledger, pcn) == before  # a report changes nothing

    posted = await ledger.client.post("/reconciliation?post=true", headers=finance, files=_upload(remittance))
    assert {r["reference"] for r in posted.json()["lines"] if r.get("posted_settlement_id")} == {"NEW-1", "NEW-2"}
    after = await _balance(ledger, pcn)
    assert after["credits_pence"] == before["credits_pence"] + 1400
    assert (await ledger.client.get(f"/payments?organisation_id={org}&status=open", headers=finance)).json()[
        "total"
    ] == 0
    credit = (await ledger.client.get("/arrears?as_of=2026-12-31", headers=finance)).json()["total"][
        "credit_held_pence"
    ]
    assert credit == 400
    again = await ledger.client.post("/reconciliation?post=true", headers=finance, files=_upload(remittance))
    assert not any(r.get("posted_settlement_id") for r in again.json()["lines"])
    assert [r["status"] for r in again.json()["lines"]][:4] == ["matched", "part_matched", "matched", "matched"]
    assert await _balance(ledger, pcn) == after


@pytest.mark.parametrize(
    ("content", "status", "says"),
    [
        ("date,org,amount,ref\n2026-10-01,o,1,r", 422, "header"),
        ("", 422, "header"),
        (b"\xff\xfe\x00bad", 422, "UTF-8"),
    ],
)
async def test_unreadable_remittance_files_are_refused(ledger, content, status: int, says: str) -> None:
    response = await ledger.client.post("/reconciliation", headers=ledger.finance(new_pcn()), files=_upload(content))
    assert response.status_code == status and says in response.json()["detail"]


async def test_block_grants_accrue_once_per_period(ledger) -> None:
    pcn, org = new_pcn(), new_org()
    await ledger.agree(
        pcn,
        organisation_id=org,
        block_grant_pence_per_period=30000,
        period="quarterly",
        days_after_period_end=30,
        starts_on="2026-05-15",
        ends_on="2026-12-31",
    )
    first = (await ledger.client.post("/block-grants", headers=ledger.finance(pcn), json={"on": "2026-06-01"})).json()
    assert [(i["status"], i["period"], i["amount_pence"], i["due_date"]) for i in first["items"]] == [
        ("accrued", "2026/27-Q1", 30000, "2026-07-30")
    ]
    again = (await ledger.client.post("/block-grants", headers=ledger.finance(pcn), json={"on": "2026-04-20"})).json()
    assert again["items"][0]["status"] == "already_accrued"
    after_end = (
        await ledger.client.post("/block-grants", headers=ledger.finance(pcn), json={"on": "2027-01-05"})
    ).json()
    assert after_end["items"][0]["status"] == "not_in_force"
    assert len(await ledger.payments(pcn, org, 1)) == 1
    assert (
        await ledger.client.post("/block-grants", headers=ledger.finance(pcn), json={"on": "26-1-1"})
    ).status_code == 422
