"""Ledger maths, worked by hand. No fixtures: pure functions."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from socialrx_funding_ledger import domain
from socialrx_funding_ledger.domain import MalformedLine, OpenItem, OpenPayment, Recorded, RemittanceLine


@pytest.mark.parametrize(
    ("work_on", "kind", "days", "label", "due_on"),
    [
        # monthly: the period is the calendar month; April is M01 of the year that starts 1 April
        (date(2026, 4, 1), "monthly", 30, "2026/27-M01", date(2026, 5, 30)),
        (date(2026, 3, 31), "monthly", 30, "2025/26-M12", date(2026, 4, 30)),  # last day of a financial year
        (date(2026, 12, 31), "monthly", 14, "2026/27-M09", date(2027, 1, 14)),  # across a calendar year
        (date(2027, 1, 1), "monthly", 0, "2026/27-M10", date(2027, 1, 31)),  # due on the period's last day
        (date(2028, 2, 10), "monthly", 1, "2027/28-M11", date(2028, 3, 1)),  # leap February ends on the 29th
        (date(2027, 2, 10), "monthly", 1, "2026/27-M11", date(2027, 3, 1)),  # ordinary February ends on the 28th
        (date(2028, 1, 31), "monthly", 29, "2027/28-M10", date(2028, 2, 29)),  # lands on a leap day
        (date(2026, 4, 30), "monthly", 31, "2026/27-M01", date(2026, 5, 31)),  # month end to month end
        # quarterly: Q1 Apr-Jun, Q2 Jul-Sep, Q3 Oct-Dec, Q4 Jan-Mar
        (date(2026, 6, 30), "quarterly", 30, "2026/27-Q1", date(2026, 7, 30)),
        (date(2026, 7, 1), "quarterly", 30, "2026/27-Q2", date(2026, 10, 30)),
        (date(2026, 12, 15), "quarterly", 30, "2026/27-Q3", date(2027, 1, 30)),  # across a calendar year
        (date(2027, 1, 2), "quarterly", 30, "2026/27-Q4", date(2027, 4, 30)),  # across a financial year
        (date(2028, 3, 31), "quarterly", 0, "2027/28-Q4", date(2028, 3, 31)),
        (date(2027, 11, 30), "quarterly", 60, "2027/28-Q3", date(2028, 2, 29)),  # 60 days from 31 Dec in a leap year
        (date(2026, 11, 30), "quarterly", 60, "2026/27-Q3", date(2027, 3, 1)),  # the same in an ordinary year
        (date(2099, 5, 1), "quarterly", 365, "2099/00-Q1", date(2100, 6, 30)),  # the label's century rolls over
    ],
)
def test_due_dates_worked_examples(work_on: date, kind: str, days: int, label: str, due_on: date) -> None:
    assert domain.period_of(work_on, kind).label == label
    assert domain.due_date(work_on, kind, days) == due_on


def test_period_bounds_cover_the_financial_year_without_gaps() -> None:
    for kind, count in (("monthly", 12), ("quarterly", 4)):
        day, labels = date(2027, 4, 1), []
        while day < date(2028, 4, 1):
            period = domain.period_of(day, kind)
            assert period.starts_on == day
            labels.append(period.label)
            day = date.fromordinal(period.ends_on.toordinal() + 1)
        assert len(labels) == count and day == date(2028, 4, 1)


def test_unknown_period_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="monthly or quarterly"):
        domain.period_of(date(2026, 4, 1), "weekly")


def _agreement(**changes) -> domain.Agreement:
    base = dict(
        id="a1",
        pcn_id="U1",
        organisation_id="o1",
        per_referral_pence=5000,
        per_outcome_pence=12000,
        outcome_statuses=("completed",),
        block_grant_pence_per_period=30000,
        cap_pence_per_year=None,
        period="quarterly",
        days_after_period_end=30,
        starts_on=date(2026, 5, 15),
        ends_on=None,
    )
    return domain.Agreement(**(base | changes))


def test_the_agreement_in_force_is_the_pairs_covering_one() -> None:
    closed = _agreement(id="old", starts_on=date(2025, 4, 1), ends_on=date(2026, 5, 14))
    successor = _agreement(id="new", starts_on=date(2026, 5, 15))
    elsewhere = _agreement(id="other", pcn_id="U2", starts_on=date(2020, 1, 1))
    agreements = [successor, elsewhere, closed]
    assert domain.agreement_in_force(agreements, "U1", "o1", date(2026, 5, 14)) == closed  # its last day
    assert domain.agreement_in_force(agreements, "U1", "o1", date(2026, 5, 15)) == successor
    assert domain.agreement_in_force(agreements, "U1", "o1", date(2025, 3, 31)) is None  # before any began
    assert domain.agreement_in_force(agreements, "U2", "o1", date(2026, 6, 1)) == elsewhere
    assert domain.agreement_in_force(agreements, "U1", "o2", date(2026, 6, 1)) is None


def test_the_terms_on_a_day_are_the_newest_change_that_applies_to_it() -> None:
    agreement = _agreement()

    def change(version: int, effective_from: date, per_referral_pence: int) -> dict:
        return {
            "version": version,
            "effective_from": effective_from,
            "per_referral_pence": per_referral_pence,
            "per_outcome_pence": 12000,
            "outcome_statuses": ["completed", "engaged"],
            "block_grant_pence_per_period": 0,
            "cap_pence_per_year": 90000,
        }

    # Version 3 was made later but back-dated before version 2's start: from 1 July, 3 wins.
    changes = [change(2, date(2026, 9, 1), 7000), change(3, date(2026, 7, 1), 6000)]
    assert domain.terms_on(agreement, changes, date(2026, 6, 30)) == agreement  # no change applies yet
    on_july = domain.terms_on(agreement, changes, date(2026, 7, 1))
    assert (on_july.per_referral_pence, on_july.cap_pence_per_year) == (6000, 90000)
    assert on_july.outcome_statuses == ("completed", "engaged")
    assert domain.terms_on(agreement, changes, date(2026, 10, 1)).per_referral_pence == 6000  # 3 outranks 2
    assert domain.terms_on(agreement, changes[:1], date(2026, 10, 1)).per_referral_pence == 7000


def test_fees_per_basis_and_outcome_status() -> None:
    agreement = _agreement()
    assert domain.fee(agreement, "referral_accepted") == 5000
    assert domain.fee(agreement, "outcome_recorded", "completed") == 12000
    assert domain.fee(agreement, "outcome_recorded", "engaged") == 0
    assert domain.fee(agreement, "block_grant") == 30000


def test_cap_reached_mid_period_owes_the_room_left_and_reports_the_rest() -> None:
    assert domain.apply_cap(5000, 17000, 20000) == (3000, 2000)
    assert domain.apply_cap(5000, 20000, 20000) == (0, 5000)
    assert domain.apply_cap(5000, 25000, 20000) == (0, 5000)  # already over (cap lowered): nothing more
    assert domain.apply_cap(5000, 0, None) == (5000, 0)


def test_block_grant_business_date_is_first_covered_day_of_the_period() -> None:
    agreement = _agreement(ends_on=date(2026, 10, 3))
    assert domain.grant_business_date(agreement, date(2026, 4, 20)) == date(2026, 5, 15)  # starts mid-Q1
    assert domain.grant_business_date(agreement, date(2026, 8, 1)) == date(2026, 7, 1)
    assert domain.grant_business_date(agreement, date(2026, 12, 31)) == date(2026, 10, 1)  # ends in Q3
    assert domain.grant_business_date(agreement, date(2027, 1, 1)) is None
    assert domain.grant_business_date(_agreement(), date(2026, 3, 31)) is None  # before it starts


@pytest.mark.parametrize(
    ("as_of", "bucket"),
    [
        (date(2026, 5, 30), "not_due"),
        (date(2026, 5, 31), "days_1_30"),
        (date(2026, 6, 29), "days_1_30"),
        (date(2026, 6, 30), "days_31_60"),
        (date(2026, 7, 29), "days_31_60"),
        (date(2026, 7, 30), "days_61_90"),
        (date(2026, 8, 28), "days_61_90"),
        (date(2026, 8, 29), "days_over_90"),
        (date(2026, 1, 1), "not_due"),
    ],
)
def test_age_buckets_at_their_edges(as_of: date, bucket: str) -> None:
    assert domain.age_bucket(date(2026, 5, 30), as_of) == bucket


def test_days_outstanding_counts_from_the_work_not_the_due_date() -> None:
    items = [
        OpenItem(1000, date(2026, 5, 30), date(2026, 4, 10)),
        OpenItem(3000, date(2026, 7, 30), date(2026, 6, 15)),
        OpenItem(0, date(2026, 5, 1), date(2026, 1, 1)),
    ]
    # 173 days for 1000p, 107 days for 3000p: (173*1000 + 107*3000) / 4000 = 123.5 -> 124
    assert domain.days_outstanding(items, date(2026, 9, 30)) == {
        "oldest_days_outstanding": 173,
        "weighted_days_outstanding": 124,
    }
    assert domain.days_outstanding([], date(2026, 9, 30))["oldest_days_outstanding"] is None


def test_allocation_pays_earliest_due_then_earliest_work() -> None:
    open_payments = [
        OpenPayment("late", 500, date(2026, 9, 30), date(2026, 7, 1)),
        OpenPayment("b", 300, date(2026, 7, 30), date(2026, 5, 2)),
        OpenPayment("a", 300, date(2026, 7, 30), date(2026, 5, 1)),
    ]
    result = domain.allocate_oldest_first(700, open_payments)
    assert result.allocations == [("a", 300), ("b", 300), ("late", 100)]
    assert result.unallocated_pence == 0
    overpaid = domain.allocate_oldest_first(1500, open_payments)
    assert overpaid.unallocated_pence == 400


@given(st.integers(0, 10**7), st.lists(st.integers(0, 10**5), max_size=12))
def test_allocation_never_overpays_a_payment_and_loses_nothing(amount: int, opens: list[int]) -> None:
    open_payments = [
        OpenPayment(f"p{i}", pence, date(2026, 5, 1 + i), date(2026, 4, 1)) for i, pence in enumerate(opens)
    ]
    result = domain.allocate_oldest_first(amount, open_payments)
    by_id = {p.payment_id: p.open_pence for p in open_payments}
    assert all(0 < pence <= by_id[pid] for pid, pence in result.allocations)
    assert sum(p for _, p in result.allocations) + result.unallocated_pence == amount
    assert result.unallocated_pence == max(amount - sum(opens), 0)


@pytest.mark.parametrize(
    ("given_allocations", "problem"),
    [
        ([("p1", 100), ("p1", 100)], "allocated twice"),
        ([("p9", 100)], "not an open payment"),
        ([("p1", 600)], "exceeds its open 500"),
        ([("p1", 0)], "more than 0"),
        ([("p1", 500), ("p2", 600)], "more than the 1000 pence paid"),
    ],
)
def test_given_allocations_refused_with_a_reason(given_allocations, problem: str) -> None:
    assert problem in domain.check_allocations(1000, given_allocations, {"p1": 500, "p2": 700})


def test_given_allocations_accepted_when_they_fit() -> None:
    assert domain.check_allocations(1000, [("p2", 700), ("p1", 200)], {"p1": 500, "p2": 700}) is None


@pytest.mark.parametrize(
    ("pence", "text"), [(0, "0.00"), (5, "0.05"), (1234, "12.34"), (-1234, "-12.34"), (100000000, "1000000.00")]
)
def test_pounds_are_exact(pence: int, text: str) -> None:
    assert domain.pounds(pence) == text


@pytest.mark.parametrize(
    ("row", "error"),
    [
        (["2026-13-01", "o1", "100", "R1"], "not an ISO date"),
        (["2026-10-01", "o1", "12.50", "R1"], "whole number"),
        (["2026-10-01", "o1", "-5", "R1"], "whole number"),
        (["2026-10-01", "o1", "0", "R1"], "out of range"),
        (["2026-10-01", "", "100", "R1"], "organisation_id"),
        (["2026-10-01", "o1", "100", ""], "reference"),
        (["2026-10-01", "o1", "100"], "expected 4 columns"),
    ],
)
def test_malformed_remittance_rows_say_why(row: list[str], error: str) -> None:
    parsed = domain.parse_remittance_row(7, row)
    assert isinstance(parsed, MalformedLine) and parsed.line == 7 and error in parsed.error


def test_reconcile_classifies_each_line() -> None:
    lines = [
        RemittanceLine(2, date(2026, 10, 1), "o1", 1000, "REC-1"),  # equals a recorded settlement
        RemittanceLine(3, date(2026, 10, 1), "o1", 900, "REC-2"),  # recorded with another amount
        RemittanceLine(4, date(2026, 10, 1), "o2", 400, "NEW-1"),  # fits in o2's open 600
        RemittanceLine(5, date(2026, 10, 1), "o2", 500, "NEW-2"),  # only 200 left open: part
        RemittanceLine(6, date(2026, 10, 1), "o3", 100, "NEW-3"),  # nothing open for o3
        RemittanceLine(7, date(2026, 10, 2), "o2", 400, "NEW-1"),  # repeats line 4
        MalformedLine(8, "BAD", "amount_pence 'x' is not a whole number of pence"),
    ]
    recorded = {("o1", "REC-1"): Recorded("s1", 1000), ("o1", "REC-2"): Recorded("s2", 1000)}
    open_by_org = {"o2": [OpenPayment("p1", 600, date(2026, 7, 30), date(2026, 5, 1))]}
    results = domain.reconcile(lines, recorded, open_by_org)
    assert [(r["line"], r["status"]) for r in results] == [
        (2, "matched"),
        (3, "part_matched"),
        (4, "matched"),
        (5, "part_matched"),
        (6, "unmatched"),
        (7, "duplicate"),
        (8, "malformed"),
    ]
    assert results[1]["difference_pence"] == -100
    assert results[2]["allocations"] == [{"payment_id": "p1", "amount_pence": 400}]
    assert (results[3]["matched_pence"], results[3]["unmatched_pence"]) == (200, 300)
    assert results[5]["duplicate_of_line"] == 4
    assert results[6]["reference"] == "BAD"


def test_cause_keys_and_account_names_keep_the_spelling_already_in_the_journal() -> None:
    """Journals written before keep these keys: a new spelling would post the same cause twice."""
    assert domain.referral_accepted_key("r1") == "referral_accepted:r1"
    assert domain.outcome_recorded_key("r1", "a1") == "outcome_recorded:r1:a1"
    assert domain.block_grant_key("a1", "2026/27-Q3") == "block_grant:a1:2026/27-Q3"
    assert domain.settlement_key("s1") == "settlement:s1"
    assert domain.settlement_request_key("U1", "o1", "REF-1", None) == "settlement:ref:U1:o1:REF-1"
    assert domain.settlement_request_key("U1", "o1", "REF-1", "k1") == "settlement:key:U1:k1"
    assert domain.payment_key("p1") == "payment:p1"
    assert domain.payment_reversal_key("p1") == "reversal:payment:p1"
    assert (domain.expense_account("U1"), domain.bank_account("U1")) == ("expense:U1", "bank:U1")
    assert (domain.payable_account("U1", "o1"), domain.credit_account("U1", "o1")) == ("payable:U1:o1", "credit:U1:o1")


def test_the_domain_imports_only_the_standard_library_when_it_runs() -> None:
    import ast
    import inspect
    import sys

    tree = ast.parse(inspect.getsource(domain))
    runtime_imports = {
        alias.name.split(".")[0] for node in tree.body if isinstance(node, ast.Import) for alias in node.names
    }
    runtime_imports |= {
        node.module.split(".")[0]
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
    }
    assert runtime_imports - {"__future__"} <= sys.stdlib_module_names
