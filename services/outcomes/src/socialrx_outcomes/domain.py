"""Wellbeing instruments, scored exactly as their authors publish them. Standard library only.

- ONS4 (ONS personal well-being, Office for National Statistics): four items 0-10, reported per
  item with the ONS thresholds; no total. For the fourth item (anxiety) lower is better.
- WEMWBS (Warwick-Edinburgh Mental Wellbeing Scale, Tennant et al. 2007): 14 items 1-5, total
  14-70; a change of 3 or more points is meaningful.
- SWEMWBS (the short form, Stewart-Brown et al. 2009): 7 items 1-5, raw 7-35, converted to a
  metric score with the published Rasch conversion table; a change of 3 or more metric points is
  meaningful.

The answers are scored again from what is stored whenever a change is worked out, so the rules
here are the only place a score comes from. See the service README for the sources.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

# A referral's status as outcomes sees it (its `referral_view`); the one rule is `referral_status`.
ReferralStatus = Literal["created", "accepted", "declined"]
REFERRAL_STATUSES: tuple[ReferralStatus, ...] = get_args(ReferralStatus)


def referral_status(current: ReferralStatus | None, seen: ReferralStatus) -> ReferralStatus:
    """The view's status after an event saying `seen`. Events come in any order: the creation never
    undoes a decision seen before it, and the first decision stands."""
    if current is None or current == "created":
        return seen
    return current


ONS4_ITEMS = ("life_satisfaction", "worthwhile", "happy_yesterday", "anxious_yesterday")
SWEMWBS_METRIC = {
    7: 7.00,
    8: 9.51,
    9: 11.25,
    10: 12.40,
    11: 13.33,
    12: 14.08,
    13: 14.75,
    14: 15.32,
    15: 15.84,
    16: 16.36,
    17: 16.88,
    18: 17.43,
    19: 17.98,
    20: 18.59,
    21: 19.25,
    22: 19.98,
    23: 20.73,
    24: 21.54,
    25: 22.35,
    26: 23.21,
    27: 24.11,
    28: 25.03,
    29: 26.02,
    30: 27.03,
    31: 28.13,
    32: 29.31,
    33: 30.70,
    34: 32.55,
    35: 35.00,
}
MEANINGFUL_CHANGE = {"WEMWBS": 3.0, "SWEMWBS": 3.0}
MEANINGFUL_IMPROVEMENT, NO_CHANGE, MEANINGFUL_DECLINE = "meaningful_improvement", "no_change", "meaningful_decline"
INSTRUMENTS = ("ONS4", "WEMWBS", "SWEMWBS")
ANXIETY = ONS4_ITEMS.index("anxious_yesterday")
_SHAPE = {"ONS4": (4, 0, 10), "WEMWBS": (14, 1, 5), "SWEMWBS": (7, 1, 5)}


class InvalidAnswers(ValueError):
    """The answers do not fit the instrument; the message names the item."""


@dataclass(frozen=True)
class Score:
    instrument: str
    score: float | None  # None for ONS4, which has no total
    item_scores: list[int]
    bands: list[str] | None = None  # ONS4 only, one per item


def validate(instrument: str, answers: Sequence[object]) -> None:
    """Refuse anything but exactly the instrument's items, each a whole number in its range."""
    if instrument not in _SHAPE:
        raise InvalidAnswers(f"unknown instrument {instrument!r}; use one of {', '.join(_SHAPE)}")
    count, low, high = _SHAPE[instrument]
    if len(answers) != count:
        raise InvalidAnswers(f"{instrument} has {count} items; {len(answers)} answers were given")
    for number, answer in enumerate(answers, start=1):
        item = _item_name(instrument, number)
        # JSON true/false and 3.0 are not answers a respondent gave: refuse rather than coerce.
        if isinstance(answer, bool) or not isinstance(answer, int):
            raise InvalidAnswers(f"{item}: answer must be a whole number from {low} to {high}")
        if not low <= answer <= high:
            raise InvalidAnswers(f"{item}: answer {answer} is outside {low}-{high}")


def _item_name(instrument: str, number: int) -> str:
    if instrument == "ONS4":
        return f"ONS4 item {number} ({ONS4_ITEMS[number - 1]})"
    return f"{instrument} item {number}"


def ons4_band(item_index: int, answer: int) -> str:
    """ONS thresholds; the anxiety item has its own, and for it a low band is the good one."""
    if item_index == ANXIETY:
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


def score(instrument: str, answers: Sequence[object]) -> Score:
    validate(instrument, answers)
    items = [a for a in answers if isinstance(a, int)]  # validated: all plain ints
    assert len(items) == len(answers)
    if instrument == "ONS4":
        return Score(instrument, None, items, [ons4_band(i, a) for i, a in enumerate(items)])
    total = sum(items)
    if instrument == "SWEMWBS":
        return Score(instrument, SWEMWBS_METRIC[total], items)
    return Score(instrument, float(total), items)


@dataclass(frozen=True)
class Change:
    """Follow-up against baseline. `delta` is follow-up minus baseline, as the instrument counts it.

    For ONS4 there is no total, so the change is per item (`item_deltas`) and `item_flags` says, per
    item, whether the person is better, the same or worse: for anxiety a fall is an improvement.
    """

    instrument: str
    delta: float | None
    flag: str | None
    item_deltas: list[int] | None = None
    item_flags: list[str] | None = None


def change(baseline: Score, follow_up: Score) -> Change:
    if baseline.instrument != follow_up.instrument:
        raise ValueError("a change compares two scores of the same instrument")
    instrument = baseline.instrument
    if instrument == "ONS4":
        deltas = [f - b for b, f in zip(baseline.item_scores, follow_up.item_scores, strict=False)]
        return Change(instrument, None, None, deltas, [_ons4_flag(i, d) for i, d in enumerate(deltas)])
    assert baseline.score is not None and follow_up.score is not None
    # Metric SWEMWBS scores carry two decimals; rounding keeps 3.00 from landing at 2.9999999.
    delta = round(follow_up.score - baseline.score, 2)
    return Change(instrument, delta, meaningful_flag(instrument, delta))


def meaningful_flag(instrument: str, delta: float) -> str:
    threshold = MEANINGFUL_CHANGE[instrument]
    if delta >= threshold:
        return MEANINGFUL_IMPROVEMENT
    if delta <= -threshold:
        return MEANINGFUL_DECLINE
    return NO_CHANGE


def _ons4_flag(item_index: int, delta: int) -> str:
    better = -delta if item_index == ANXIETY else delta
    if better > 0:
        return "improved"
    if better < 0:
        return "worsened"
    return NO_CHANGE


def changes_from(observations: Iterable[tuple[str, str, list[int]]]) -> dict[str, Change]:
    """Per instrument, the baseline against the most recent follow-up.

    `observations` are (instrument, phase, answers) in the order they were recorded; a referral has
    at most one baseline per instrument, and may have several follow-ups (the last one counts).
    """
    baselines: dict[str, Score] = {}
    latest: dict[str, Score] = {}
    for instrument, phase, answers in observations:
        (baselines if phase == "baseline" else latest)[instrument] = score(instrument, answers)
    return {i: change(baselines[i], latest[i]) for i in INSTRUMENTS if i in baselines and i in latest}
