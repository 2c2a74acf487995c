"""Reports over a generated population, sent as events through the real broker and recorded through the
API into the real database, checked against figures worked out by hand.

Twelve referrals are far too few to publish (disclosure control hides 1-7 and rounds to 5), so the
maths is checked on the exact figures read from the service (`raw_report`), and what the HTTP API
serves is checked separately: the same report under the disclosure rule."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import date, datetime, timedelta, timezone

import pytest

from socialrx_harness.testing import wait_for
from socialrx_outcomes import reports
from socialrx_shared import disclosure

MAY = datetime(2026, 5, 4, 9, tzinfo=timezone.utc)
JUNE = datetime(2026, 6, 8, 9, tzinfo=timezone.utc)
ONS4_ITEMS = ("life_satisfaction", "worthwhile", "happy_yesterday", "anxious_yesterday")


class Population:
    """Twelve referrals in one PCN. A: r1-r8 (svc-a), B: r9-r12 (svc-b).

    r1-r6 made in May by lw-1 and accepted after 1,2,3,4,1,2 days; r7 (A, no_capacity) and r8 (A,
    person_declined) declined; r9, r10 (B) accepted after 3 and 6 days; r11 (B, no_capacity)
    declined; r12 (B) not yet decided. r7-r12 made in June by lw-2.
    """

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.pcn = "P" + tag.upper()
        self.org_a, self.org_b = f"org-a-{tag}", f"org-b-{tag}"
        self.r = {n: f"r{n}-{tag}" for n in range(1, 13)}

    def org(self, n: int) -> str:
        return self.org_a if n <= 8 else self.org_b

    def events(self, outcomes) -> list:
        acceptance_days = {1: 1, 2: 2, 3: 3, 4: 4, 5: 1, 6: 2, 9: 3, 10: 6}
        declines = {7: "no_capacity", 8: "person_declined", 11: "no_capacity"}
        sent = []
        for n in range(1, 13):
            made = MAY if n <= 6 else JUNE
            common = {"pcn_id": self.pcn, "organisation_id": self.org(n), "service_id": "svc-a" if n <= 8 else "svc-b"}
            sent.append(
                outcomes.created(
                    self.r[n],
                    at=made,
                    link_worker_id="lw-1" if n <= 6 else "lw-2",
                    age_band="25-34" if n <= 6 else ("65-74" if n <= 11 else "85+"),
                    postcode_district="LS6" if n <= 10 else "LS7",
                    accessibility_needs=["wheelchair"] if n <= 5 else (["bsl", "wheelchair"] if n == 6 else []),
                    **common,
                )
            )
            if n in acceptance_days:
                sent.append(outcomes.accepted(self.r[n], at=made + timedelta(days=acceptance_days[n]), **common))
            if n in declines:
                sent.append(outcomes.declined(self.r[n], at=made + timedelta(days=1), reason=declines[n], **common))
        # Decisions first for half of them: the view must not depend on arrival order.
        return sent[1::2] + sent[0::2]

    def outcomes_to_record(self, o) -> list[tuple[int, dict]]:
        def w(phase, total):
            return {"instrument": "WEMWBS", "phase": phase, "answers": o.answers("WEMWBS", total)}

        def s(phase, raw):
            return {"instrument": "SWEMWBS", "phase": phase, "answers": o.answers("SWEMWBS", raw)}

        def ons(phase, items):
            return {"instrument": "ONS4", "phase": phase, "answers": items}

        def rec(status, sessions, *measures):
            return {"status": status, "sessions_attended": sessions, "measures": list(measures)}

        return [
            (1, rec("engaged", 1, w("baseline", 40), s("baseline", 20), ons("baseline", [5, 5, 5, 6]))),
            (1, rec("completed", 6, w("follow_up", 43), s("follow_up", 23), ons("follow_up", [7, 6, 5, 3]))),
            (2, rec("engaged", 1, w("baseline", 40))),
            (2, rec("engaged", 3, w("follow_up", 42))),
            (3, rec("engaged", 1, w("baseline", 50), s("baseline", 20))),
            (3, rec("disengaged", 2, w("follow_up", 45), s("follow_up", 24))),
            (4, rec("engaged", 1, w("baseline", 30), s("baseline", 21))),
            (4, rec("engaged", 4, s("follow_up", 26))),
            (6, rec("completed", 8)),
            (9, rec("engaged", 1, w("baseline", 30))),
            (9, rec("completed", 5, w("follow_up", 40))),
            (10, rec("engaged", 1, ons("baseline", [3, 3, 3, 8]))),
            (10, rec("engaged", 2, ons("follow_up", [3, 4, 2, 9]))),
        ]


def ons4(people, life, life_share, worth, worth_share, happy, happy_share, anxious, anxious_share) -> dict:
    figures = {"ons4_people_measured": people}
    for item, mean, share in zip(
        ONS4_ITEMS, (life, worth, happy, anxious), (life_share, worth_share, happy_share, anxious_share), strict=False
    ):
        figures[f"ons4_{item}_mean_change"] = mean
        figures[f"ons4_{item}_improved_share"] = share
    return figures


def declined(**reasons: int) -> dict:
    every = ("no_capacity", "not_eligible", "unable_to_contact", "person_declined", "no_response", "other")
    return {f"declined_{r}": reasons.get(r, 0) for r in every}


# Worked out by hand from the population above.
TOTAL = {
    "wemwbs_people_measured": 4,
    "wemwbs_mean_change": 2.5,
    "wemwbs_meaningful_improvement_share": 0.5,  # +3 +2 -5 +10
    "swemwbs_people_measured": 3,
    "swemwbs_mean_change": 3.02,  # +2.14 +2.95 +3.96 metric points
    "swemwbs_meaningful_improvement_share": 0.333,
    **ons4(2, 1.0, 0.5, 1.0, 1.0, -0.5, 0.0, -1.0, 0.5),  # r1 [+2 +1 0 -3], r10 [0 +1 -1 +1]
    "engaged": 3,
    "completed": 3,
    "disengaged": 1,
    "referrals_made": 12,
    "accepted": 8,
    "declined": 3,
    **declined(no_capacity=2, person_declined=1),
    "days_to_acceptance_mean": 2.75,
    "days_to_acceptance_median": 2.5,
}
ORG_A = {
    "wemwbs_people_measured": 3,
    "wemwbs_mean_change": 0.0,
    "wemwbs_meaningful_improvement_share": 0.333,
    "swemwbs_people_measured": 3,
    "swemwbs_mean_change": 3.02,
    "swemwbs_meaningful_improvement_share": 0.333,
    **ons4(1, 2.0, 1.0, 1.0, 1.0, 0.0, 0.0, -3.0, 1.0),
    "engaged": 2,
    "completed": 2,
    "disengaged": 1,
    "referrals_made": 8,
    "accepted": 6,
    "declined": 2,
    **declined(no_capacity=1, person_declined=1),
    "days_to_acceptance_mean": 2.17,
    "days_to_acceptance_median": 2.0,
}
ORG_B = {
    "wemwbs_people_measured": 1,
    "wemwbs_mean_change": 10.0,
    "wemwbs_meaningful_improvement_share": 1.0,
    "swemwbs_people_measured": 0,
    "swemwbs_mean_change": None,
    "swemwbs_meaningful_improvement_share": None,
    **ons4(1, 0.0, 0.0, 1.0, 1.0, -1.0, 0.0, 1.0, 0.0),  # anxiety up a point: not an improvement
    "engaged": 1,
    "completed": 1,
    "disengaged": 0,
    "referrals_made": 4,
    "accepted": 2,
    "declined": 1,
    **declined(no_capacity=1),
    "days_to_acceptance_mean": 4.5,
    "days_to_acceptance_median": 4.5,
}


@pytest.fixture(scope="module")
async def population(outcomes) -> Population:
    people = Population()
    await outcomes.publish(*people.events(outcomes))

    async def all_arrived():
        report = await outcomes.raw_report(pcn_id=people.pcn, group_by="link_worker")
        arrived = (report["total"]["referrals_made"], report["total"]["accepted"], report["total"]["declined"])
        return arrived == (12, 8, 3) and all(i["link_worker_id"] != "unknown" for i in report["items"])

    await wait_for(all_arrived, timeout_s=60, what="the population's referral events")

    for n, body in people.outcomes_to_record(outcomes):
        who = outcomes.link_worker(people.pcn) if n == 10 else outcomes.charity(people.org(n))
        answer = await outcomes.client.post(f"/referrals/{people.r[n]}/outcomes", headers=who, json=body)
        assert answer.status_code == 201, answer.text
    return people


async def _report(outcomes, headers, path="/reports/outcomes", **params) -> dict:
    answer = await outcomes.client.get(path, headers=headers, params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _figures(row: dict) -> dict:
    return {k: row[k] for k in TOTAL}


async def test_outcomes_report_matches_the_hand_computed_figures(outcomes, population) -> None:
    by_org = await outcomes.raw_report(pcn_id=population.pcn, group_by="organisation")
    assert _figures(by_org["total"]) == TOTAL
    rows = {r["organisation_id"]: r for r in by_org["items"]}
    assert set(rows) == {population.org_a, population.org_b}
    assert _figures(rows[population.org_a]) == ORG_A
    assert _figures(rows[population.org_b]) == ORG_B


async def test_the_api_serves_the_report_under_disclosure_control(outcomes, population) -> None:
    served = await _report(outcomes, outcomes.finance(population.pcn), group_by="organisation")
    raw = await outcomes.raw_report(pcn_id=population.pcn, group_by="organisation")
    assert "1 to 7" in served["suppression"]
    rows = {r["organisation_id"]: r for r in served["items"]}
    # B made 4 referrals: hidden whole. A made 8 (shown as 10), the total 12 (10): then 12 - 8 would
    # give B's 4 back, so one of them is hidden too.
    assert {v for k, v in rows[population.org_b].items() if k != "organisation_id"} == {"*"}
    for column in reports.COUNT_COLUMNS:
        cells = [rows[population.org_a][column], rows[population.org_b][column], served["total"][column]]
        assert sum(1 for cell in cells if cell == "*") != 1, (column, cells)
        exact = [r[column] for r in raw["items"]] + [raw["total"][column]]
        for cell, value in zip(cells, exact, strict=False):
            assert cell == "*" or (cell == disclosure.rounded(value) and not 1 <= value <= 7), (column, cells, exact)
    # Means over fewer than 8 people are never served.
    assert served["total"]["wemwbs_mean_change"] == "*" and served["total"]["days_to_acceptance_mean"] == 2.75


async def test_outcomes_lead_and_the_referral_count_is_one_column_among_them(outcomes, population) -> None:
    report = await _report(outcomes, outcomes.admin(), pcn_id=population.pcn)
    columns = report["columns"]
    assert columns[0] == "pcn_id" and columns[1].startswith("wemwbs_")
    assert columns.index("referrals_made") > max(
        columns.index(c) for c in columns if c.startswith(("wemwbs", "swemwbs", "ons4"))
    )
    assert columns.index("referrals_made") > columns.index("completed")


async def test_grouping_by_link_worker_and_period_and_a_date_range(outcomes, population) -> None:
    pcn = population.pcn
    by_worker = await outcomes.raw_report(pcn_id=pcn, group_by="link_worker,period")
    assert [(r["link_worker_id"], r["period"], r["referrals_made"], r["accepted"]) for r in by_worker["items"]] == [
        ("lw-1", "2026-05", 6, 6),
        ("lw-2", "2026-06", 6, 2),
    ]
    june = await outcomes.raw_report(pcn_id=pcn, from_=date(2026, 6, 1), to=date(2026, 6, 30))
    assert (june["total"]["referrals_made"], june["total"]["accepted"], june["total"]["declined"]) == (6, 2, 3)
    assert june["total"]["wemwbs_mean_change"] == 10.0  # r9 only
    may_only = await outcomes.raw_report(pcn_id=pcn, from_=date(2026, 5, 4), to=date(2026, 5, 4))
    assert may_only["total"]["referrals_made"] == 6
    served = await _report(outcomes, outcomes.link_worker(pcn), **{"from": "2026-05-04", "to": "2026-05-04"})
    assert served["total"]["referrals_made"] == "*"  # six people: too few to publish
    by_service = await outcomes.raw_report(pcn_id=pcn, group_by="service")
    assert {r["service_id"]: r["referrals_made"] for r in by_service["items"]} == {"svc-a": 8, "svc-b": 4}


def _csv_rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def _as_csv(value) -> str:
    return "" if value is None else str(value)


async def test_csv_and_json_agree(outcomes, population) -> None:
    headers = outcomes.finance(population.pcn)
    for path, params in (("/reports/outcomes", {"group_by": "organisation,period"}), ("/reports/inclusion", {})):
        report = await _report(outcomes, headers, path, **params)
        answer = await outcomes.client.get(path, headers=headers, params={**params, "format": "csv"})
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
        rows = _csv_rows(answer.text)
        assert list(rows[0]) == report["columns"]
        expected = report["items"] + ([report["total"]] if "total" in report else [])
        assert rows == [{c: _as_csv(row[c]) for c in report["columns"]} for row in expected]


async def test_inclusion_report_breaks_down_and_suppresses_small_groups(outcomes, population) -> None:
    served = await _report(outcomes, outcomes.finance(population.pcn), "/reports/inclusion")
    served_rows = {(r["dimension"], r["group"]): r for r in served["items"]}
    # Served: every group of fewer than 8 referrals hidden whole; LS6's 10 shown; LS6 = 12 - LS7 would
    # give LS7's 2 back from the outcomes report's total, so LS6's referral count is hidden too.
    for key, row in served_rows.items():
        if key != ("postcode_district", "LS6"):
            assert {v for k, v in row.items() if k not in ("dimension", "group")} == {"*"}, key
    assert served_rows[("postcode_district", "LS6")]["referrals_made"] == "*"
    assert served_rows[("postcode_district", "LS6")]["wemwbs_mean_change"] == "*"  # four people measured

    report = await outcomes.raw_report("inclusion", pcn_id=population.pcn)
    rows = {(r["dimension"], r["group"]): r for r in report["items"]}
    assert set(rows) == {
        ("age_band", "25-34"),
        ("age_band", "65-74"),
        ("age_band", "85+"),
        ("postcode_district", "LS6"),
        ("postcode_district", "LS7"),
        ("accessibility_needs", "bsl"),
        ("accessibility_needs", "none"),
        ("accessibility_needs", "wheelchair"),
    }
    older = rows[("age_band", "65-74")]
    assert (older["referrals_made"], older["accepted"], older["declined"], older["declined_no_capacity"]) == (
        5,
        2,
        3,
        2,
    )
    assert older["days_to_acceptance_mean"] == 4.5
    assert older["wemwbs_people_measured"] == 1 and older["wemwbs_mean_change"] == 10.0
    assert older["swemwbs_people_measured"] == 0 and older["swemwbs_mean_change"] is None

    wheelchair = rows[("accessibility_needs", "wheelchair")]  # r1-r6: r6 also counts under bsl
    assert (wheelchair["referrals_made"], wheelchair["accepted"], wheelchair["completed"]) == (6, 6, 2)
    assert wheelchair["days_to_acceptance_mean"] == 2.17
    assert rows[("accessibility_needs", "none")]["referrals_made"] == 6
    assert rows[("postcode_district", "LS6")]["referrals_made"] == 10


async def test_who_may_read_which_report(outcomes, population) -> None:
    client = outcomes.client
    other_pcn = await client.get(
        "/reports/outcomes", headers=outcomes.finance("Q00001"), params={"pcn_id": population.pcn}
    )
    assert other_pcn.status_code == 403 and "own PCN" in other_pcn.json()["detail"]
    own_only = await _report(outcomes, outcomes.link_worker("Q00001"))
    assert own_only["items"] == [] and own_only["total"]["referrals_made"] == 0

    charity_b = await _report(outcomes, outcomes.charity(population.org_b), pcn_id=population.pcn)
    assert charity_b["total"]["referrals_made"] == "*" and charity_b["scope"]["organisation_id"] == population.org_b
    assert (await outcomes.raw_report(pcn_id=population.pcn, organisation_id=population.org_b))["total"][
        "referrals_made"
    ] == 4
    not_theirs = await client.get(
        "/reports/inclusion", headers=outcomes.charity(population.org_b), params={"organisation_id": population.org_a}
    )
    assert not_theirs.status_code == 403

    for params, says in (
        ({"group_by": "practice"}, "group_by"),
        ({"group_by": "pcn,pcn"}, "group_by"),
        ({"from": "2026-07-01", "to": "2026-06-01"}, "after"),
        ({"format": "xml"}, "format"),
        ({"from": "june"}, "from"),
    ):
        refused = await client.get("/reports/outcomes", headers=outcomes.admin(), params=params)
        assert refused.status_code == 422 and says in refused.text, (params, refused.text)
    assert (await client.get("/reports/outcomes")).status_code == 401
