"""The report maths without a database: the suppression edge (4 hidden, 5 shown) and the CSV form."""

from __future__ import annotations

from datetime import datetime, timezone

from socialrx_outcomes import domain, reports

AT = datetime(2026, 5, 1, tzinfo=timezone.utc)


def facts(n: int, **overrides) -> reports.Facts:
    values = dict(referral_id=f"r{n}", pcn_id="P1", link_worker_id="lw", organisation_id="o", service_id="s",
                  status="accepted", decline_reason=None, referred_at=AT, created_at=AT, accepted_at=AT,
                  age_band="18-24", postcode_district="LS6", accessibility_needs=[])
    return reports.Facts(**{**values, **overrides})


def wemwbs_change(before: int, after: int) -> dict[str, domain.Change]:
    def sc(total: int) -> domain.Score:
        return domain.Score("WEMWBS", float(total), [])
    return {"WEMWBS": domain.change(sc(before), sc(after))}


def inclusion(group: list[reports.Facts]) -> dict:
    report = reports.build_inclusion_report(group, reports.Scope("P1", None, None, None))
    return next(r for r in report["items"] if r["dimension"] == "age_band")


def test_a_group_of_four_is_hidden_and_a_group_of_five_shown() -> None:
    four = inclusion([facts(n) for n in range(4)])
    assert {v for k, v in four.items() if k not in ("dimension", "group")} == {"<5"}
    five = inclusion([facts(n) for n in range(5)])
    assert five["referrals_made"] == 5 and five["accepted"] == 5


def test_a_mean_over_four_people_is_hidden_and_over_five_shown() -> None:
    group = [facts(n, changes=wemwbs_change(40, 44)) for n in range(4)] + [facts(9)]
    assert inclusion(group)["wemwbs_mean_change"] == "<5"
    group.append(facts(10, changes=wemwbs_change(40, 40)))
    shown = inclusion(group)
    assert (shown["wemwbs_people_measured"], shown["wemwbs_mean_change"], shown["wemwbs_meaningful_improvement_share"]) \
        == (5, 3.2, 0.8)


def test_csv_writes_none_as_blank_and_the_total_last() -> None:
    report = reports.build_outcomes_report([facts(1)], reports.Scope("P1", None, None, None), ["pcn"])
    lines = reports.to_csv(report).splitlines()
    assert lines[0].startswith("pcn_id,wemwbs_people_measured,wemwbs_mean_change,")
    assert lines[1].startswith("P1,0,,") and lines[2].startswith("all,0,,")
    assert len(lines) == 3
