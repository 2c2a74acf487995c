"""Statistical disclosure control for published counts: NHS England's rule, with secondary suppression.

Pure functions, standard library only; the directory's and the outcomes service's reports both use
them, so a person is protected the same way wherever they are counted.

The rule (NHS England / NHS Digital's published practice for small numbers):

1. *Primary suppression*: a count from 1 to 7 is not shown (``SUPPRESSED``). Zero is shown: it
   tells that nobody is in the cell, which identifies nobody.
2. *Rounding*: every other count, totals included, is shown rounded to the nearest 5 (halves up),
   each rounded on its own — so totals and the sum of their shown parts need not agree.
3. *Secondary suppression*: where counts add up to a total (a column of a report and its total, or
   decline reasons and the declines), one hidden entry could be given back by subtraction. So in
   every such line holding exactly one hidden entry, the next smallest shown part is hidden too, or
   the total when no part is left. In a table with row and column totals that is not enough (two
   lines can be combined to isolate a cell), so the result is then audited: solving all the lines
   together for the hidden cells, any cell that comes out determined gets a neighbour hidden too,
   until none does.

A hidden entry then cannot be worked out from the report even by a reader who knew every shown
count exactly rather than rounded (a property test in shared's tests checks it).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from fractions import Fraction
from typing import TypeVar

K = TypeVar("K", bound=Hashable)

SUPPRESSED = "*"
LARGEST_SUPPRESSED = 7
ROUND_TO = 5
RULE = (
    "NHS England's small-number rule: counts of 1 to 7 are shown as '*', every other count (totals "
    "included) is rounded to the nearest 5, and where a hidden count could be worked out from a total "
    "and the other shown counts, the next smallest count (or the total) is hidden too."
)


def rounded(count: int) -> int:
    """To the nearest ROUND_TO, halves up: 2 -> 0, 8 -> 10, 12 -> 10, 13 -> 15."""
    return (count + ROUND_TO // 2) // ROUND_TO * ROUND_TO


def primary(count: int) -> bool:
    return 1 <= count <= LARGEST_SUPPRESSED


def hidden_cells(cells: Mapping[K, int], lines: Iterable[tuple[Sequence[K], K]], forced: Iterable[K] = ()) -> set[K]:
    """Which cells to hide: the primary ones (and `forced`), then more until none can be worked out.

    `lines` are (parts, total) with sum(parts) == total; a total may be a part of another line.
    """
    lines = [(list(parts), total) for parts, total in lines if parts]
    hidden = {key for key, count in cells.items() if primary(count)} | set(forced)

    def cheapest(parts: Sequence[K], total: K) -> K | None:
        # The smallest non-zero part costs least information; a zero only if nothing else is left
        # (its hidden value could then be anything, which is what makes it protect); else the total.
        shown = sorted(
            (key for key in parts if key not in hidden), key=lambda key: (cells[key] == 0, cells[key], str(key))
        )
        if shown:
            return shown[0]
        return None if total in hidden else total

    while True:
        changed = True
        while changed:
            changed = False
            for parts, total in lines:
                if sum(1 for key in [*parts, total] if key in hidden) == 1:
                    extra = cheapest(parts, total)
                    if extra is not None:
                        hidden.add(extra)
                        changed = True
        pinned = determined(hidden, lines)
        if not pinned:
            return hidden
        # A cell the lines pin down together: hide one more entry of a line through it, and audit again.
        cell = min(pinned, key=str)
        candidates = [
            extra for parts, total in lines if cell in (*parts, total) if (extra := cheapest(parts, total)) is not None
        ]
        if not candidates:
            return hidden  # every line through it is hidden already: nothing more to hide
        hidden.add(min(candidates, key=lambda key: (cells[key] == 0, cells[key], str(key))))


def determined(hidden: Iterable[K], lines: Iterable[tuple[Sequence[K], K]]) -> set[K]:
    """The hidden cells that the lines pin down, knowing every other cell exactly.

    Each line is the equation sum(parts) - total = 0; restricted to the hidden cells it reads
    (coefficients on hidden cells) = (a number the reader knows). A hidden cell is determined iff
    its unit vector lies in the row space of those coefficients, i.e. iff a row of the reduced row
    echelon form is that unit vector.
    """
    variables = sorted(set(hidden), key=str)
    index = {v: i for i, v in enumerate(variables)}
    matrix: list[list[Fraction]] = []
    for parts, total in lines:
        row = [Fraction(0)] * len(variables)
        for key in parts:
            if key in index:
                row[index[key]] += 1
        if total in index:
            row[index[total]] -= 1
        if any(row):
            matrix.append(row)
    rank = 0
    for column in range(len(variables)):
        pivot = next((r for r in range(rank, len(matrix)) if matrix[r][column] != 0), None)
        if pivot is None:
            continue
        matrix[rank], matrix[pivot] = matrix[pivot], matrix[rank]
        lead = matrix[rank][column]
        matrix[rank] = [value / lead for value in matrix[rank]]
        for r in range(len(matrix)):
            if r != rank and matrix[r][column] != 0:
                factor = matrix[r][column]
                matrix[r] = [a - factor * b for a, b in zip(matrix[r], matrix[rank], strict=True)]
        rank += 1
    found: set[K] = set()
    for row in matrix[:rank]:
        nonzero = [i for i, value in enumerate(row) if value != 0]
        if len(nonzero) == 1:
            found.add(variables[nonzero[0]])
    return found


def protect(
    cells: Mapping[K, int], lines: Iterable[tuple[Sequence[K], K]] = (), forced: Iterable[K] = ()
) -> dict[K, int | str]:
    """Every cell as it may be published: SUPPRESSED, or the count rounded to the nearest 5."""
    hidden = hidden_cells(cells, lines, forced)
    return {key: SUPPRESSED if key in hidden else rounded(count) for key, count in cells.items()}
