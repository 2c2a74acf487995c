"""Unmet-need rows: counted per need and district, protected by NHS England's small-number rule."""

from __future__ import annotations

from socialrx_directory import unmet_need
from socialrx_directory.unmet_need import ServiceGap, Turned
from socialrx_shared.disclosure import SUPPRESSED


def _turned(n: int, needs: tuple[str, ...], district: str, column: str) -> list[Turned]:
    return [Turned(needs, district, column)] * n


def test_rows_count_each_need_and_protect_small_numbers() -> None:
    turned = (
        _turned(20, ("loneliness",), "LS1", "refused_no_capacity")
        + _turned(12, ("loneliness",), "LS1", "declined_no_capacity")
        + _turned(3, ("loneliness", "housing"), "LS1", "refused_safeguarding")
        + _turned(9, ("housing",), "LS2", "refused_no_capacity")
    )
    gaps = [
        ServiceGap("svc-full", "Walk and talk", ("loneliness",), "LS1", "no capacity: no places free"),
        ServiceGap("svc-elsewhere", "Far away", ("loneliness",), "M1", "no capacity: no places free"),
    ]
    rows = {(r["need"], r["postcode_district"]): r for r in unmet_need.report(turned, gaps)}
    lonely = rows[("loneliness", "LS1")]
    # 20, 12, 3 (hidden: 1-7), 0 -> total 35. With one part hidden, the next smallest non-zero (12) goes too.
    assert (lonely["refused_no_capacity"], lonely["declined_no_capacity"], lonely["refused_safeguarding"]) == (
        20,
        SUPPRESSED,
        SUPPRESSED,
    )
    assert (lonely["refused_not_active"], lonely["total"]) == (0, 35)
    assert [s["service_id"] for s in lonely["services_not_taking_referrals"]] == ["svc-full"]
    housing = rows[("housing", "LS1")]  # 3 only: the part and the total both hidden
    assert (housing["refused_safeguarding"], housing["total"]) == (SUPPRESSED, SUPPRESSED)
    assert (rows[("housing", "LS2")]["refused_no_capacity"], rows[("housing", "LS2")]["total"]) == (10, 10)  # 9 -> 10


def test_refusal_reasons_map_to_columns_and_gate_reasons_are_sorted() -> None:
    assert {unmet_need.REFUSAL_COLUMN[r] for r in ("safeguarding_policy_missing", "safeguarding_policy_expired")} == {
        "refused_safeguarding"
    }
    assert unmet_need.capacity_or_safeguarding("no capacity: no places free")
    assert unmet_need.capacity_or_safeguarding("safeguarding policy expired on 2020-01-01")
    assert unmet_need.capacity_or_safeguarding("no safeguarding policy on record")
    assert not unmet_need.capacity_or_safeguarding("service status is 'inactive'")
    assert not unmet_need.capacity_or_safeguarding(None)
