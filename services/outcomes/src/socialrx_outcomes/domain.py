"""Wellbeing instruments, scored exactly as their authors publish them. Standard library only.

- ONS4 (ONS personal well-being): four items 0-10, reported per item with the ONS bands; no total.
  For the fourth item (anxiety) lower is better.
- WEMWBS: 14 items 1-5, total 14-70; a change of 3 or more points is meaningful.
- SWEMWBS: 7 items 1-5, raw 7-35, converted to a metric score with the published table; a change of
  3 or more metric points is meaningful.
"""

from __future__ import annotations

from dataclasses import dataclass

ONS4_ITEMS = ("life_satisfaction", "worthwhile", "happy_yesterday", "anxious_yesterday")
SWEMWBS_METRIC = {
    7: 7.00, 8: 9.51, 9: 11.25, 10: 12.40, 11: 13.33, 12: 14.08, 13: 14.75, 14: 15.32, 15: 15.84,
    16: 16.36, 17: 16.88, 18: 17.43, 19: 17.98, 20: 18.59, 21: 19.25, 22: 19.98, 23: 20.73, 24: 21.54,
    25: 22.35, 26: 23.21, 27: 24.11, 28: 25.03, 29: 26.02, 30: 27.03, 31: 28.13, 32: 29.31, 33: 30.70,
    34: 32.55, 35: 35.00,
}
MEANINGFUL_CHANGE = {"WEMWBS": 3.0, "SWEMWBS": 3.0}
_SHAPE = {"ONS4": (4, 0, 10), "WEMWBS": (14, 1, 5), "SWEMWBS": (7, 1, 5)}


class InvalidAnswers(ValueError):
    """The answers do not fit the instrument; the message names the item."""


@dataclass(frozen=True)
class Score:
    instrument: str
    score: float | None  # None for ONS4, which has no total
    item_scores: list[int]
    bands: list[str] | None = None  # ONS4 only, one per item


def validate(instrument: str, answers: list[int]) -> None:
    if instrument not in _SHAPE:
        raise InvalidAnswers(f"unknown instrument {instrument!r}; use one of {', '.join(_SHAPE)}")
    count, low, high = _SHAPE[instrument]
    if len(answers) != count:
        raise InvalidAnswers(f"{instrument} has {count} items; {len(answers)} answers were given")
    for number, answer in enumerate(answers, start=1):
        if isinstance(answer, bool) or not isinstance(answer, int):
            raise InvalidAnswers(f"{instrument} item {number}: answer must be a whole number")
        if not low <= answer <= high:
            raise InvalidAnswers(f"{instrument} item {number}: answer {answer} is outside {low}-{high}")


def ons4_band(item_index: int, answer: int) -> str:
    if item_index == 3:  # anxiety: lower is better
        if answer <= 1:
            return "very low"
        if answer <= 3:
            return "low"
        if answer <= 5:
            return "medium"
        return "high"
    if answer <= 4:
        return "low"
    if answer <= 6:
        return "medium"
    if answer <= 8:
        return "high"
    return "very high"


def score(instrument: str, answers: list[int]) -> Score:
    validate(instrument, answers)
    if instrument == "ONS4":
        return Score(instrument, None, list(answers), [ons4_band(i, a) for i, a in enumerate(answers)])
    total = sum(answers)
    if instrument == "SWEMWBS":
        return Score(instrument, SWEMWBS_METRIC[total], list(answers))
    return Score(instrument, float(total), list(answers))


def change(instrument: str, baseline: Score, follow_up: Score) -> tuple[float | list[int], str | None]:
    """Follow-up minus baseline and, where the instrument defines one, the meaningful-change flag."""
    if instrument == "ONS4":
        return [f - b for b, f in zip(baseline.item_scores, follow_up.item_scores)], None
    assert baseline.score is not None and follow_up.score is not None
    delta = round(follow_up.score - baseline.score, 2)
    threshold = MEANINGFUL_CHANGE[instrument]
    if delta >= threshold:
        return delta, "meaningful_improvement"
    if delta <= -threshold:
        return delta, "meaningful_decline"
    return delta, "no_change"
