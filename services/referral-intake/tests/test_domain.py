"""referral-intake's pure rules: NHS numbers, pseudonyms, coarse location and age, the status machine."""

from __future__ import annotations

import itertools
from datetime import date, datetime, timedelta, timezone

import pytest

from socialrx_referral_intake import domain


@pytest.mark.parametrize("number", ["9434765919", "943 476 5919", "9999999999", "9000000009", "9876543210"])
def test_valid_nhs_numbers(number: str) -> None:
    assert domain.nhs_number_problem(number) is None


@pytest.mark.parametrize(
    ("number", "problem"),
    [
        ("9434765918", "check digit"),  # one digit off
        ("943476591", "10 digits"),
        ("94347659190", "10 digits"),
        ("94347659a9", "10 digits"),
        ("\u0669\u0664\u0663\u0664\u0667\u0666\u0665\u0669\u0661\u0669", "10 digits"),  # Arabic-Indic 9434765919
        ("\uff19\uff14\uff13\uff14\uff17\uff16\uff15\uff19\uff11\uff19", "10 digits"),  # full-width 9434765919
        ("", "10 digits"),
    ],
)
def test_invalid_nhs_numbers(number: str, problem: str) -> None:
    assert problem in (domain.nhs_number_problem(number) or "")


@pytest.mark.parametrize("last_digit", "0123456789")
def test_check_value_ten_is_never_valid(last_digit: str) -> None:
    # 100000001: 1*10 + 1*2 = 12; 12 % 11 = 1; 11 - 1 = 10, a check value no NHS number is issued with.
    assert "check digit" in domain.nhs_number_problem("100000001" + last_digit)


def test_person_ref_is_keyed_stable_and_not_the_number() -> None:
    key = b"k" * 32
    ref = domain.person_ref(key, "943 476 5919")
    assert ref == domain.person_ref(key, "9434765919")  # the same person, however typed
    assert ref != domain.person_ref(b"another key that is long enough", "9434765919")
    assert ref != domain.person_ref(key, "9999999999")
    assert len(ref) == 64 and "9434765919" not in ref


@pytest.mark.parametrize(
    ("postcode", "normalised", "district"),
    [
        ("ls14ap", "LS1 4AP", "LS1"),
        ("SW1A 1AA", "SW1A 1AA", "SW1A"),
        (" m1 1ae ", "M1 1AE", "M1"),
        ("EC1A1BB", "EC1A 1BB", "EC1A"),
        ("W1A 0AX", "W1A 0AX", "W1A"),
    ],
)
def test_postcodes(postcode: str, normalised: str, district: str) -> None:
    assert domain.normalise_postcode(postcode) == normalised
    assert domain.postcode_district(postcode) == district


@pytest.mark.parametrize("postcode", ["", "LS1", "12345", "LS1 4A", "NOPE 1", "LS1 4APP"])
def test_not_postcodes(postcode: str) -> None:
    assert domain.normalise_postcode(postcode) is None


@pytest.mark.parametrize(
    ("born", "on", "band"),
    [
        (date(2010, 6, 1), date(2026, 11, 24), "0-17"),
        (date(2008, 11, 24), date(2026, 11, 24), "18-24"),
        (date(2008, 11, 25), date(2026, 11, 24), "0-17"),
        (date(1951, 3, 14), date(2026, 11, 24), "75-84"),
        (date(1941, 11, 24), date(2026, 11, 24), "85+"),
        (date(1962, 1, 1), date(2026, 11, 24), "55-64"),
        (date(2000, 2, 29), date(2025, 2, 28), "18-24"),
    ],
)
def test_age_bands(born: date, on: date, band: str) -> None:
    assert domain.age_band(born, on) == band


def _replay(events: tuple[str, ...]) -> str:
    status = "created"
    for event in events:
        status = domain.next_status(status, event)
    return status


@pytest.mark.parametrize("order", list(itertools.permutations(["accepted", "outcome_recorded", "outcome_recorded"])))
def test_final_status_does_not_depend_on_arrival_order(order: tuple[str, ...]) -> None:
    assert _replay(order) == "outcome_recorded"


def test_declined_is_final_and_decline_after_acceptance_is_ignored() -> None:
    assert _replay(("declined", "accepted")) == "declined"
    assert _replay(("accepted", "declined")) == "accepted"
    assert _replay(("declined",)) == "declined"


def test_unknown_status_is_an_error() -> None:
    with pytest.raises(ValueError):
        domain.next_status("created", "teleported")


@pytest.mark.parametrize(
    ("service", "reason"),
    [
        (None, "unknown service"),
        ({"status": "inactive", "accepting_referrals": False}, "not active"),
        (
            {"status": "active", "accepting_referrals": False, "not_accepting_reason": "no capacity: no places free"},
            "no capacity",
        ),
        ({"status": "active", "accepting_referrals": True}, None),
    ],
)
def test_service_refusal(service, reason) -> None:
    refusal = domain.service_refusal(service)
    assert (refusal is None) if reason is None else (reason in refusal)


def test_needs_must_be_in_the_taxonomy_and_served_by_the_service() -> None:
    served = ["loneliness", "physical-activity"]
    assert domain.needs_problem(["loneliness"], served, set()) is None
    assert "not in the directory's needs taxonomy" in domain.needs_problem(["made-up"], served, {"housing"})
    refused = domain.needs_problem(["housing", "loneliness"], served, {"housing"})
    assert "does not serve 'housing'" in refused and "'loneliness'" in refused


def test_consent_in_the_future_is_refused_beyond_clock_skew() -> None:
    now = datetime(2026, 11, 26, 10, 0, tzinfo=timezone.utc)
    assert domain.consent_problem(now - timedelta(days=3), now) is None
    assert domain.consent_problem(now + timedelta(minutes=4), now) is None  # a device clock a little fast
    assert "in the future" in domain.consent_problem(now + timedelta(minutes=6), now)
    assert "in the future" in domain.consent_problem(now + timedelta(days=1), now)


def test_refusal_reason_names_the_services_first_obstacle() -> None:
    from datetime import date

    from socialrx_referral_intake.domain import refusal_reason

    today = date(2026, 11, 26)
    ok = {"status": "active", "safeguarding_policy_valid_until": date(2030, 1, 1), "capacity_available": 0}
    assert refusal_reason(ok, today) == "no_capacity"
    assert refusal_reason(ok | {"status": "inactive"}, today) == "not_active"
    assert refusal_reason(ok | {"safeguarding_policy_valid_until": None}, today) == "safeguarding_policy_missing"
    assert (
        refusal_reason(ok | {"safeguarding_policy_valid_until": date(2026, 11, 25)}, today)
        == "safeguarding_policy_expired"
    )
    assert refusal_reason(ok | {"capacity_available": 3}, today) == "not_accepting"
