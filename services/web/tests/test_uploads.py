"""The upload pages: a link worker's referrals and a charity's outcomes from a CSV, with the per-line
results shown in a table. Real browser, real platform, axe-core checks."""

from __future__ import annotations

import time

import httpx
from web_pages import check_page, click, sign_in, sign_out

from socialrx_harness.testing import auth

REFERRAL_HEADER = (
    "service_id,needs,nhs_number,given_name,family_name,date_of_birth,postcode,consent_given,consent_recorded_at\n"
)


def _upload(page, web_url: str, path: str, name: str, body: str) -> None:
    page.goto(f"{web_url}{path}")
    page.set_input_files("#file", files=[{"name": name, "mimeType": "text/csv", "buffer": body.encode()}])
    click(page, "button:has-text('Upload and check each line')")


def test_a_link_worker_uploads_referrals_and_a_charity_uploads_their_outcomes(
    web_url, world, browser, platform, jwt_secret
) -> None:
    page = browser.new_page()
    sign_in(page, web_url, "link_worker", pcn_id=world.pcn_id, practice_id="B82005")
    page.goto(f"{web_url}/upload-referrals")
    check_page(page, main_action="button:has-text('Upload and check each line')")
    referrals = (
        REFERRAL_HEADER
        + f"{world.service_id},loneliness,9990000093,Upla,Oader,1970-05-06,LS1 4AP,yes,2026-11-01T10:00:00Z\n"
        + f'{world.service_id},loneliness,1234567890,=HYPERLINK("http://evil.example"),X,1970-05-06,'
        "LS1 4AP,yes,2026-11-01T10:00:00Z\n"
    )
    deadline = time.monotonic() + 30
    while True:  # referral-intake learns of the module's new service by an event
        _upload(page, web_url, "/upload-referrals", "referrals.csv", referrals)
        if page.inner_text("#count-done") == "1" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert page.inner_text("#count-done") == "1"
    assert page.inner_text("#count-refused") == "1"
    assert "Refused" in page.inner_text("#line-3") and "invalid NHS number" in page.inner_text("#line-3")
    assert "evil" not in page.content()
    check_page(page, main_action="button:has-text('Upload and check each line')")
    referral_id = page.inner_text("#line-2 .app-wrap").strip()
    # Sent again: nothing twice.
    _upload(page, web_url, "/upload-referrals", "referrals.csv", referrals)
    assert page.inner_text("#count-done") == "0" and page.inner_text("#count-already") == "1"
    sign_out(page)

    charity = auth(jwt_secret, "charity", organisation_id=world.organisation_id)
    deadline = time.monotonic() + 30
    while (
        httpx.post(
            platform.url("directory") + f"/referrals/{referral_id}/accept", headers=charity, timeout=10
        ).status_code
        != 200
        and time.monotonic() < deadline
    ):
        time.sleep(0.3)
    sign_in(page, web_url, "charity", organisation_id=world.organisation_id)
    page.goto(f"{web_url}/upload-outcomes")
    check_page(page, main_action="button:has-text('Upload and check each line')")
    outcomes = (
        "referral_id,status,sessions_attended,swemwbs_baseline\n"
        f"{referral_id},completed,5,3 4 3 3 4 3 3\n"
        f"{referral_id},completed,five,\n"
    )
    deadline = time.monotonic() + 30
    while True:  # outcomes learns of the acceptance by an event
        _upload(page, web_url, "/upload-outcomes", "outcomes.csv", outcomes)
        if page.inner_text("#count-done") == "1" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert page.inner_text("#count-done") == "1"
    assert "sessions_attended" in page.inner_text("#line-3")
    check_page(page, main_action="button:has-text('Upload and check each line')")
    # A file the service cannot read is shown as the problem to fix, on the same page.
    _upload(page, web_url, "/upload-outcomes", "outcomes.csv", "what,is,this\n1,2,3\n")
    assert "There is a problem" in page.content() and "column 1 of the header" in page.content()
    check_page(page)
    # The other role's page is refused.
    answer = page.goto(f"{web_url}/upload-referrals")
    assert answer is not None and answer.status == 403
    page.close()
