"""Pure rules behind the issue-12 fixes: UK business days, remittance parsing, safe CSV cells."""

from __future__ import annotations

import ast
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from socialrx_funding_ledger import domain
from socialrx_funding_ledger.commands import parse_remittance
from socialrx_funding_ledger.domain import MalformedLine, RemittanceLine

REPOSITORY = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("at", "business_date", "quarter"),
    [
        # 00:30 BST on 1 July is 23:30 UTC on 30 June: July's work, Q2.
        (datetime(2026, 6, 30, 23, 30, tzinfo=timezone.utc), date(2026, 7, 1), "2026/27-Q2"),
        # 00:15 BST on 1 April is still 31 March in UTC: the new financial year (and its cap).
        (datetime(2026, 3, 31, 23, 15, tzinfo=timezone.utc), date(2026, 4, 1), "2026/27-Q1"),
        # In winter (GMT) the UK day is the UTC day.
        (datetime(2026, 12, 31, 23, 30, tzinfo=timezone.utc), date(2026, 12, 31), "2026/27-Q3"),
    ],
)
def test_business_date_is_the_uk_day(at: datetime, business_date: date, quarter: str) -> None:
    assert domain.business_date_of(at) == business_date
    assert domain.period_of(domain.business_date_of(at), "quarterly").label == quarter


def test_business_date_needs_an_offset() -> None:
    with pytest.raises(ValueError, match="aware"):
        domain.business_date_of(datetime(2026, 7, 1, 0, 30))


HEADER = "paid_on,organisation_id,amount_pence,reference\n"


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("2026-04-01,org-a,١٢٣,R", "digits 0-9"),  # Arabic-Indic digits: not 123
        ("2026-04-01,org-a,²,R", "digits 0-9"),  # a superscript two: no crash
        ("2026-04-01,org-a,1e3,R", "digits 0-9"),
        ("20260401,org-a,100,R", "YYYY-MM-DD"),  # ISO basic format
        ("2026-W14-3,org-a,100,R", "YYYY-MM-DD"),  # ISO week date
        ("２０２６-04-01,org-a,100,R", "YYYY-MM-DD"),  # full-width digits
        ("1999-12-31,org-a,100,R", "plausible"),
        ("2101-01-01,org-a,100,R", "plausible"),
        ("2026-04-01,org a,100,R", "organisation_id"),
    ],
)
def test_remittance_lines_take_ascii_digits_and_iso_dates_only(line: str, says: str) -> None:
    parsed = parse_remittance(HEADER + line + "\n2026-04-01,org-a,250,GOOD\n")
    assert isinstance(parsed[0], MalformedLine) and parsed[0].line == 2 and says in parsed[0].error
    assert parsed[1] == RemittanceLine(3, date(2026, 4, 1), "org-a", 250, "GOOD")  # the next line goes on


def test_an_unreadable_csv_line_is_malformed_and_the_rest_goes_on() -> None:
    parsed = parse_remittance(HEADER + "2026-04-01,org-a,1," + "x" * 200_000 + "\n2026-04-01,org-a,5,OK\n")
    assert isinstance(parsed[0], MalformedLine) and "unreadable" in parsed[0].error
    assert parsed[1] == RemittanceLine(3, date(2026, 4, 1), "org-a", 5, "OK")


@pytest.mark.parametrize(
    ("text", "safe"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1+2", "'+1+2"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("BACS-1", "BACS-1"),
        ("", ""),
    ],
)
def test_spreadsheet_safe(text: str, safe: str) -> None:
    assert domain.spreadsheet_safe(text) == safe


def _effects_in_asserts(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Assert) and any(isinstance(n, (ast.Await, ast.NamedExpr)) for n in ast.walk(node.test)):
            found.append(f"{path.relative_to(REPOSITORY)}:{node.lineno}")
    return found


def test_no_effect_inside_an_assert_in_running_code() -> None:
    """`python -O` removes asserts: an await (or :=) inside one would vanish with its effect."""
    roots = [
        REPOSITORY / "shared" / "src",
        REPOSITORY / "deploy" / "ops" / "src",
        REPOSITORY / "tests" / "harness" / "src",
        REPOSITORY / "bench" / "src",
        *(p / "src" for p in (REPOSITORY / "services").iterdir()),
    ]
    found = [hit for root in roots if root.is_dir() for path in root.rglob("*.py") for hit in _effects_in_asserts(path)]
    assert found == []


# --- allocation order within a day --------------------------------------------------------------

from datetime import timedelta  # noqa: E402

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from socialrx_funding_ledger.domain import OpenPayment  # noqa: E402

DAY = date(2026, 7, 1)
DUE = date(2026, 10, 30)


def test_a_referral_fee_is_paid_before_its_outcome_fee_of_the_same_day() -> None:
    accepted_at = datetime(2026, 7, 1, 8, tzinfo=timezone.utc)
    open_payments = [
        OpenPayment("a-outcome-fee", 12000, DUE, DAY, accepted_at + timedelta(hours=5)),
        OpenPayment("z-referral-fee", 5000, DUE, DAY, accepted_at),
    ]
    assert domain.allocate_oldest_first(5000, open_payments).allocations == [("z-referral-fee", 5000)]


@given(
    st.lists(
        st.tuples(st.text("abcdef0123456789", min_size=1, max_size=8), st.integers(1, 5000), st.integers(0, 86_399)),
        min_size=1,
        max_size=8,
        unique_by=lambda t: t[0],
    ),
    st.integers(0, 40_000),
    st.randoms(),
)
def test_allocation_follows_the_causes_time_whatever_the_ids_and_input_order(rows, amount: int, rng) -> None:
    start = datetime(2026, 7, 1, tzinfo=timezone.utc)
    open_payments = [
        OpenPayment(pid, pence, DUE, DAY, start + timedelta(seconds=second)) for pid, pence, second in rows
    ]
    shuffled = open_payments[:]
    rng.shuffle(shuffled)
    result = domain.allocate_oldest_first(amount, shuffled)
    assert result.allocations == domain.allocate_oldest_first(amount, open_payments).allocations
    by_time = sorted(open_payments, key=lambda p: (p.caused_at, p.payment_id))
    paid_ids = [pid for pid, _ in result.allocations]
    assert paid_ids == [p.payment_id for p in by_time][: len(paid_ids)]  # a prefix, in the causes' order
    # Every payment before the last one paid is paid in full.
    opens = {p.payment_id: p.open_pence for p in open_payments}
    assert all(pence == opens[pid] for pid, pence in result.allocations[:-1])
