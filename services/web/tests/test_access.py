"""Journeys with JavaScript off, and scoping: nobody sees beyond their organisation or PCN.
Real browser, real platform."""

from __future__ import annotations

from web_pages import check_page, click, referral_id_from, sign_in, sign_out, wait_text


def _refer(page, web_url: str, world, *, nhs_number: str = "9434765919") -> str:
    page.goto(f"{web_url}/refer/{world.service_id}")
    for field, value in (
        ("#given_name", "Bea"),
        ("#family_name", "Testperson"),
        ("#nhs_number", nhs_number),
        ("#dob_day", "2"),
        ("#dob_month", "11"),
        ("#dob_year", "1980"),
        ("#postcode", "LS1 4AP"),
    ):
        page.fill(field, value)
    page.check("#need-loneliness")
    page.check("#consent")
    click(page, "button:has-text('Send referral')")
    assert "Referral sent" in page.content(), page.inner_text("main")
    return referral_id_from(page.url)


def test_refer_accept_and_decline_with_javascript_off(web_url, world, browser) -> None:
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    sign_in(page, web_url, "link_worker", pcn_id=world.pcn_id, practice_id="B82005")
    accepted = _refer(page, web_url, world)
    declined = _refer(page, web_url, world, nhs_number="9000000009")
    sign_out(page)

    sign_in(page, web_url, "charity", organisation_id=world.organisation_id)
    wait_text(page, f"{web_url}/inbox", f"referral-{declined}")
    # (axe-core is a script: these pages are checked with JavaScript on, in the journey test)
    click(page, f"#referral-{accepted} button:has-text('Accept')")  # an ordinary form POST, then the inbox again
    assert "/inbox" in page.url
    assert "Accepted" in page.inner_text(f"#referral-{accepted}")
    page.select_option(f"#reason-{declined}", "no_capacity")
    click(page, f"#referral-{declined} button:has-text('Decline')")
    assert "No capacity" in page.inner_text(f"#referral-{declined}")
    sign_out(page)

    sign_in(page, web_url, "link_worker", pcn_id=world.pcn_id)
    wait_text(page, f"{web_url}/referrals/{declined}", "No capacity")
    wait_text(page, f"{web_url}/referrals/{accepted}", "Accepted")
    context.close()


def test_nobody_sees_beyond_their_organisation_or_pcn(web_url, world, browser) -> None:
    page = browser.new_page()
    sign_in(page, web_url, "link_worker", pcn_id=world.pcn_id, practice_id="B82005")
    referral_id = _refer(page, web_url, world, nhs_number="9876543210")
    sign_out(page)

    # Another charity: the referral page, its contact details and its decision are all refused.
    sign_in(page, web_url, "charity", organisation_id=world.other_organisation_id)
    for path in (f"/referrals/{referral_id}", f"/referrals/{referral_id}/contact"):
        answer = page.goto(f"{web_url}{path}")
        assert answer.status in (403, 404), path
        assert "Bea" not in page.content() and "Testperson" not in page.content()
        check_page(page)
    page.goto(f"{web_url}/inbox")
    assert referral_id not in page.content()
    sign_out(page)

    # A link worker of another PCN sees nothing of it.
    sign_in(page, web_url, "link_worker", pcn_id=world.other_pcn_id)
    assert referral_id not in page.content()  # their referrals list
    answer = page.goto(f"{web_url}/referrals/{referral_id}")
    assert answer.status == 404
    assert "LS1" not in page.inner_text("main")
    sign_out(page)

    # A page of another role is refused, and says who it is for.
    sign_in(page, web_url, "finance", pcn_id=world.pcn_id)
    answer = page.goto(f"{web_url}/inbox")
    assert answer.status == 403 and "This page is for charities" in page.content()
    check_page(page)
    page.close()


def test_a_charity_adds_and_changes_its_service(web_url, world, browser) -> None:
    page = browser.new_page()
    sign_in(page, web_url, "charity", organisation_id=world.other_organisation_id)
    page.goto(f"{web_url}/our-services")
    click(page, "button:has-text('Add service')")
    summary = page.inner_text(".nhsuk-error-summary")
    assert "Enter the service's name" in summary and "Select at least one need" in summary
    check_page(page, main_action="button:has-text('Add service')")
    name = f"Chair yoga {world.pcn_id}"
    page.fill("#name", name)
    page.check("#need-loneliness")
    page.fill("#capacity", "many")
    click(page, "button:has-text('Add service')")
    assert "Enter the number of places" in page.inner_text(".nhsuk-error-summary")
    page.fill("#capacity", "8")
    page.fill("#postcode", "LS6 1AA")
    page.fill("#safeguarding_policy_valid_until", "2030-01-31")
    click(page, "button:has-text('Add service')")
    assert "Service added" in page.content() and name in page.content()
    card = page.locator(".nhsuk-card", has_text=name)
    card.locator("summary").click()
    card.locator("input[name='capacity']").fill("0")
    with page.expect_navigation():
        card.locator("button:has-text('Save changes')").click()
    assert "Service updated" in page.content()
    assert "not accepting referrals" in page.locator(".nhsuk-card", has_text=name).inner_text()
    sign_out(page)
    sign_in(page, web_url, "link_worker", pcn_id=world.pcn_id)
    page.goto(f"{web_url}/find?q=Chair+yoga+{world.pcn_id}")
    assert name in page.content() and "Not accepting referrals" in page.content()
    page.close()


def test_webhooks_redelivery_and_a_payment_recorded_by_hand(web_url, world, browser) -> None:
    page = browser.new_page()
    sign_in(page, web_url, "charity", organisation_id=world.organisation_id)
    page.goto(f"{web_url}/webhooks")
    page.fill("#url", "not a web address")
    click(page, "button:has-text('Add subscription')")
    assert page.locator(".nhsuk-error-summary a[href='#url']").count() == 1
    page.fill("#url", "https://hooks.invalid/socialrx")  # never resolves (RFC 2606): deliveries fail and wait
    click(page, "button:has-text('Add subscription')")
    assert "Copy the signing secret now" in page.content()
    check_page(page, main_action="button:has-text('Add subscription')", shot=None)
    page.goto(f"{web_url}/webhooks")
    assert "Copy the signing secret now" not in page.content()  # shown once
    sign_out(page)

    sign_in(page, web_url, "link_worker", pcn_id=world.pcn_id, practice_id="B82005")
    _refer(page, web_url, world, nhs_number="9999999999")  # referral.created reaches the charity's webhook
    sign_out(page)

    sign_in(page, web_url, "charity", organisation_id=world.organisation_id)
    page.goto(f"{web_url}/webhooks")
    click(page, "a:has-text('Recent deliveries')")
    deliveries = page.url
    wait_text(page, deliveries, "referral.created")
    check_page(page, main_action="button:has-text('Send again')")
    click(page, "button:has-text('Send again')")
    assert "will be sent again now" in page.content()
    sign_out(page)

    sign_in(page, web_url, "finance", pcn_id=world.pcn_id)
    page.goto(f"{web_url}/settlements")
    click(page, "button:has-text('Record payment')")
    summary = page.inner_text(".nhsuk-error-summary")
    assert "Select the organisation you paid" in summary and "Enter the amount paid" in summary
    page.select_option("#organisation_id", world.organisation_id)
    page.fill("#amount", "12.34")
    page.fill("#paid_on", "2026-11-02")
    page.fill("#reference", f"BACS-{world.pcn_id}")
    click(page, "button:has-text('Record payment')")
    assert "has no funding agreement" in page.inner_text(".nhsuk-error-summary")  # the ledger's refusal, in the form
    assert page.input_value("#reference") == f"BACS-{world.pcn_id}"  # what was typed is kept
    page.goto(f"{web_url}/agreements")
    page.select_option("#organisation_id", world.organisation_id)
    page.fill("#per_referral", "25")
    page.fill("#starts_on", "2026-04-01")
    click(page, "button:has-text('Create agreement')")
    page.goto(f"{web_url}/settlements")
    page.select_option("#organisation_id", world.organisation_id)
    page.fill("#amount", "12.34")
    page.fill("#paid_on", "2026-11-02")
    page.fill("#reference", f"BACS-{world.pcn_id}")
    click(page, "button:has-text('Record payment')")
    assert f"BACS-{world.pcn_id}" in page.content() and "£12.34" in page.content()
    check_page(page, main_action="button:has-text('Record payment')")
    page.close()
