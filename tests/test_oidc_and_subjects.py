"""Sign-in through a real OpenID provider (Keycloak, started by the harness) and link workers whose
token subject is an email or `provider|id`: accepted, pseudonymised on the bus, never a 500."""

from __future__ import annotations

import dataclasses
import json

import httpx
import pytest
from support import PCN, PRACTICE, events_on, make_world, refer, wait_for

from socialrx_harness.testing import auth, read_topic
from socialrx_shared.events import REFERRAL_CREATED


@pytest.fixture
async def client():
    async with httpx.AsyncClient(timeout=15) as http:
        yield http


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    "sub",
    [
        "ada.lovelace@nhs.example.net",
        "auth0|5f7c8ec7c33c6c004bbafe82",
        "a-very-long-subject-" + "x" * 120 + "@example.org",
    ],
)
async def test_link_worker_whose_subject_is_an_email_or_provider_id_can_refer(
    platform, jwt_secret, kafka, client, sub: str
) -> None:
    world = make_world(platform, jwt_secret)
    link_worker = auth(jwt_secret, "link_worker", sub=sub, pcn_id=PCN, practice_id=PRACTICE)
    referral = await refer(client, dataclasses.replace(world, link_worker=link_worker))
    assert referral["link_worker_id"].startswith("lw-") and sub not in json.dumps(referral)
    found = await wait_for(
        lambda: events_on(kafka.bootstrap_servers, REFERRAL_CREATED.topic, referral_id=referral["id"]),
        what="referral.created",
    )
    envelope, record = found[0]
    assert envelope.data["link_worker_id"] == referral["link_worker_id"]
    assert sub.encode() not in record.value  # the subject (personal data) never reaches Kafka
    # The same link worker keeps the same pseudonym: reports can still group by worker.
    again = await refer(client, dataclasses.replace(world, link_worker=link_worker))
    assert again["link_worker_id"] == referral["link_worker_id"]


async def test_a_claim_the_event_contract_refuses_is_a_422_not_a_500_and_changes_nothing(
    platform, jwt_secret, kafka, client
) -> None:
    world = make_world(platform, jwt_secret)
    await refer(client, world)  # the service is known to referral-intake by now
    # A PCN code the event contract refuses (lower case): validated inside the route, not at the edge.
    odd = auth(jwt_secret, "link_worker", pcn_id="u12345-lower", practice_id=PRACTICE)
    before = len(await read_topic(kafka.bootstrap_servers, REFERRAL_CREATED.topic))
    answer = await client.post(
        world.url("referral-intake", "/referrals"),
        headers=odd,
        json={
            "service_id": world.service_id,
            "needs": ["loneliness"],
            "person": {
                "nhs_number": "9434765919",
                "given_name": "Ada",
                "family_name": "X",
                "date_of_birth": "1951-03-14",
                "postcode": "LS1 4AP",
            },
            "consent": {"given": True, "recorded_at": "2026-11-01T10:00:00Z"},
        },
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"] == ["pcn_id"]
    assert "u12345-lower" not in answer.text  # refused values are not echoed
    listed = await client.get(world.url("referral-intake", "/referrals"), headers=odd)
    assert listed.json()["total"] == 0
    assert len(await read_topic(kafka.bootstrap_servers, REFERRAL_CREATED.topic)) == before


async def test_keycloak_tokens_read_payments_and_create_a_referral_end_to_end(
    platform, jwt_secret, oidc_provider, kafka, client
) -> None:
    world = make_world(platform, jwt_secret)
    oidc_provider.set_attribute("finance", "pcn_id", PCN)
    finance = _bearer(oidc_provider.password_grant("finance"))
    payments = await client.get(world.url("funding-ledger", "/payments"), headers=finance)
    assert payments.status_code == 200, payments.text
    arrears = await client.get(world.url("funding-ledger", "/arrears"), headers=finance)
    assert arrears.status_code == 200, arrears.text

    oidc_provider.set_attribute("link_worker", "pcn_id", PCN)
    oidc_provider.set_attribute("link_worker", "practice_id", PRACTICE)
    link_worker = _bearer(oidc_provider.password_grant("link_worker"))
    referral = await refer(client, dataclasses.replace(world, link_worker=link_worker))
    assert referral["pcn_id"] == PCN and referral["practice_id"] == PRACTICE
    oidc_provider.set_attribute("charity", "organisation_id", world.organisation_id)
    charity = _bearer(oidc_provider.password_grant("charity"))

    async def accepted() -> bool:
        answer = await client.post(world.url("directory", f"/referrals/{referral['id']}/accept"), headers=charity)
        return answer.status_code == 200

    await wait_for(accepted, what="the charity (signed in through Keycloak) accepting the referral")
    read = await client.get(world.url("referral-intake", f"/referrals/{referral['id']}"), headers=link_worker)
    assert read.status_code == 200
    assert read.json()["status"] in ("accepted", "created")  # the acceptance travels by event


async def test_tokens_of_another_realm_or_audience_are_refused(platform, oidc_provider, client) -> None:
    finance_user, finance_password = oidc_provider.users["finance"]
    oidc_provider.set_attribute("finance", "pcn_id", PCN)
    base = oidc_provider.issuer.rsplit("/realms/", 1)[0]
    # The same realm, another client (admin-cli: neither our audience nor our claims): not for us.
    other_client = httpx.post(
        f"{oidc_provider.issuer}/protocol/openid-connect/token",
        data={
            "grant_type": "password",
            "client_id": "admin-cli",
            "username": finance_user,
            "password": finance_password,
        },
    )
    assert other_client.status_code == 200, other_client.text
    # Another realm of the same server (master): another issuer.
    other_realm = httpx.post(
        f"{base}/realms/master/protocol/openid-connect/token",
        data={
            "grant_type": "password",
            "client_id": "admin-cli",
            "username": "admin",
            "password": oidc_provider.admin_password,
        },
    )
    assert other_realm.status_code == 200, other_realm.text
    for token, reasons in (
        (other_client.json()["access_token"], ("'aud'", "'sub'")),
        (other_realm.json()["access_token"], ("issuer",)),
    ):
        for service, path in (("funding-ledger", "/payments"), ("referral-intake", "/referrals")):
            answer = await client.get(platform.url(service) + path, headers=_bearer(token))
            assert answer.status_code == 401, (service, reasons, answer.text)
            assert any(reason in answer.json()["detail"] for reason in reasons), answer.text
