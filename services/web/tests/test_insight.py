"""The insight pages in a real browser on the real platform: the charity's forecast and late-payment
figure on "What we are owed", prompt payment and unmet need for finance and admin. Each page is
checked with axe-core (WCAG 2.2 A/AA), at 320 px and by keyboard; a charity asking for another
organisation's forecast is refused by the ledger and the page says so."""

from __future__ import annotations

import time
from datetime import date

import httpx
from web_pages import check_page, sign_in, sign_out, wait_text

from socialrx_harness.testing import auth


def _until(what: str, attempt, timeout_s: float = 30.0):
    """Retry a call until it answers as wanted: the services learn of each other by events."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = attempt()
        if answer is not None:
            return answer
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.2)


def _fund_refer_accept_and_refuse(platform, jwt_secret, world) -> None:
    """Through the APIs: an agreement, a referral the charity accepts (a £50.00 payment falls due)
    and a referral to the full service (refused: unmet need)."""
    finance = auth(jwt_secret, "finance", pcn_id=world.pcn_id)
    link_worker = auth(jwt_secret, "link_worker", pcn_id=world.pcn_id, practice_id="B82005")
    charity = auth(jwt_secret, "charity", organisation_id=world.organisation_id)
    ledger, intake, directory = (platform.url(s) for s in ("funding-ledger", "referral-intake", "directory"))
    agreement = {
        "organisation_id": world.organisation_id,
        "per_referral_pence": 5000,
        "per_outcome_pence": 12000,
        "period": "quarterly",
        "days_after_period_end": 30,
        "starts_on": f"{date.today().year - 1}-04-01",
    }

    def post(url: str, headers: dict, body: dict | None, wanted: int) -> httpx.Response | None:
        answer = httpx.post(url, headers=headers, json=body, timeout=10)
        return answer if answer.status_code == wanted else None

    _until("the agreement", lambda: post(ledger + "/agreements", finance, agreement, 201))

    def referral(service_id: str) -> dict:
        return {
            "service_id": service_id,
            "needs": ["loneliness"],
            "consent": {"given": True, "recorded_at": "2026-11-01T10:00:00Z"},
            "person": {
                "nhs_number": "9434765919",
                "given_name": "Cy",
                "family_name": "Testperson",
                "date_of_birth": "1960-05-01",
                "postcode": "LS1 4AP",
            },
        }

    created = _until("a referral", lambda: post(intake + "/referrals", link_worker, referral(world.service_id), 201))
    referral_id = created.json()["id"]
    _until("the acceptance", lambda: post(f"{directory}/referrals/{referral_id}/accept", charity, None, 200))
    _until("the refusal", lambda: post(intake + "/referrals", link_worker, referral(world.full_service_id), 409))


def test_insight_pages_for_each_role(web_url, world, browser, platform, jwt_secret, shots_dir) -> None:
    _fund_refer_accept_and_refuse(platform, jwt_secret, world)
    page = browser.new_page(viewport={"width": 1024, "height": 900})

    # The charity: what it is owed now holds the forecast and the late-payment figure.
    sign_in(page, web_url, "charity", organisation_id=world.organisation_id)
    wait_text(page, f"{web_url}/owed", "Payment due")
    assert page.inner_text("#forecast-total") == "£50.00"
    assert "£50.00" in page.inner_text("table:has-text('Expected receipts by week')")
    assert page.inner_text("#late-claimable") == "£0.00"  # nothing is late yet
    assert "nothing is posted" in page.inner_text("main")
    check_page(page, main_action="a:has-text('Download our statement')", shot=shots_dir / "charity-owed-forecast.png")

    # ... and another organisation's forecast is the ledger's to refuse: the page says so.
    answer = page.goto(f"{web_url}/forecast/{world.other_organisation_id}")
    assert answer.status == 403
    assert "You cannot do this" in page.content() and "only its own organisation" in page.inner_text("main")
    assert "£50.00" not in page.content()
    check_page(page)
    answer = page.goto(f"{web_url}/forecast/{world.organisation_id}")  # its own: the same figures
    assert answer.status == 200 and page.inner_text("#forecast-total") == "£50.00"
    sign_out(page)

    # Finance of the PCN: prompt payment (the payment fell due in the future: not in the last 12
    # months) for a window that holds it, and unmet need with the refused referral.
    sign_in(page, web_url, "finance", pcn_id=world.pcn_id)
    assert page.locator("nav a[href='/prompt-payment']").count() == 1
    page.goto(f"{web_url}/prompt-payment")
    assert page.input_value("#end") == date.today().isoformat()
    check_page(page, main_action="button:has-text('Show')")
    page.fill("#end", f"{date.today().year + 1}-12-31")
    with page.expect_navigation():
        page.click("button:has-text('Show')")
    assert world.organisation_name in page.inner_text("main")
    assert page.locator("svg[role='img'] title").count() == 1
    assert page.locator("svg rect[data-series='open_count']").count() == 1
    check_page(page, main_action="button:has-text('Show')", shot=shots_dir / "finance-prompt-payment.png")
    page.goto(f"{web_url}/prompt-payment?start=2026-05-01&end=2026-04-01")  # a refusal, said per field
    assert "must be on or before" in page.inner_text(".nhsuk-error-summary")
    check_page(page)

    wait_text(page, f"{web_url}/unmet-need", "Loneliness, LS1")
    assert "*" in page.inner_text("table")  # one refusal: a small number, hidden as the API gives it
    assert page.locator("svg[role='img'] desc").count() == 1
    check_page(page, main_action="button:has-text('Show')", shot=shots_dir / "finance-unmet-need.png")
    sign_out(page)

    # Admin sees both across PCNs.
    sign_in(page, web_url, "admin")
    page.goto(f"{web_url}/prompt-payment?end={date.today().year + 1}-12-31")
    assert world.organisation_name in page.inner_text("main")
    check_page(page, main_action="button:has-text('Show')")
    page.goto(f"{web_url}/unmet-need")
    assert "Loneliness, LS1" in page.inner_text("main")
    check_page(page, main_action="button:has-text('Show')")
    page.close()
