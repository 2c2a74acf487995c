"""The whole journey in a real browser, across roles, on the real platform:
finance agrees funding -> a link worker refers -> the charity accepts in its inbox -> records an
outcome -> finance sees the payments due and the arrears -> uploads a remittance -> the arrears fall.
Every page on the way is checked with axe-core (WCAG 2.2 A/AA), at 320 px, and by keyboard."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from web_pages import check_page, click, referral_id_from, sign_in, sign_out, wait_text

NHS_NUMBER = "9434765919"


def test_whole_journey_across_roles(web_url, world, shots_dir, browser, platform) -> None:
    page = browser.new_page(viewport={"width": 1024, "height": 900})
    shot = lambda name: shots_dir / f"{name}.png"  # noqa: E731

    # The start page and the development sign-in are pages too.
    page.goto(web_url)
    check_page(page, main_action="a:has-text('Development sign-in')", shot=shot("sign-in"))
    page.goto(f"{web_url}/dev/sign-in")
    check_page(page, main_action="button:has-text('Sign in')")

    # Admin: the organisations (ids for charity sign-in), need codes, the audit log.
    sign_in(page, web_url, "admin")
    assert page.url.endswith("/admin/organisations")
    assert world.organisation_name in page.content()
    check_page(page, main_action="button:has-text('Add organisation')", shot=shot("admin-organisations"))
    page.goto(f"{web_url}/admin/needs")
    check_page(page, main_action="button:has-text('Add need code')")
    sign_out(page)

    # Finance agrees funding with the organisation: £50 per accepted referral, £120 per completed outcome.
    sign_in(page, web_url, "finance", pcn_id=world.pcn_id)
    page.goto(f"{web_url}/agreements")
    page.select_option("#organisation_id", world.organisation_id)
    page.fill("#per_referral", "50")
    page.fill("#per_outcome", "120.00")
    page.fill("#starts_on", f"{date.today().year - 1}-04-01")
    click(page, "button:has-text('Create agreement')")
    assert "£50.00" in page.content() and "£120.00" in page.content()
    check_page(page, main_action="button:has-text('Create agreement')", shot=shot("finance-agreements"))
    sign_out(page)

    # Link worker: find by need and postcode district; the full service says why it cannot be chosen.
    sign_in(page, web_url, "link_worker", pcn_id=world.pcn_id, practice_id="B82005")
    page.goto(f"{web_url}/find")
    page.select_option("#need", "loneliness")
    page.fill("#postcode", "LS1")
    click(page, "button:has-text('Search')")
    assert "Not accepting referrals" in page.content()
    check_page(page, main_action=f"a[href='/refer/{world.service_id}']", shot=shot("link-worker-find"))
    click(page, f"a[href='/refer/{world.service_id}']")

    # Refusals first: nothing filled in, then an NHS number that fails its check digit.
    click(page, "button:has-text('Send referral')")
    assert "There is a problem" in page.content()
    assert "Enter the person's first name" in page.content()
    check_page(page, main_action="button:has-text('Send referral')")
    page.fill("#given_name", "Ada")
    page.fill("#family_name", "Testperson")
    page.fill("#nhs_number", "9434765918")
    page.fill("#dob_day", "14")
    page.fill("#dob_month", "3")
    page.fill("#dob_year", "1951")
    page.fill("#postcode", "LS1 4AP")
    page.check("#need-loneliness")
    page.check("#consent")
    click(page, "button:has-text('Send referral')")
    assert "invalid nhs number" in page.inner_text(".nhsuk-error-summary").lower()
    assert page.locator(".nhsuk-error-summary a[href='#nhs_number']").count() == 1
    page.fill("#nhs_number", NHS_NUMBER)
    click(page, "button:has-text('Send referral')")
    assert "Referral sent" in page.content()
    referral_id = referral_id_from(page.url)
    check_page(page, shot=shot("link-worker-referral"))
    page.goto(f"{web_url}/referrals")
    assert f"/referrals/{referral_id}" in page.content()
    check_page(page, main_action="button:has-text('Show')", shot=shot("link-worker-referrals"))
    sign_out(page)

    # Charity: the referral arrives in the inbox (an event away); accept it in place (htmx).
    sign_in(page, web_url, "charity", organisation_id=world.organisation_id)
    wait_text(page, f"{web_url}/inbox", f"referral-{referral_id}")
    card = f"#referral-{referral_id}"
    assert "Declined automatically" in page.locator(card).inner_text()
    check_page(page, main_action=f"{card} button:has-text('Accept')", shot=shot("charity-inbox"))
    page.set_viewport_size({"width": 320, "height": 640})  # as on a small phone
    page.screenshot(path=str(shot("charity-inbox-320px")), full_page=True)
    page.set_viewport_size({"width": 1024, "height": 900})
    page.click(f"{card} button:has-text('Accept')")
    page.wait_for_selector(f"{card} >> text=Accepted. You can now see")
    assert page.url.endswith("/inbox")  # swapped in place, no page load
    click(page, f"{card} a:has-text('Contact details')")
    assert "Ada Testperson" in page.content() and "audited" in page.content()
    check_page(page)
    wait_text(page, f"{web_url}/referrals/{referral_id}", "Record an outcome")
    click(page, "a:has-text('Record an outcome')")
    page.check("#status-completed")
    page.fill("#sessions_attended", "6")
    page.select_option("#SWEMWBS_phase", "baseline")
    for item in range(1, 8):
        page.select_option(f"#SWEMWBS_{item}", "3")
    check_page(page, main_action="button:has-text('Record outcome')", shot=shot("charity-outcome"))
    click(page, "button:has-text('Record outcome')")
    assert "Outcome recorded" in page.content()
    assert "SWEMWBS (Baseline): score" in page.content()
    page.goto(f"{web_url}/our-services")
    assert "Safeguarding policy runs out soon" in page.content()
    check_page(page, shot=shot("charity-our-services"))
    wait_text(page, f"{web_url}/owed", "£170.00")
    check_page(page, main_action="a:has-text('Download our statement')", shot=shot("charity-owed"))
    page.goto(f"{web_url}/webhooks")
    check_page(page, main_action="button:has-text('Add subscription')")
    sign_out(page)

    # Finance: payments due, the arrears (table and chart), then a remittance that pays them.
    sign_in(page, web_url, "finance", pcn_id=world.pcn_id)
    wait_text(page, f"{web_url}/payments", "£120.00")
    assert "£50.00" in page.content()
    check_page(page, shot=shot("finance-payments"))
    page.goto(f"{web_url}/arrears")
    assert page.inner_text("#total-owed") == "£170.00"
    assert page.locator("svg[role='img'] title").count() == 1
    check_page(page, main_action="button:has-text('Show')", shot=shot("finance-arrears"))
    page.goto(f"{web_url}/statements/{world.organisation_id}")
    check_page(page, main_action="a:has-text('Download this statement')")
    with page.expect_download() as download:
        page.click("a:has-text('Download this statement')")
    assert "accrual" in Path(download.value.path()).read_text()

    csv = (
        "paid_on,organisation_id,amount_pence,reference\n"
        f"{date.today()},{world.organisation_id},17000,REM-{world.pcn_id}\n"
        f"{date.today()},{world.organisation_id},17000,REM-{world.pcn_id}\n"
        "not a date,x,1,BAD\n"
    )
    page.goto(f"{web_url}/reconciliation")
    check_page(page, main_action="button:has-text('Check the file')")
    page.set_input_files("#file", files=[{"name": "remittance.csv", "mimeType": "text/csv", "buffer": csv.encode()}])
    click(page, "button:has-text('Check the file')")
    assert page.inner_text("#count-matched") == "1"
    assert page.inner_text("#count-duplicate") == "1"
    assert page.inner_text("#count-malformed") == "1"
    check_page(page, main_action="button:has-text('Post these payments')", shot=shot("finance-remittance"))
    page.goto(f"{web_url}/arrears")
    assert page.inner_text("#total-owed") == "£170.00"  # checking posted nothing
    page.goto(f"{web_url}/reconciliation")
    page.set_input_files("#file", files=[{"name": "remittance.csv", "mimeType": "text/csv", "buffer": csv.encode()}])
    click(page, "button:has-text('Check the file')")
    click(page, "button:has-text('Post these payments')")
    assert "Posted" in page.content()
    page.goto(f"{web_url}/arrears")
    assert page.inner_text("#total-owed") == "£0.00"
    page.goto(f"{web_url}/settlements")
    assert f"REM-{world.pcn_id}" in page.content()
    check_page(page, main_action="button:has-text('Record payment')")
    sign_out(page)

    # Admin sees the contact read in the audit log.
    sign_in(page, web_url, "admin")
    page.goto(f"{web_url}/admin/audit?referral_id={referral_id}")
    assert referral_id in page.content()
    check_page(page)
    page.close()

    # The web app's log holds none of the person's details and no token (rule 4).
    log = platform.web.log_path.read_text(errors="replace")
    assert f"/referrals/{referral_id}" in log  # the scan reads the right log
    for secret in (NHS_NUMBER, "Testperson", "LS1 4AP", "1951-03-14", "eyJ"):
        assert secret not in log, f"{secret!r} found in the web app's log"
