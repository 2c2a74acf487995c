"""Reading a bulk upload into lines: line numbers as an editor or a spreadsheet shows them, the CSV
cells as the JSON body `POST /referrals` takes, whole-file refusals that say what to do."""

from __future__ import annotations

import pytest

from socialrx_referral_intake import upload

HEADER = "service_id,needs,nhs_number,given_name,family_name,date_of_birth,postcode,consent_given,consent_recorded_at\n"
ROW = "svc-1,loneliness; debt,9434765919,Ada,Example,1951-03-14,LS1 4AP,Yes,2026-11-01T10:00:00Z\n"


def test_csv_cells_become_the_single_request_body() -> None:
    [line] = upload.lines_of(("\ufeff" + HEADER + ROW).encode(), "text/csv")  # a spreadsheet's BOM
    assert line.number == 2 and line.error is None
    assert line.record == {
        "service_id": "svc-1",
        "needs": ["loneliness", "debt"],
        "person": {
            "nhs_number": "9434765919",
            "given_name": "Ada",
            "family_name": "Example",
            "date_of_birth": "1951-03-14",
            "postcode": "LS1 4AP",
            "accessibility_needs": [],
        },
        "consent": {"given": True, "recorded_at": "2026-11-01T10:00:00Z"},
    }


def test_line_numbers_skip_blank_lines_and_count_a_quoted_cell_over_two_lines() -> None:
    body = HEADER + ROW + "\n" + ROW.replace("Ada", '"Ada\nMay"') + ROW.replace("Yes", "maybe")
    lines = upload.lines_of(body.encode(), "text/csv")
    assert [line.number for line in lines] == [2, 4, 6]
    assert lines[2].record["consent"]["given"] == "maybe"  # left for the model to refuse, naming the field


def test_a_bad_line_is_reported_alone() -> None:
    body = HEADER + "only,two\n" + ROW.replace("Ada", "A\x00da") + ROW
    lines = upload.lines_of(body.encode(), "text/csv")
    assert [(line.number, line.error) for line in lines] == [
        (2, "has 2 cells where the header has 9 columns"),
        (3, "must not contain the NUL character (U+0000)"),
        (4, None),
    ]


@pytest.mark.parametrize(
    "body, message",
    [
        (b'=HYPERLINK("http://evil"),needs\n', "column 1 of the header is not one we know"),
        (b"service_id,needs\n", "lacks the column(s) nhs_number"),
        (b"service_id,service_id,needs\n", "column appears twice"),
        ("\u00e9,x\n".encode("latin-1"), "not UTF-8"),
    ],
)
def test_a_file_we_cannot_read_is_refused_whole_without_echoing_it(body: bytes, message: str) -> None:
    with pytest.raises(upload.Unreadable) as refused:
        upload.lines_of(body, "text/csv")
    assert message in str(refused.value) and "evil" not in str(refused.value)


def test_ndjson_lines() -> None:
    body = b'{"service_id": "a"}\n\n{oops\n[1]\n{"person": {"given_name": "A\\u0000"}}\n'
    lines = upload.lines_of(body, "application/x-ndjson")
    assert [(line.number, line.record is not None) for line in lines] == [(1, True), (3, False), (4, False), (5, False)]
    assert lines[1].error.startswith("not a JSON object: Expecting property name")
    assert lines[3].error == "must not contain the NUL character (U+0000)"
