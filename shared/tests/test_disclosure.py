"""Disclosure control: no hidden count can be worked out from the rest of its report.

The reader is given more than the report shows — every shown count exactly, not rounded — and a
hidden count must still not follow from the report's lines (parts adding up to totals). "Follows"
is linear algebra over the rationals: a hidden cell is determined iff removing it from the system
of lines (restricted to the hidden cells) lowers the rank by one, i.e. no change of the hidden
cells that keeps every line's sum moves it.
"""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from socialrx_shared import disclosure as dc


def _rank(rows: list[list[Fraction]]) -> int:
    matrix = [row[:] for row in rows if any(row)]
    rank, columns = 0, len(matrix[0]) if matrix else 0
    for column in range(columns):
        pivot = next((r for r in range(rank, len(matrix)) if matrix[r][column] != 0), None)
        if pivot is None:
            continue
        matrix[rank], matrix[pivot] = matrix[pivot], matrix[rank]
        for r in range(len(matrix)):
            if r != rank and matrix[r][column] != 0:
                factor = matrix[r][column] / matrix[rank][column]
                matrix[r] = [a - factor * b for a, b in zip(matrix[r], matrix[rank], strict=True)]
        rank += 1
    return rank


def determined(hidden: list, lines: list[tuple[list, object]]) -> set:
    """The hidden cells a reader could compute from the lines, knowing every shown cell exactly."""

    def system(variables: list) -> list[list[Fraction]]:
        return [[Fraction(1 if v in parts else -1 if v == total else 0) for v in variables] for parts, total in lines]

    full = _rank(system(hidden))
    found = set()
    for cell in hidden:
        # The cell is fixed iff its unit vector is in the row space: adding it does not raise the rank.
        with_unit = [*system(hidden), [Fraction(1 if v == cell else 0) for v in hidden]]
        if _rank(with_unit) == full:
            found.add(cell)
    return found


def table(counts: list[list[int]]) -> tuple[dict, list]:
    """A report table: rows of counts, each row's total, each column's total, and the grand total."""
    cells: dict = {}
    lines: list = []
    n_rows, n_cols = len(counts), len(counts[0])
    for r, row in enumerate(counts):
        for c, count in enumerate(row):
            cells[(r, c)] = count
        cells[(r, "T")] = sum(row)
        lines.append(([(r, c) for c in range(n_cols)], (r, "T")))
    for c in range(n_cols):
        cells[("T", c)] = sum(row[c] for row in counts)
        lines.append(([(r, c) for r in range(n_rows)], ("T", c)))
    cells[("T", "T")] = sum(map(sum, counts))
    lines.append(([("T", c) for c in range(n_cols)], ("T", "T")))
    lines.append(([(r, "T") for r in range(n_rows)], ("T", "T")))
    return cells, lines


counts_strategy = st.integers(1, 4).flatmap(
    lambda cols: st.lists(
        st.lists(st.one_of(st.integers(0, 9), st.integers(0, 60)), min_size=cols, max_size=cols), min_size=1, max_size=5
    )
)


@settings(max_examples=400, deadline=None)
@given(counts_strategy)
def test_no_hidden_count_can_be_recovered_from_its_table(counts: list[list[int]]) -> None:
    cells, lines = table(counts)
    published = dc.protect(cells, lines)
    hidden = [key for key, shown in published.items() if shown == dc.SUPPRESSED]
    assert {key for key, count in cells.items() if 1 <= count <= 7} <= set(hidden)  # primary
    assert determined(hidden, lines) == set(), (counts, published)
    for key, shown in published.items():
        if shown != dc.SUPPRESSED:
            assert shown % 5 == 0 and abs(shown - cells[key]) <= 2


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=8))
def test_one_line_never_gives_back_its_hidden_part(parts: list[int]) -> None:
    cells = {i: count for i, count in enumerate(parts)} | {"total": sum(parts)}
    lines = [(list(range(len(parts))), "total")]
    hidden = [k for k, shown in dc.protect(cells, lines).items() if shown == dc.SUPPRESSED]
    assert determined(hidden, lines) == set()


def test_the_rule_by_example() -> None:
    assert [dc.rounded(n) for n in (0, 2, 3, 8, 12, 13, 100)] == [0, 0, 5, 10, 10, 15, 100]
    # 3 hidden; 3 = 40 - 37 would give it back, so the next smallest part (12) goes too.
    assert dc.protect({"a": 3, "b": 12, "c": 25, "t": 40}, [(["a", "b", "c"], "t")]) == {
        "a": "*",
        "b": "*",
        "c": 25,
        "t": 40,
    }
    # Nothing small: nothing hidden, all rounded.
    assert dc.protect({"a": 9, "b": 0, "t": 9}, [(["a", "b"], "t")]) == {"a": 10, "b": 0, "t": 10}
    # A zero is the last choice for the second hidden part: it would protect nothing a bigger part does not.
    assert dc.protect({"a": 3, "b": 0, "c": 20, "t": 23}, [(["a", "b", "c"], "t")]) == {
        "a": "*",
        "b": 0,
        "c": "*",
        "t": 25,
    }
