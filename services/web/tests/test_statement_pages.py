"""A long statement in a real browser on the real platform: 201 payments recorded through the
ledger's API make 201 lines; the page shows 200 with the statement's running balance, links to the
rest by the lines they hold, and is checked with axe-core, at 320 px and by keyboard. A page number
that is not one is refused with a message, not an error."""

from __future__ import annotations

import time
from datetime import date, timedelta

import httpx
from web_pages import check_page, click, sign_in

from socialrx_harness.testing import auth

PAYMENTS = 201


def _record_payments(platform, jwt_secret, world) -> None:
    """An agreement (once the ledger has heard of the organisation), then 201 payments of £1.00."""
    finance = auth(jwt_secret, "finance", pcn_id=world.pcn_id)
    ledger = platform.url("funding-ledger")
    agreement = {
        "organisation_id": world.organisation_id,
        "per_referral_pence": 5000,
        "period": "quarterly",
        "days_after_period_end": 30,
        "starts_on": f"{date.today().year - 1}-04-01",
    }
    deadline = time.monotonic() + 30
    with httpx.Client(base_url=ledger, headers=finance, timeout=10) as client:
        while (answer := client.post("/agreements", json=agreement)).status_code != 201:
            assert time.monotonic() < deadline, answer.text
            time.sleep(0.2)
        first_day = date.today() - timedelta(days=PAYMENTS)
        for n in range(PAYMENTS):
            paid = {
                "organisation_id": world.organisation_id,
                "amount_pence": 100,
                "paid_on": (first_day + timedelta(days=n)).isoformat(),
                "reference": f"BACS-{n:03d}",
            }
            answer = client.post("/settlements", json=paid)
            assert answer.status_code == 201, answer.text


def test_a_long_statement_is_shown_a_page_at_a_time(web_url, world, browser, platform, jwt_secret) -> None:
    _record_payments(platform, jwt_secret, world)
    page = browser.new_page(viewport={"width": 1024, "height": 900})
    sign_in(page, web_url, "finance", pcn_id=world.pcn_id)
    start = (date.today() - timedelta(days=PAYMENTS)).isoformat()
    page.goto(f"{web_url}/statements/{world.organisation_id}?start={start}&end={date.today()}")
    rows = page.locator("main tbody tr")
    assert rows.count() == 200
    assert "closing balance -£201.00" in page.inner_text("main")
    assert "-£1.00" in rows.first.inner_text() and "-£200.00" in rows.last.inner_text()  # the running balance
    next_link = "a.nhsuk-pagination__link--next"
    assert "Lines 201 to 201 of 201" in page.inner_text(next_link)
    assert page.locator("a.nhsuk-pagination__link--prev").count() == 0
    check_page(page, main_action=next_link)

    click(page, next_link)
    assert rows.count() == 1
    assert "BACS-200" in rows.first.inner_text() and "-£201.00" in rows.first.inner_text()
    assert "Lines 1 to 200 of 201" in page.inner_text("a.nhsuk-pagination__link--prev")
    assert page.locator(next_link).count() == 0
    check_page(page, main_action="a.nhsuk-pagination__link--prev")

    page.goto(f"{web_url}/statements/{world.organisation_id}?page=first")
    assert "The page number must be a whole number from 1." in page.inner_text("main")
    page.close()
