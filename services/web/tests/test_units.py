"""The web app without the platform: the SVG chart, CSRF refusal, session expiry, sign-in rules."""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET

import pytest
from fastapi.testclient import TestClient

from socialrx_web import session as session_module
from socialrx_web.app import build
from socialrx_web.chart import arrears_chart, pounds, prompt_payment_chart, unmet_need_chart
from socialrx_web.finance import pence_from
from socialrx_web.settings import WebSettings

SVG = "{http://www.w3.org/2000/svg}"


def _client(**settings) -> TestClient:
    values = {"SOCIALRX_DEV_SIGNIN": True, "SOCIALRX_HTTP_PORT": 8000, **settings}
    return TestClient(build(WebSettings(**values)))


def _csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def _signed_in(client: TestClient, role: str = "finance") -> None:
    token = _csrf(client.get("/dev/sign-in").text)
    answer = client.post(
        "/dev/sign-in", data={"csrf_token": token, "role": role, "pcn_id": "U12345"}, follow_redirects=False
    )
    assert answer.status_code == 303, answer.text


# --- the chart ----------------------------------------------------------------------------------


def test_chart_is_an_accessible_image_with_bars_in_proportion() -> None:
    svg = arrears_chart(
        [("Walkers <&> Co", {"not_due": 5000, "days_1_30": 15000}), ("Lunch club", {"days_over_90": 10000})],
        title="Arrears by age",
    )
    root = ET.fromstring(svg)  # well-formed XML: the label was escaped
    assert root.get("role") == "img"
    assert root.get("aria-labelledby") == "chart-title chart-desc"
    assert root.find(f"{SVG}title").text == "Arrears by age"
    desc = root.find(f"{SVG}desc").text
    assert "Walkers <&> Co: Not yet due £50.00, 1 to 30 days £150.00" in desc
    assert "Lunch club: Over 90 days £100.00" in desc
    bars = {
        (r.get("data-series"), r.get("data-value")): float(r.get("width"))
        for r in root.iter(f"{SVG}rect")
        if r.get("data-series")
    }
    largest = bars[("not_due", "5000")] + bars[("days_1_30", "15000")]
    assert bars[("days_1_30", "15000")] == pytest.approx(3 * bars[("not_due", "5000")], rel=1e-3)
    assert bars[("days_over_90", "10000")] == pytest.approx(largest / 2, rel=1e-3)


def test_chart_of_nothing_owed_says_so() -> None:
    root = ET.fromstring(arrears_chart([]))
    assert root.find(f"{SVG}desc").text == "Nothing is owed."
    assert not [r for r in root.iter(f"{SVG}rect") if r.get("data-series")]


def test_prompt_payment_chart_counts_payments_by_lateness_with_unique_ids() -> None:
    root = ET.fromstring(
        prompt_payment_chart(
            [("PCN U12345", {"on_time_count": 3, "later_count": 1, "open_count": 0})], title="Prompt payment"
        )
    )
    assert root.get("aria-labelledby") == "prompt-chart-title prompt-chart-desc"
    assert root.find(f"{SVG}title").get("id") == "prompt-chart-title"
    assert root.find(f"{SVG}desc").text == "PCN U12345: Paid on time 3 payments, Paid over 30 days late 1 payment"
    bars = {r.get("data-series"): float(r.get("width")) for r in root.iter(f"{SVG}rect") if r.get("data-series")}
    assert set(bars) == {"on_time_count", "later_count"}  # nothing drawn for a zero
    assert bars["on_time_count"] == pytest.approx(3 * bars["later_count"], rel=1e-3)


def test_unmet_need_chart_draws_no_bar_for_a_hidden_small_number_and_says_why() -> None:
    root = ET.fromstring(
        unmet_need_chart(
            [
                (
                    "Loneliness, LS1",
                    {"refused_no_capacity": 10, "refused_safeguarding": "*", "refused_not_active": 0, "total": 15},
                )
            ],
            title="Unmet need",
        )
    )
    desc = root.find(f"{SVG}desc").text
    assert desc == (
        "Loneliness, LS1: Refused: no capacity 10 referrals, Refused: safeguarding * (not shown: a small number)"
    )
    bars = [r.get("data-series") for r in root.iter(f"{SVG}rect") if r.get("data-series")]
    assert bars == ["refused_no_capacity"]
    assert (
        ET.fromstring(unmet_need_chart([], title="Unmet need")).find(f"{SVG}desc").text
        == "No unmet need in this window."
    )


def test_money_is_exact() -> None:
    assert pounds(123456789) == "£1,234,567.89"
    assert pounds(-5) == "-£0.05"
    assert pence_from("50") == 5000
    assert pence_from("£1,234.5") == 123450
    assert pence_from("0.1") == 10
    assert pence_from("12.345") is None
    assert pence_from("1e3") is None
    assert pence_from("-5") is None


# --- CSRF, sessions, sign-in --------------------------------------------------------------------


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing() -> None:
    with _client() as client:
        refused = client.post("/dev/sign-in", data={"role": "finance", "pcn_id": "U12345"}, follow_redirects=False)
        assert refused.status_code == 403
        assert "This form has expired" in refused.text
        assert client.get("/", follow_redirects=False).status_code == 200  # still signed out
        _signed_in(client)
        wrong = client.post("/sign-out", data={"csrf_token": "not-the-token"}, follow_redirects=False)
        assert wrong.status_code == 403
        assert client.get("/", follow_redirects=False).headers["location"] == "/arrears"  # still signed in
        for path in (
            "/agreements",
            "/settlements",
            "/reconciliation",
            "/admin/needs",
            "/inbox/x/accept",
            "/upload-outcomes",
            "/upload-referrals",
        ):
            assert client.post(path, data={}, follow_redirects=False).status_code == 403, path


def test_the_session_cookie_is_httponly_lax_and_holds_no_readable_token() -> None:
    with _client() as client:
        token = _csrf(client.get("/dev/sign-in").text)
        answer = client.post(
            "/dev/sign-in", data={"csrf_token": token, "role": "finance", "pcn_id": "U12345"}, follow_redirects=False
        )
        cookie = answer.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie
        import base64
        import json

        payload = json.loads(base64.b64decode(client.cookies["socialrx_session"].split(".")[0] + "=="))
        assert set(payload) == {"sealed", "csrf"}
        assert "eyJ" not in payload["sealed"]  # no JWT in the clear: Fernet-encrypted


def test_production_cookies_are_secure() -> None:
    assert WebSettings(SOCIALRX_WEB_SESSION_SECRET="x" * 40).secure_cookies
    assert not WebSettings(SOCIALRX_DEV_SIGNIN=True).secure_cookies  # plain http on a development machine


def test_the_session_ends_with_its_token(monkeypatch: pytest.MonkeyPatch) -> None:
    with _client() as client:
        _signed_in(client)
        assert client.get("/", follow_redirects=False).headers["location"] == "/arrears"
        later = time.time() + 8 * 3600 + 1  # the dev token lives 8 hours
        monkeypatch.setattr(session_module.time, "time", lambda: later)
        answer = client.get("/arrears", follow_redirects=False)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/?expired=1"
        assert "Your session has ended" in client.get("/?expired=1").text


def test_signing_out_leads_home_without_saying_the_session_ended() -> None:
    with _client() as client:
        _signed_in(client)
        token = _csrf(client.get("/dev/sign-in").text)
        assert client.post("/sign-out", data={"csrf_token": token}, follow_redirects=False).status_code == 303
        client.get("/")  # the home page hands out a CSRF token: the session cookie is back, with no one in it
        answer = client.get("/arrears", follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"] == "/"


def test_dev_sign_in_is_refused_when_an_oidc_issuer_is_configured() -> None:
    with _client(
        SOCIALRX_OIDC_ISSUER="https://id.example.org/realms/socialrx",
        SOCIALRX_OIDC_CLIENT_ID="web",
        SOCIALRX_OIDC_CLIENT_SECRET="s",
    ) as client:
        assert client.get("/dev/sign-in").status_code == 404
        refused = client.post("/dev/sign-in", data={"role": "admin"}, follow_redirects=False)
        assert refused.status_code == 404
        home = client.get("/", follow_redirects=False)
        assert home.status_code == 200  # nobody signed in
        home = home.text
        assert "Development sign-in" not in home and 'href="/sign-in"' in home


def test_dev_sign_in_is_off_unless_asked_for() -> None:
    with TestClient(build(WebSettings(SOCIALRX_WEB_SESSION_SECRET="x" * 40))) as client:
        assert client.get("/dev/sign-in").status_code == 404


def test_a_session_secret_is_required_outside_development() -> None:
    with pytest.raises(ValueError, match="SOCIALRX_WEB_SESSION_SECRET is required"):
        WebSettings()


def test_dev_sign_in_refuses_bad_details_per_field() -> None:
    with _client() as client:
        token = _csrf(client.get("/dev/sign-in").text)
        answer = client.post("/dev/sign-in", data={"csrf_token": token, "role": "charity", "organisation_id": ""})
        assert answer.status_code == 400
        assert 'href="#organisation_id"' in answer.text
        answer = client.post("/dev/sign-in", data={"csrf_token": token, "role": "superuser"})
        assert answer.status_code == 400 and "Select a role" in answer.text


def test_pages_need_a_sign_in_and_the_right_role() -> None:
    with _client() as client:
        assert client.get("/inbox", follow_redirects=False).headers["location"] == "/"
        _signed_in(client, "finance")
        refused = client.get("/inbox")
        assert refused.status_code == 403 and "You cannot use this page" in refused.text
        assert client.get("/no-such-page").status_code == 404
        assert client.get("/arrears?as_of=yesterday").status_code == 400


def test_a_refused_htmx_action_replaces_the_page_content() -> None:
    with _client() as client:
        token = _csrf(client.get("/dev/sign-in").text)
        client.post("/dev/sign-in", data={"csrf_token": token, "role": "charity", "organisation_id": "org-1"})
        refused = client.post("/inbox/some-referral/accept", data={}, headers={"HX-Request": "true"})
        assert refused.status_code == 403
        assert refused.headers["HX-Retarget"] == "#maincontent" and refused.headers["HX-Reselect"] == "#maincontent"
        plain = client.post("/inbox/some-referral/accept", data={})
        assert plain.status_code == 403 and "HX-Retarget" not in plain.headers


def test_ending_an_agreement_is_offered_only_when_the_ledger_has_it() -> None:
    from socialrx_web.finance import patch_fields

    assert patch_fields({"paths": {"/agreements": {"post": {}}}}) == set()
    with_patch = {
        "paths": {
            "/agreements/{agreement_id}": {
                "patch": {
                    "requestBody": {
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AgreementChange"}}}
                    }
                }
            }
        },
        "components": {"schemas": {"AgreementChange": {"properties": {"ends_on": {}, "per_outcome_pence": {}}}}},
    }
    assert patch_fields(with_patch) == {"ends_on", "per_outcome_pence"}


def test_report_windows_refuse_bad_dates_before_calling_any_api() -> None:
    # No API is running here: a page that called one would answer 502, not 400.
    with _client() as client:
        _signed_in(client, "finance")
        for path in ("/prompt-payment", "/unmet-need"):
            answer = client.get(f"{path}?start=2026-13-01")
            assert answer.status_code == 400, path
            assert "Enter a real date for &#39;From&#39;" in answer.text and 'href="#start"' in answer.text
            answer = client.get(f"{path}?start=2026-05-01&end=2026-04-01")
            assert answer.status_code == 400 and "must be on or before" in answer.text
            assert client.get(f"{path}?end=1900-01-01").status_code == 400
        assert client.get("/prompt-payment").status_code == 502  # a good window does reach the ledger
        token = _csrf(client.get("/arrears").text)
        client.post("/sign-out", data={"csrf_token": token})
        _signed_in(client, "admin")
        assert client.get("/unmet-need?start=x").status_code == 400


def test_insight_pages_are_for_their_roles_only() -> None:
    with _client() as client:
        token = _csrf(client.get("/dev/sign-in").text)
        client.post("/dev/sign-in", data={"csrf_token": token, "role": "charity", "organisation_id": "org-1"})
        for path in ("/prompt-payment", "/unmet-need"):
            refused = client.get(path)
            assert refused.status_code == 403 and "finance officers or administrators" in refused.text, path


def test_report_window_defaults_to_the_last_twelve_months() -> None:
    from socialrx_web.insight import window

    values, errors = window("", "2026-11-26")
    assert errors == {} and values == {"start": "2025-11-26", "end": "2026-11-26"}
    assert window("2026-01-01", "2026-01-01") == ({"start": "2026-01-01", "end": "2026-01-01"}, {})


def test_late_payment_says_plainly_when_the_rate_is_not_known_and_that_nothing_is_posted() -> None:
    # An overdue payment cannot be made on the live platform without waiting for its due date, so
    # the section is rendered here from the ledger's documented answer.
    from socialrx_web.core import env
    from socialrx_web.insight import KINDS, forecast_rows

    forecast = {
        "weeks": 26,
        "as_of": "2026-11-26",
        "expected_pence": 17000,
        "beyond_horizon_pence": 0,
        "outcome_share_percent": None,
        "by_week": [
            {
                "week": 1,
                "starts_on": "2026-11-26",
                "ends_on": "2026-12-02",
                "expected_pence": 17000,
                "lines": [
                    {
                        "kind": "open_payment_moved_by_pcn_median_lateness",
                        "pcn_id": "U12345",
                        "expected_on": "2026-11-20",
                        "amount_pence": 5000,
                        "payment_id": "p1",
                    },
                    {
                        "kind": "likely_outcome_fee",
                        "pcn_id": "U12345",
                        "expected_on": "2026-12-01",
                        "amount_pence": 12000,
                        "payment_id": None,
                        "referral_count": 2,
                    },
                ],
            },
            {"week": 2, "starts_on": "2026-12-03", "ends_on": "2026-12-09", "expected_pence": 0, "lines": []},
        ],
    }
    late = {
        "as_of": "2026-11-26",
        "interest_pence": 0,
        "compensation_pence": 4000,
        "claimable_pence": 0,
        "interest_unknown_count": 1,
        "excluded": [],
        "items": [
            {
                "payment_id": "p1",
                "pcn_id": "U12345",
                "basis": "per_referral",
                "amount_pence": 5000,
                "unpaid_pence": 5000,
                "due_date": "2026-08-01",
                "days_late": 117,
                "statutory_rate_percent": None,
                "interest_pence": None,
                "compensation_pence": 4000,
                "interest_status": "unknown: an admin must add the reference rate for the half-year starting 2026-07-01",
            }
        ],
    }
    html = env.get_template("_money.html").render(
        forecast=forecast, weeks=forecast_rows(forecast), late=late, kinds=KINDS
    )
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))
    assert "Some interest cannot be worked out yet" in text and "For 1 late payment we do not yet know" in text
    assert "Not known" in text and "£40.00" in text
    assert "nothing is posted to your account or the ledger" in text
    assert "Payment due, moved by how late this PCN usually pays" in text
    assert "Likely outcome fee (accepted referrals still waiting for an outcome) (2 referrals)" in text
    assert "1 Dec 2026" in text and "£170.00" in text  # the week's and the horizon's totals
    assert text.count("Week total") == 1  # a week with nothing expected is left out
