"""Reading a charity's CSV of outcomes into one record per line (standard library only).

The columns are made to be filled in a spreadsheet: one row per outcome, one column per measure
and phase, the answers in one cell separated by spaces ("3 4 3 3 4 3 3"), an empty cell for a
measure not taken. Nothing the volunteer typed is echoed back in a message: a cell may hold a
spreadsheet formula, and the messages are shown in a table.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from typing import Any

MAX_LINES = 20_000
MAX_BYTES = 5_000_000

MEASURE_COLUMNS = {
    f"{instrument.lower()}_{phase}": (instrument, phase)
    for instrument in ("SWEMWBS", "WEMWBS", "ONS4")
    for phase in ("baseline", "follow_up")
}
CSV_COLUMNS = ("referral_id", "status", "sessions_attended", *MEASURE_COLUMNS)
REQUIRED_COLUMNS = ("referral_id", "status", "sessions_attended")
_SEPARATORS = re.compile(r"[\s;,]+")


class Unreadable(Exception):
    """The whole file cannot be read; the message says what to do."""


@dataclass(frozen=True)
class Line:
    number: int  # the spreadsheet's row number: the header is row 1
    record: dict[str, Any] | None
    error: str | None = None


def _answer(token: str) -> object:
    # Whole numbers become integers; anything else stays text, so the scoring rules refuse it
    # naming the item (as `POST /referrals/{id}/outcomes` does for "3" or 3.5).
    return int(token) if re.fullmatch(r"-?[0-9]{1,3}", token) else token


def _sessions(cell: str) -> object:
    return int(cell) if re.fullmatch(r"[0-9]{1,6}", cell) else cell


def record_of(cells: dict[str, str]) -> dict[str, Any]:
    """One row as the JSON body `POST /referrals/{id}/outcomes` takes, plus its referral_id."""
    value = {name: cell.strip() for name, cell in cells.items()}
    measures = [
        {
            "instrument": instrument,
            "phase": phase,
            "answers": [_answer(token) for token in _SEPARATORS.split(value[column]) if token],
        }
        for column, (instrument, phase) in MEASURE_COLUMNS.items()
        if value.get(column)
    ]
    return {
        "referral_id": value["referral_id"],
        "status": value["status"].lower(),
        "sessions_attended": _sessions(value["sessions_attended"]),
        "measures": measures,
    }


def csv_lines(body: bytes) -> list[Line]:
    try:
        text = body.decode("utf-8-sig")  # spreadsheets save "CSV UTF-8" with a byte-order mark
    except UnicodeDecodeError:
        raise Unreadable("the file is not UTF-8 text: save it from the spreadsheet as 'CSV UTF-8'") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return []
    except csv.Error as exc:
        raise Unreadable(f"row 1 (the header) cannot be read as CSV: {exc}") from None
    columns = [name.strip().lower() for name in header]
    for position, name in enumerate(columns, start=1):
        if name not in CSV_COLUMNS:
            raise Unreadable(
                f"column {position} of the header is not one we know; the columns are: {', '.join(CSV_COLUMNS)}"
            )
    if len(set(columns)) != len(columns):
        raise Unreadable("a column appears twice in the header: give each column once")
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        raise Unreadable(
            f"the header lacks the column(s) {', '.join(missing)}; the columns are: "
            f"{', '.join(CSV_COLUMNS)} (measure columns you do not use may be left out)"
        )
    lines = []
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            lines.append(Line(start, None, f"cannot be read as CSV: {exc}"))
            continue
        if not any(cell.strip() for cell in cells):
            continue
        if any("\x00" in cell for cell in cells):
            lines.append(Line(start, None, "must not contain the NUL character (U+0000)"))
            continue
        if len(cells) != len(columns):
            lines.append(Line(start, None, f"has {len(cells)} cells where the header has {len(columns)} columns"))
            continue
        lines.append(Line(start, record_of(dict(zip(columns, cells, strict=False)))))
    return lines
