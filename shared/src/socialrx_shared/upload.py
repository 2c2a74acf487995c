"""Reading an uploaded spreadsheet (CSV) into one record per line: what the bulk uploads share.

Standard library only. A line that cannot be read becomes its error message (the others go on); a
file that cannot be read at all (not UTF-8, a header we do not know) is refused whole, with what to
do. Nothing the caller sent is echoed back: a cell may hold a person's details or a spreadsheet
formula. Each service says which columns it takes and how a row becomes its record.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError


class Unreadable(Exception):
    """The whole file cannot be read; the message says what to do."""


@dataclass(frozen=True)
class Line:
    number: int  # as a spreadsheet numbers it (the header is 1), or a text editor for NDJSON
    record: dict[str, Any] | None
    error: str | None = None


def decode(body: bytes, save_as: str) -> str:
    """The body as text; `save_as` says how to save it right ("'CSV UTF-8'")."""
    try:
        # utf-8-sig: spreadsheets save "CSV UTF-8" with a byte-order mark.
        return body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise Unreadable(f"the file is not UTF-8 text: save it as {save_as}") from None


@dataclass(frozen=True)
class Columns:
    known: tuple[str, ...]
    required: tuple[str, ...]
    optional_hint: str  # which columns may be left out, said when the header lacks a required one
    line_word: str = "line"  # "row" where volunteers think in spreadsheet rows


def csv_lines(text: str, columns: Columns, record_of: Callable[[dict[str, str]], dict[str, Any]]) -> list[Line]:
    """One `Line` per non-empty row after the header, its record made by `record_of(cells by column)`."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return []
    except csv.Error as exc:
        raise Unreadable(f"{columns.line_word} 1 (the header) cannot be read as CSV: {exc}") from None
    names = _header(header, columns)
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
        if len(cells) != len(names):
            lines.append(Line(start, None, f"has {len(cells)} cells where the header has {len(names)} columns"))
            continue
        lines.append(Line(start, record_of(dict(zip(names, cells, strict=True)))))
    return lines


def _header(header: list[str], columns: Columns) -> list[str]:
    names = [name.strip().lower() for name in header]
    for position, name in enumerate(names, start=1):
        if name not in columns.known:
            raise Unreadable(
                f"column {position} of the header is not one we know; the columns are: {', '.join(columns.known)}"
            )
    if len(set(names)) != len(names):
        raise Unreadable("a column appears twice in the header: give each column once")
    missing = [name for name in columns.required if name not in names]
    if missing:
        raise Unreadable(
            f"the header lacks the column(s) {', '.join(missing)}; the columns are: "
            f"{', '.join(columns.known)} ({columns.optional_hint})"
        )
    return names


def validation_message(exc: ValidationError) -> str:
    """A line's pydantic errors as one sentence a person can act on: the fields, never their values."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in err.get("loc", ())) or "line"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)
