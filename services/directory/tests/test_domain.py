"""The directory's pure rules."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from datetime import date, datetime, timedelta, timezone

import pytest

from socialrx_directory import domain


def test_page_envelope_edges() -> None:
    assert domain.page_envelope(0, 1, 10, 0) == {
        "total_items": 0,
        "total_pages": 0,
        "page_number": 1,
        "size": 0,
        "first_page": True,
        "last_page": True,
        "empty": True,
    }
    exact = domain.page_envelope(20, 2, 10, 10)
    assert (exact["total_pages"], exact["first_page"], exact["last_page"]) == (2, False, True)
    beyond = domain.page_envelope(20, 3, 10, 0)
    assert beyond["empty"] and beyond["last_page"]
    assert domain.page_envelope(21, 2, 10, 10)["last_page"] is False


def test_safeguarding_valid_through_its_last_day() -> None:
    today = date(2026, 6, 1)
    assert domain.gate("active", 1, today, today).accepting_referrals
    expired = domain.gate("active", 1, today - timedelta(days=1), today)
    assert not expired.accepting_referrals and "expired" in expired.reason


def test_auto_decline_boundary_is_fourteen_days() -> None:
    referred = datetime(2026, 1, 1, 9, tzinfo=timezone.utc)
    assert not domain.overdue(referred, referred + timedelta(days=14) - timedelta(seconds=1))
    assert domain.overdue(referred, referred + timedelta(days=14))


def test_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    expected = hmac.new(b"k", b"1700000000.{}", hashlib.sha256).hexdigest()
    assert domain.signature("k", "1700000000", b"{}") == expected
    assert domain.signature("k", "1700000001", b"{}") != expected


def test_retry_delay_doubles_up_to_the_cap() -> None:
    assert [domain.retry_delay_s(n, 10, 50) for n in (1, 2, 3, 4)] == [10, 20, 40, 50]


def test_referral_stats_counts_no_response_against_rate_but_not_reply_time() -> None:
    decisions = (
        [domain.Decision("accepted", None, 3600)] * 6
        + [domain.Decision("finished", None, 7200)] * 6
        + [domain.Decision("declined", "not_eligible", 10800)] * 10
        + [domain.Decision("declined", "no_response", 14 * 86400)] * 2
    )
    stats = domain.referral_stats(decisions, pending=20)
    assert (stats["decided"], stats["accepted"], stats["declined"], stats["pending"]) == (25, 10, 10, 20)
    assert stats["acceptance_rate"] == 0.4  # from the shown counts, not the exact 12/24
    assert stats["median_reply_hours"] == 2.0  # the two no_response declines are left out
    assert domain.referral_stats([], 0)["acceptance_rate"] is None


def test_referral_stats_hide_small_numbers_and_what_would_give_them_back() -> None:
    stats = domain.referral_stats(
        [domain.Decision("accepted", None, 60)] * 30 + [domain.Decision("declined", "other", 60)] * 3, pending=1
    )
    # 3 declines hidden; accepted = decided - declined would give them back, so accepted is hidden too.
    assert (stats["decided"], stats["accepted"], stats["declined"], stats["pending"]) == (35, "*", "*", "*")
    assert stats["acceptance_rate"] is None
    few = domain.referral_stats([domain.Decision("declined", "no_response", 60)], pending=0)
    assert few["decided"] == "*" and few["acceptance_rate"] is None and few["median_reply_hours"] is None


def test_slug_and_outward_code() -> None:
    assert domain.slug("Money & Debt!") == "money-debt"
    assert domain.outward_code("sw1a 1aa") == "SW1A"


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.1",
        "0x7f000001",
        "2130706433",
        "0177.0.0.1",
        "[::1]",
        "::1",
        "0.0.0.0",
        "10.0.0.5",
        "172.16.3.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "224.0.0.1",
        "240.0.0.1",
        "[::ffff:127.0.0.1]",
        "[fe80::1]",
        "[fc00::1]",
        "localhost",
        "db.localhost",
        "postgres",
        "kafka",
        "directory.socialrx.svc.cluster.local",
        "metadata.google.internal",
        "printer.local",
    ],
)
def test_webhook_hosts_inside_a_network_are_refused(host: str) -> None:
    assert domain.host_refusal(host), host


@pytest.mark.parametrize("host", ["example.org", "hooks.charity.org.uk", "93.184.215.14", "[2606:4700::1111]"])
def test_public_webhook_hosts_pass_the_form_check(host: str) -> None:
    assert domain.host_refusal(host) is None


def test_every_non_public_address_kind_is_refused() -> None:
    for address in (
        "127.0.0.1",
        "::1",
        "10.1.2.3",
        "fd00::1",
        "169.254.1.1",
        "ff02::1",
        "::",
        "255.255.255.255",
        "::ffff:10.0.0.1",
        "198.18.0.1",
    ):
        assert domain.address_refusal(ipaddress.ip_address(address)), address
    assert domain.address_refusal(ipaddress.ip_address("1.1.1.1")) is None


def test_a_referral_moves_through_the_inbox_by_one_rule() -> None:
    from socialrx_directory.domain import DecisionConflict, auto_decline_at, inbox_status

    assert inbox_status(None, "referred") == "received"
    assert inbox_status("accepted", "referred") == "accepted"  # a redelivered referral keeps its status
    assert inbox_status("received", "accepted") == "accepted"
    assert inbox_status("received", "declined") == "declined"
    assert inbox_status("accepted", "ended") == "finished"
    assert inbox_status("declined", "ended") == "declined"  # never accepted: no place to give back
    for decided in ("accepted", "declined", "finished"):
        with pytest.raises(DecisionConflict, match=f"already {decided}"):
            inbox_status(decided, "accepted")  # type: ignore[arg-type]
    referred_at = datetime(2026, 11, 1, tzinfo=timezone.utc)
    assert auto_decline_at("received", referred_at) == datetime(2026, 11, 15, tzinfo=timezone.utc)
    assert auto_decline_at("accepted", referred_at) is None
