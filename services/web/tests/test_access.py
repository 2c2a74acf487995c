"""Journeys with JavaScript off, and scoping: nobody sees beyond their organisation or PCN.
Real browser, real platform."""

from __future__ import annotations

from web_pages import check_page, click, referral_id_from, sign_in, sign_out, wait_text


def _refer(page, web_url: str, world, *, nhs_number: str = "9434765919") -> str:
    page.goto(f"{web_url}/refer/{world.service_id}")
    for field, value in (("#given_name", "Bea"), ("#family_name", "Testperson"), ("#nhs_number", nhs_number),
                         ("#dob_day", "2"), ("#dob_month", "11"), ("#dob_year", "1980"), ("#postcode", "LS1 4AP")):
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
