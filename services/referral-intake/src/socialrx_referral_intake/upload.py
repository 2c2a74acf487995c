"""Reading a bulk upload of referrals (CSV or NDJSON) into one raw record per line.

The CSV reading is the bulk uploads' shared one (`socialrx_shared.upload`: a line that cannot be
read becomes its error, a file that cannot be read at all is refused whole); NDJSON is read here.
Nothing the caller sent is echoed back: a field may hold a person's details, or a spreadsheet formula.
"""

from __future__ import annotations

import json
from typing import Any

from socialrx_shared.upload import Columns, Line, Unreadable, decode
from socialrx_shared.upload import csv_lines as shared_csv_lines

__all__ = ["CSV_COLUMNS", "MAX_BYTES", "MAX_LINES", "Line", "Unreadable", "lines_of"]

# The most lines one upload takes (and the body limit of the route: see api.py). A PCN moving from
# another system splits a larger export into files of this size.
MAX_LINES = 20_000
MAX_BYTES = 12_000_000

CSV_COLUMNS = (
    "service_id",
    "needs",
    "practice_id",
    "nhs_number",
    "given_name",
    "family_name",
    "date_of_birth",
    "postcode",
    "phone",
    "email",
    "accessibility_needs",
    "consent_given",
    "consent_recorded_at",
)
REQUIRED_COLUMNS = (
    "service_id",
    "needs",
    "nhs_number",
    "given_name",
    "family_name",
    "date_of_birth",
    "postcode",
    "consent_given",
    "consent_recorded_at",
)
PERSON_COLUMNS = ("nhs_number", "given_name", "family_name", "date_of_birth", "postcode", "phone", "email")
YES = {"yes", "y", "true", "1"}
NO = {"no", "n", "false", "0"}


CSV = Columns(
    known=CSV_COLUMNS,
    required=REQUIRED_COLUMNS,
    optional_hint="phone, email, practice_id and accessibility_needs may be left out",
)


def split_list(value: str) -> list[str]:
    """ "loneliness; debt" -> ["loneliness", "debt"]: one cell holds several codes."""
    return [part.strip() for part in value.replace(",", ";").split(";") if part.strip()]


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(key) or _holds_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    return False


def ndjson_lines(text: str) -> list[Line]:
    lines = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        if "\x00" in raw:
            lines.append(Line(number, None, "must not contain the NUL character (U+0000)"))
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            lines.append(Line(number, None, f"not a JSON object: {exc.msg} at column {exc.colno}"))
            continue
        if not isinstance(record, dict):
            lines.append(Line(number, None, "not a JSON object: each line is one referral, {...}"))
            continue
        if _holds_nul(record):  # "\u0000" escaped: PostgreSQL cannot store it in text
            lines.append(Line(number, None, "must not contain the NUL character (U+0000)"))
            continue
        lines.append(Line(number, record))
    return lines


def csv_lines(text: str) -> list[Line]:
    return shared_csv_lines(text, CSV, csv_record)


def csv_record(cells: dict[str, str]) -> dict[str, Any]:
    """One CSV row as the JSON body `POST /referrals` takes; empty optional cells are left out."""
    value = {name: cell.strip() for name, cell in cells.items()}
    person: dict[str, Any] = {name: value[name] for name in PERSON_COLUMNS if value.get(name)}
    person["accessibility_needs"] = split_list(value.get("accessibility_needs", ""))
    given = value["consent_given"].lower()
    record: dict[str, Any] = {
        "service_id": value["service_id"],
        "needs": split_list(value["needs"]),
        "person": person,
        # Anything but yes/no stays text, so the model refuses it with its own message.
        "consent": {
            "given": True if given in YES else False if given in NO else given,
            "recorded_at": value["consent_recorded_at"],
        },
    }
    if value.get("practice_id"):
        record["practice_id"] = value["practice_id"]
    return record


def lines_of(body: bytes, media_type: str) -> list[Line]:
    text = decode(body, "'CSV UTF-8' (or NDJSON in UTF-8)")
    if media_type == "text/csv":
        return csv_lines(text)
    return ndjson_lines(text)
