"""Reading a charity's outcomes CSV: one row per outcome, one cell per measure and phase."""

from __future__ import annotations

import pytest

from socialrx_outcomes import upload


def test_a_row_becomes_the_single_recording_body() -> None:
    body = (
        "referral_id,status,sessions_attended,swemwbs_baseline,ons4_follow_up\n"
        "r-1,Completed,6,3 4 3 3 4 3 3,\n"
        "r-2,engaged,x,3;4;3.5,5 6 7 8\n"
    )
    first, second = upload.csv_lines(body.encode())
    assert first.number == 2 and first.record == {
        "referral_id": "r-1",
        "status": "completed",
        "sessions_attended": 6,
        "measures": [{"instrument": "SWEMWBS", "phase": "baseline", "answers": [3, 4, 3, 3, 4, 3, 3]}],
    }
    # What is not a whole number stays text, for the single recording's rules to refuse by name.
    assert second.record["sessions_attended"] == "x"
    assert second.record["measures"] == [
        {"instrument": "SWEMWBS", "phase": "baseline", "answers": [3, 4, "3.5"]},
        {"instrument": "ONS4", "phase": "follow_up", "answers": [5, 6, 7, 8]},
    ]


@pytest.mark.parametrize(
    "body, message",
    [
        (b"referral_id,status,sessions_attended,=cmd|' /C calc'!A0\n", "column 4 of the header is not one we know"),
        (b"referral_id,status\n", "lacks the column(s) sessions_attended"),
        ("referral_id,status,sessions_attended\n\u00e9,x,1\n".encode("latin-1"), "not UTF-8"),
    ],
)
def test_a_file_we_cannot_read_is_refused_whole_without_echoing_it(body: bytes, message: str) -> None:
    with pytest.raises(upload.Unreadable) as refused:
        upload.csv_lines(body)
    assert message in str(refused.value) and "calc" not in str(refused.value)


def test_empty_rows_are_skipped_and_short_rows_reported() -> None:
    lines = upload.csv_lines(b"referral_id,status,sessions_attended\n\n,,\nr-1,completed\n")
    assert [(line.number, line.error) for line in lines] == [(4, "has 2 cells where the header has 3 columns")]
