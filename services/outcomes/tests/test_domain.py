"""The instruments, scored as published: every table value, every band edge, every change edge."""

from __future__ import annotations

import pytest

from socialrx_outcomes import domain

# Written out again from the published SWEMWBS conversion table (Stewart-Brown et al. 2009, as issued
# by Warwick Medical School), not copied from domain.SWEMWBS_METRIC, so a typo in either shows.
PUBLISHED_SWEMWBS = [
    (7, 7.00),
    (8, 9.51),
    (9, 11.25),
    (10, 12.40),
    (11, 13.33),
    (12, 14.08),
    (13, 14.75),
    (14, 15.32),
    (15, 15.84),
    (16, 16.36),
    (17, 16.88),
    (18, 17.43),
    (19, 17.98),
    (20, 18.59),
    (21, 19.25),
    (22, 19.98),
    (23, 20.73),
    (24, 21.54),
    (25, 22.35),
    (26, 23.21),
    (27, 24.11),
    (28, 25.03),
    (29, 26.02),
    (30, 27.03),
    (31, 28.13),
    (32, 29.31),
    (33, 30.70),
    (34, 32.55),
    (35, 35.00),
]


def answers_summing(total: int, items: int, low: int = 1, high: int = 5) -> list[int]:
    answers = [low] * items
    rest = total - low * items
    for i in range(items):
        step = min(high - low, rest)
        answers[i] += step
        rest -= step
    assert rest == 0 and sum(answers) == total
    return answers


@pytest.mark.parametrize(("raw", "metric"), PUBLISHED_SWEMWBS)
def test_every_swemwbs_raw_total_maps_to_its_table_value(raw: int, metric: float) -> None:
    scored = domain.score("SWEMWBS", answers_summing(raw, 7))
    assert scored.score == metric
    assert scored.item_scores == answers_summing(raw, 7)


def test_the_table_covers_exactly_the_possible_raw_totals() -> None:
    assert sorted(domain.SWEMWBS_METRIC) == [raw for raw, _ in PUBLISHED_SWEMWBS] == list(range(7, 36))


@pytest.mark.parametrize(
    ("answer", "band"),
    [
        (0, "low"),
        (4, "low"),
        (5, "medium"),
        (6, "medium"),
        (7, "high"),
        (8, "high"),
        (9, "very high"),
        (10, "very high"),
    ],
)
def test_ons4_band_edges_of_the_first_three_items(answer: int, band: str) -> None:
    scored = domain.score("ONS4", [answer, answer, answer, 0])
    assert scored.bands is not None and scored.bands[:3] == [band, band, band]


@pytest.mark.parametrize(
    ("answer", "band"),
    [
        (0, "very low"),
        (1, "very low"),
        (2, "low"),
        (3, "low"),
        (4, "medium"),
        (5, "medium"),
        (6, "high"),
        (10, "high"),
    ],
)
def test_ons4_anxiety_band_edges(answer: int, band: str) -> None:
    scored = domain.score("ONS4", [5, 5, 5, answer])
    assert scored.bands is not None and scored.bands[3] == band


def test_ons4_has_no_total_and_reports_per_item() -> None:
    scored = domain.score("ONS4", [7, 8, 6, 2])
    assert scored.score is None
    assert scored.item_scores == [7, 8, 6, 2]
    assert scored.bands == ["high", "high", "medium", "low"]


def test_ons4_anxiety_falling_is_an_improvement_and_rising_a_worsening() -> None:
    calmer = domain.change(domain.score("ONS4", [5, 5, 5, 8]), domain.score("ONS4", [5, 5, 5, 3]))
    assert calmer.item_deltas == [0, 0, 0, -5]
    assert calmer.item_flags == ["no_change", "no_change", "no_change", "improved"]
    worse = domain.change(domain.score("ONS4", [5, 5, 5, 3]), domain.score("ONS4", [6, 4, 5, 4]))
    assert worse.item_flags == ["improved", "worsened", "no_change", "worsened"]
    assert worse.delta is None and worse.flag is None


@pytest.mark.parametrize(
    ("baseline", "follow_up", "flag"),
    [
        (40, 42, "no_change"),
        (40, 43, "meaningful_improvement"),
        (40, 38, "no_change"),
        (40, 37, "meaningful_decline"),
        (40, 40, "no_change"),
        (14, 70, "meaningful_improvement"),
    ],
)
def test_wemwbs_meaningful_change_edges(baseline: int, follow_up: int, flag: str) -> None:
    result = domain.change(
        domain.score("WEMWBS", answers_summing(baseline, 14)), domain.score("WEMWBS", answers_summing(follow_up, 14))
    )
    assert result.delta == follow_up - baseline
    assert result.flag == flag


@pytest.mark.parametrize(
    ("raw_before", "raw_after", "delta", "flag"),
    [
        (20, 24, 2.95, "no_change"),  # 18.59 -> 21.54: just under three metric points
        (21, 26, 3.96, "meaningful_improvement"),
        (7, 8, 2.51, "no_change"),
        (7, 9, 4.25, "meaningful_improvement"),
        (35, 34, -2.45, "no_change"),
        (35, 33, -4.30, "meaningful_decline"),
    ],
)
def test_swemwbs_change_is_counted_in_metric_points(raw_before: int, raw_after: int, delta: float, flag: str) -> None:
    result = domain.change(
        domain.score("SWEMWBS", answers_summing(raw_before, 7)), domain.score("SWEMWBS", answers_summing(raw_after, 7))
    )
    assert result.delta == delta
    assert result.flag == flag


@pytest.mark.parametrize(
    ("instrument", "answers", "message"),
    [
        ("ONS4", [5, 5, 5], "ONS4 has 4 items; 3 answers were given"),
        ("WEMWBS", [3] * 15, "WEMWBS has 14 items; 15 answers were given"),
        ("SWEMWBS", [], "SWEMWBS has 7 items; 0 answers were given"),
        ("ONS4", [5, 11, 5, 5], "ONS4 item 2 (worthwhile): answer 11 is outside 0-10"),
        ("ONS4", [5, 5, 5, -1], "ONS4 item 4 (anxious_yesterday): answer -1 is outside 0-10"),
        ("WEMWBS", [3] * 13 + [0], "WEMWBS item 14: answer 0 is outside 1-5"),
        ("SWEMWBS", [3, 6, 3, 3, 3, 3, 3], "SWEMWBS item 2: answer 6 is outside 1-5"),
        ("SWEMWBS", [3, 3, 3.0, 3, 3, 3, 3], "SWEMWBS item 3: answer must be a whole number"),
        ("SWEMWBS", [3, 3, 3, True, 3, 3, 3], "SWEMWBS item 4: answer must be a whole number"),
        ("SWEMWBS", [3, 3, 3, 3, "3", 3, 3], "SWEMWBS item 5: answer must be a whole number"),
        ("EQ5D", [1], "unknown instrument"),
    ],
)
def test_a_wrong_answer_set_is_refused_naming_the_item(instrument: str, answers: list, message: str) -> None:
    with pytest.raises(domain.InvalidAnswers, match=message.replace("(", r"\(").replace(")", r"\)")):
        domain.score(instrument, answers)


def test_the_latest_follow_up_is_compared_with_the_baseline() -> None:
    changes = domain.changes_from(
        [
            ("WEMWBS", "baseline", answers_summing(40, 14)),
            ("WEMWBS", "follow_up", answers_summing(50, 14)),
            ("WEMWBS", "follow_up", answers_summing(42, 14)),
            ("SWEMWBS", "follow_up", answers_summing(20, 7)),  # no baseline: no change to report
        ]
    )
    assert set(changes) == {"WEMWBS"}
    assert changes["WEMWBS"].delta == 2 and changes["WEMWBS"].flag == "no_change"


def test_the_referral_view_status_ends_the_same_in_any_order_of_events() -> None:
    from itertools import permutations

    from socialrx_outcomes.domain import referral_status

    for decision in ("accepted", "declined"):
        for order in permutations(("created", decision)):
            status = None
            for seen in order:
                status = referral_status(status, seen)
            assert status == decision, order
    # The first decision stands: a second one (a replay from another deployment, say) changes nothing.
    assert referral_status("accepted", "declined") == "accepted"
    assert referral_status("declined", "accepted") == "declined"
