"""The directory's pure rules."""

from __future__ import annotations

import hashlib
import hmac
from datetime import date, datetime, timedelta, timezone

from socialrx_directory import domain


def test_page_envelope_edges() -> None:
    assert domain.page_envelope(0, 1, 10, 0) == {"total_items": 0, "total_pages": 0, "page_number": 1, "size": 0,
                                                 "first_page": True, "last_page": True, "empty": True}
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
    stats = domain.referral_stats([
        domain.Decision("accepted", None, 3600), domain.Decision("finished", None, 7200),
        domain.Decision("declined", "not_eligible", 10800), domain.Decision("declined", "no_response", 14 * 86400),
    ], pending=2)
    assert stats["acceptance_rate"] == 0.5
    assert stats["median_reply_hours"] == 2.0
    assert (stats["decided"], stats["pending"]) == (4, 2)
    assert domain.referral_stats([], 0)["acceptance_rate"] is None


def test_slug_and_outward_code() -> None:
    assert domain.slug("Money & Debt!") == "money-debt"
    assert domain.outward_code("sw1a 1aa") == "SW1A"
