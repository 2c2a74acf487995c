"""Insight rules, with every figure worked out here independently (day by day, by hand)."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from socialrx_funding_ledger import insight
from socialrx_funding_ledger.insight import DuePayment


def _by_hand_interest(amount: int, due_on: date, paid: list[tuple[date, int]], as_of: date, bank_rate: str) -> int:
    """Every day from the day after the due date to as_of: what was unpaid at its start x (rate + 8%) / 365."""
    total = Fraction(0)
    yearly = Fraction(Decimal(bank_rate) + 8) / 100
    day = due_on + timedelta(days=1)
    while day <= as_of:
        unpaid = amount - sum(p for on, p in paid if on < day)
        total += max(unpaid, 0) * yearly / 365
        day += timedelta(days=1)
    exact = Decimal(total.numerator) / Decimal(total.denominator)
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def test_interest_of_a_simple_debt_matches_the_hand_sum() -> None:
    # £1,000 due 31 Jan 2026, unpaid on 2 Mar 2026: 30 days at 3.75% + 8% = 11.75%.
    # 100000 x 0.1175 x 30 / 365 = 965.75... -> 966p.
    assert insight.statutory_interest_pence(100_000, date(2026, 1, 31), [], date(2026, 3, 2), 375) == 966
    assert _by_hand_interest(100_000, date(2026, 1, 31), [], date(2026, 3, 2), "3.75") == 966


def test_part_payments_stop_interest_on_the_part_paid() -> None:
    # £600 paid on day 10 after the due date: that day still accrues on £1,000, then £400 remains.
    paid = [(date(2026, 2, 10), 60_000)]
    figure = insight.statutory_interest_pence(100_000, date(2026, 1, 31), paid, date(2026, 3, 2), 375)
    assert figure == _by_hand_interest(100_000, date(2026, 1, 31), paid, date(2026, 3, 2), "3.75")
    # 10 days on 100000 + 20 days on 40000 = 1,800,000 pence-days x 0.1175 / 365 = 579.45 -> 579p
    assert figure == 579


@pytest.mark.parametrize(
    ("due_on", "starts", "half_year", "reference"),
    [
        (date(2025, 6, 29), date(2025, 6, 30), date(2025, 1, 1), date(2024, 12, 31)),  # starts 30 June: first half
        (date(2025, 6, 30), date(2025, 7, 1), date(2025, 7, 1), date(2025, 6, 30)),  # starts 1 July: second half
        (date(2025, 12, 31), date(2026, 1, 1), date(2026, 1, 1), date(2025, 12, 31)),  # across the year end
        (date(2026, 12, 30), date(2026, 12, 31), date(2026, 7, 1), date(2026, 6, 30)),
    ],
)
def test_the_reference_day_is_the_one_before_interest_starts(due_on, starts, half_year, reference) -> None:
    assert insight.interest_starts_on(due_on) == starts
    assert insight.half_year_starting(starts) == half_year
    assert insight.reference_date(starts) == reference


def test_a_debt_overdue_across_a_reference_day_keeps_its_first_rate() -> None:
    # Interest starts 20 Dec 2025 (rate fixed by 30 June 2025: 4.25%); still unpaid 1 Mar 2026, when
    # new debts would take 3.75%. It keeps 12.25% for all 71 days: 50000 x 0.1225 x 71 / 365 = 1191.44 -> 1191.
    figure = insight.statutory_interest_pence(50_000, date(2025, 12, 19), [], date(2026, 2, 28), 425)
    assert figure == _by_hand_interest(50_000, date(2025, 12, 19), [], date(2026, 2, 28), "4.25") == 1191
    assert figure != insight.statutory_interest_pence(50_000, date(2025, 12, 19), [], date(2026, 2, 28), 375)


@pytest.mark.parametrize(
    ("debt_pence", "fixed_pence"),
    [
        (1, 4_000),
        (99_999, 4_000),
        (100_000, 7_000),
        (999_999, 7_000),
        (1_000_000, 10_000),
        (50_000_000, 10_000),
    ],
)
def test_fixed_sum_at_each_band_edge(debt_pence: int, fixed_pence: int) -> None:
    assert insight.compensation_pence(debt_pence) == fixed_pence


def test_a_rate_finer_than_a_hundredth_of_a_point_is_refused() -> None:
    assert insight.percent_to_basis_points(Decimal("4.25")) == 425
    with pytest.raises(ValueError, match="finer"):
        insight.percent_to_basis_points(Decimal("4.125"))


days = st.dates(min_value=date(2011, 1, 1), max_value=date(2030, 12, 31))


@given(
    amount=st.integers(1, 10**9),
    due_on=days,
    late=st.integers(0, 800),
    rate=st.integers(0, 2000),
    parts=st.lists(st.tuples(st.integers(0, 800), st.integers(1, 10**8)), max_size=4),
)
def test_interest_equals_the_day_by_day_sum(amount, due_on, late, rate, parts) -> None:
    as_of = due_on + timedelta(days=late)
    paid = [(due_on + timedelta(days=d), p) for d, p in parts]
    figure = insight.statutory_interest_pence(amount, due_on, paid, as_of, rate)
    bank = str(Decimal(rate) / 100)
    assert figure == _by_hand_interest(amount, due_on, paid, as_of, bank) if late <= 120 else figure >= 0
    # Never more than the whole amount unpaid throughout, never less than nothing.
    assert 0 <= figure <= _by_hand_interest(amount, due_on, [], as_of, bank)


@given(amount=st.integers(1, 10**9), due_on=days, late=st.integers(1, 3000), rate=st.integers(0, 2000))
def test_unpaid_interest_is_linear_in_days_and_rate(amount, due_on, late, rate) -> None:
    figure = insight.statutory_interest_pence(amount, due_on, [], due_on + timedelta(days=late), rate)
    exact = Fraction(amount * (rate + 800) * late, 10_000 * 365)
    assert abs(figure - exact) <= Fraction(1, 2)


# --- prompt payment -------------------------------------------------------------------------------

DUE = date(2026, 5, 30)


def _paid(days_after_due: int | None, amount: int = 1000, due_on: date = DUE) -> DuePayment:
    settled = None if days_after_due is None else due_on + timedelta(days=days_after_due)
    return DuePayment("P1", "org-a", amount, due_on, settled, 0 if settled else amount)


def test_early_on_the_day_10_and_45_days_late_and_one_open() -> None:
    payments = [_paid(-5, 1000), _paid(0, 2000), _paid(10, 3000), _paid(45, 4000), _paid(None, 5000)]
    figures = insight.prompt_payment(payments, as_of=date(2026, 9, 1))
    assert (figures["payments_due"], figures["value_due_pence"]) == (5, 15000)
    assert (figures["on_time_count"], figures["on_time_pence"]) == (2, 3000)
    assert (figures["within_30_days_count"], figures["within_30_days_pence"]) == (1, 3000)
    assert (figures["later_count"], figures["later_pence"]) == (1, 4000)
    assert (figures["open_count"], figures["open_overdue_count"], figures["open_overdue_pence"]) == (1, 1, 5000)
    part_paid = insight.prompt_payment([DuePayment("P1", "org-a", 1000, DUE, None, 400)], as_of=date(2026, 9, 1))
    assert (part_paid["open_pence"], part_paid["open_unpaid_pence"], part_paid["open_overdue_pence"]) == (
        1000,
        400,
        400,
    )
    assert figures["on_time_share_by_number_percent"] == 40.0  # 2 of 5
    assert figures["on_time_share_by_value_percent"] == 20.0  # 3000 of 15000
    assert figures["within_30_days_share_by_number_percent"] == 60.0  # 3 of 5
    assert figures["within_30_days_share_by_value_percent"] == 40.0  # 6000 of 15000
    assert figures["mean_days_late"] == 13.8  # (0 + 0 + 10 + 45) / 4 = 13.75, halves up
    assert figures["median_days_late"] == 5.0  # median of 0, 0, 10, 45
    assert insight.median_days_late(payments) == 5


def test_nothing_due_has_no_shares() -> None:
    figures = insight.prompt_payment([], as_of=DUE)
    assert figures["payments_due"] == 0 and figures["on_time_share_by_number_percent"] is None
    assert figures["mean_days_late"] is None and insight.median_days_late([]) == 0


@given(st.lists(st.tuples(st.one_of(st.none(), st.integers(-30, 400)), st.integers(1, 10**7)), max_size=40))
def test_parts_add_up_and_shares_are_ordered(rows) -> None:
    payments = [_paid(late, amount) for late, amount in rows]
    f = insight.prompt_payment(payments, as_of=date(2027, 12, 31))
    parts = ("on_time", "within_30_days", "later", "open")
    assert sum(f[f"{p}_count"] for p in parts) == f["payments_due"] == len(rows)
    assert sum(f[f"{p}_pence"] for p in parts) == f["value_due_pence"]
    if rows:
        exact = Fraction(100 * f["on_time_count"], len(rows))
        assert abs(Fraction(str(f["on_time_share_by_number_percent"])) - exact) <= Fraction(1, 20)
        assert f["on_time_share_by_number_percent"] <= f["within_30_days_share_by_number_percent"] <= 100
        assert f["on_time_share_by_value_percent"] <= f["within_30_days_share_by_value_percent"] <= 100


# --- forecast -------------------------------------------------------------------------------------


def test_open_payment_moves_by_median_lateness_and_likely_fee_is_the_share() -> None:
    assert insight.expected_on(DUE, 0) == (DUE, insight.OPEN_AT_DUE_DATE)
    assert insight.expected_on(DUE, 12) == (date(2026, 6, 11), insight.OPEN_MOVED_BY_LATENESS)
    # 3 referrals waiting, 2 of 5 accepted earned the £120 fee: 12000 x 3 x 2/5 = 14400
    assert insight.likely_fee_pence(12_000, 3, 2, 5) == 14_400
    assert insight.likely_fee_pence(1, 1, 1, 2) == 1  # half a penny rounds up
    receipts = [
        insight.ExpectedReceipt(insight.OPEN_AT_DUE_DATE, "P1", date(2026, 5, 1), 500, "p-old"),
        insight.ExpectedReceipt(insight.OPEN_AT_DUE_DATE, "P1", date(2026, 6, 8), 700, "p-2"),
        insight.ExpectedReceipt(insight.LIKELY_OUTCOME_FEE, "P1", date(2026, 6, 20), 900, None, 3),
    ]
    weeks = insight.weekly(receipts, date(2026, 6, 1), 2)
    assert [w["expected_pence"] for w in weeks] == [500, 700]  # overdue lands in week 1; 20 June is beyond
    assert weeks[1]["starts_on"] == "2026-06-08" and weeks[1]["lines"][0]["kind"] == insight.OPEN_AT_DUE_DATE
