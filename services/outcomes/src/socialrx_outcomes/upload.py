"""Reading a charity's CSV of outcomes into one record per line (standard library only).

The columns are made to be filled in a spreadsheet: one row per outcome, one column per measure
and phase, the answers in one cell separated by spaces ("3 4 3 3 4 3 3"), an empty cell for a
measure not taken. Nothing the volunteer typed is echoed back in a message: a cell may hold a
spreadsheet formula, and the messages are shown in a table.
"""

from __future__ import annotations

import re
from typing import Any

from socialrx_shared.upload import Columns, Line, Unreadable, decode
from socialrx_shared.upload import csv_lines as shared_csv_lines

__all__ = ["CSV_COLUMNS", "MAX_BYTES", "MAX_LINES", "Line", "Unreadable", "csv_lines"]

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


CSV = Columns(
    known=CSV_COLUMNS,
    required=REQUIRED_COLUMNS,
    optional_hint="measure columns you do not use may be left out",
    line_word="row",
)


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
    return shared_csv_lines(decode(body, "'CSV UTF-8' from the spreadsheet"), CSV, record_of)
