"""Steps and checks every browser test uses: sign in, accessibility, narrow screens, keyboard."""

from __future__ import annotations

import re
import time
from pathlib import Path

from axe_playwright_python.sync_playwright import Axe

WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
_axe = Axe()


def sign_in(
    page, web_url: str, role: str, *, pcn_id: str = "", organisation_id: str = "", practice_id: str = ""
) -> None:
    page.goto(f"{web_url}/dev/sign-in")
    page.check(f"#role-{role}")
    page.fill("#pcn_id", pcn_id)
    page.fill("#practice_id", practice_id)
    page.fill("#organisation_id", organisation_id)
    click(page, "button:has-text('Sign in')")
    assert "Development sign-in" in page.content()  # every page says so plainly


def click(page, selector: str) -> None:
    """Click something that loads a page, and wait for that page."""
    with page.expect_navigation():
        page.click(selector)


def sign_out(page) -> None:
    click(page, "button:has-text('Sign out')")


def check_page(page, *, main_action: str | None = None, shot: Path | None = None) -> None:
    """Zero WCAG 2.2 A/AA violations, no horizontal scroll at 320 px, main action reachable by Tab."""
    results = _axe.run(page, options={"runOnly": {"type": "tag", "values": WCAG_TAGS}, "resultTypes": ["violations"]})
    assert results.violations_count == 0, f"{page.url}:\n{results.generate_report()}"
    if shot is not None:
        page.screenshot(path=str(shot), full_page=True)
    size = page.viewport_size
    page.set_viewport_size({"width": 320, "height": 640})
    try:
        width = page.evaluate("document.documentElement.scrollWidth")
        if width > 320:
            wide = page.evaluate("""[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > 320 || e.scrollWidth > e.clientWidth + 1)
                .slice(-3).map(e => e.tagName + '.' + e.className + ': ' + (e.textContent || '').slice(0, 60))""")
            raise AssertionError(f"{page.url} scrolls sideways at 320 px wide ({width} px): {wide}")
    finally:
        page.set_viewport_size(size)
    if main_action:
        tab_to(page, main_action)


def tab_to(page, selector: str, max_tabs: int = 150) -> None:
    """Press Tab from the top of the page until `selector` has the focus (keyboard alone)."""
    target = page.locator(selector).first
    assert target.count() == 1, f"no {selector} on {page.url}"
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.evaluate("window.scrollTo(0, 0)")
    for _ in range(max_tabs):
        page.keyboard.press("Tab")
        if target.evaluate("el => el === document.activeElement"):
            return
    raise AssertionError(f"{selector} not reached by Tab on {page.url}")


def wait_text(page, url: str, text: str, timeout_s: float = 30.0) -> None:
    """Reload `url` until `text` appears (events travel between services asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while True:
        page.goto(url)
        if text in page.content():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} never appeared on {url}")
        time.sleep(0.5)


def referral_id_from(url: str) -> str:
    found = re.search(r"/referrals/([0-9a-f-]{36})", url)
    assert found, url
    return found.group(1)
