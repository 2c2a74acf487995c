"""The report maths without a database: disclosure control (7 hidden, 8 shown, nothing given back) and the CSV form."""

from __future__ import annotations

from datetime import datetime, timezone

from socialrx_outcomes import domain, reports

AT = datetime(2026, 5, 1, tzinfo=timezone.utc)


def facts(n: int, **overrides) -> reports.Facts:
    values = dict(
        referral_id=f"r{n}",
        pcn_id="P1",
        link_worker_id="lw",
        organisation_id="o",
        service_id="s",
        status="accepted",
        decline_reason=None,
        referred_at=AT,
        created_at=AT,
        accepted_at=AT,
        age_band="18-24",
        postcode_district="LS6",
        accessibility_needs=[],
    )
    return reports.Facts(**{**values, **overrides})


def wemwbs_change(before: int, after: int) -> dict[str, domain.Change]:
    def sc(total: int) -> domain.Score:
        return domain.Score("WEMWBS", float(total), [])

    return {"WEMWBS": domain.change(sc(before), sc(after))}


def inclusion(group: list[reports.Facts]) -> dict:
    report = reports.build_inclusion_report(group, reports.Scope("P1", None, None, None))
    return next(r for r in report["items"] if r["dimension"] == "age_band")


def test_a_group_of_seven_is_hidden_and_a_group_of_eight_shown_rounded() -> None:
    seven = inclusion([facts(n) for n in range(7)])
    assert {v for k, v in seven.items() if k not in ("dimension", "group")} == {"*"}
    eight = inclusion([facts(n) for n in range(8)])
    assert eight["referrals_made"] == 10 and eight["accepted"] == 10  # 8, to the nearest 5


def test_a_mean_over_seven_people_is_hidden_and_over_eight_shown() -> None:
    group = [facts(n, changes=wemwbs_change(40, 44)) for n in range(7)] + [facts(20 + n) for n in range(3)]
    assert inclusion(group)["wemwbs_mean_change"] == "*"
    group.append(facts(10, changes=wemwbs_change(40, 40)))
    shown = inclusion(group)
    # 7 of 8 improved: the share would say 1 person did not, so it is hidden; the mean over 8 is shown.
    assert (
        shown["wemwbs_people_measured"],
        shown["wemwbs_mean_change"],
        shown["wemwbs_meaningful_improvement_share"],
    ) == (10, 3.5, "*")


def test_no_hidden_count_of_an_outcomes_report_is_given_back_by_its_total() -> None:
    # Org o1: 20 referrals, 3 declined (no capacity); org o2: 12 referrals, none declined.
    group = (
        [facts(n, organisation_id="o1") for n in range(17)]
        + [
            facts(100 + n, organisation_id="o1", status="declined", accepted_at=None, decline_reason="no_capacity")
            for n in range(3)
        ]
        + [facts(200 + n, organisation_id="o2") for n in range(12)]
    )
    report = reports.build_outcomes_report(group, reports.Scope("P1", None, None, None), ["organisation"])
    o1, o2 = report["items"]
    total = report["total"]
    assert o1["declined"] == "*" and o1["declined_no_capacity"] == "*"
    # o2's declines (0) or the total's (3) would give o1's 3 back: the total's is hidden too.
    assert total["declined"] == "*" or o2["declined"] == "*"
    assert (o1["referrals_made"], o2["referrals_made"], total["referrals_made"]) == (20, 10, 30)
    assert "1 to 7" in report["suppression"]
    raw = reports.build_outcomes_report(
        group, reports.Scope("P1", None, None, None), ["organisation"], disclosure_control=False
    )
    assert raw["total"]["declined"] == 3 and "suppression" not in raw


def test_csv_writes_none_as_blank_and_the_total_last() -> None:
    report = reports.build_outcomes_report(
        [facts(n) for n in range(10)], reports.Scope("P1", None, None, None), ["pcn"]
    )
    lines = reports.to_csv(report).splitlines()
    assert lines[0].startswith("pcn_id,wemwbs_people_measured,wemwbs_mean_change,")
    assert lines[1].startswith("P1,0,,") and lines[2].startswith("all,0,,")
    assert len(lines) == 3
