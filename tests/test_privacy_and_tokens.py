"""Nothing identifying on the bus or in the logs; bad tokens refused; contact details audited."""

from __future__ import annotations

import base64
import json
import time
import uuid

import httpx
import jwt
import pytest
from support import PCN, PERSON, eventually_status, make_world, refer

from socialrx_harness.testing import auth, read_topic, wait_for
from socialrx_shared.events import ALL_DLQ_TOPICS, ALL_TOPICS

SECRETS_IN_PERSON = [
    PERSON["nhs_number"],
    "943 476 5919",
    PERSON["given_name"],
    PERSON["family_name"],
    PERSON["date_of_birth"],
    PERSON["postcode"],
    "LS14AP",
    PERSON["phone"],
    "07700900123",
    PERSON["email"],
]


@pytest.fixture
async def client():
    async with httpx.AsyncClient(timeout=15) as http:
        yield http


@pytest.fixture
async def lifecycle(platform, jwt_secret, client):
    """One referral all the way through, with the contact details read by the accepting charity."""
    world = make_world(platform, jwt_secret)
    rid = (await refer(client, world))["id"]
    await eventually_status(client, ("POST", world.url("directory", f"/referrals/{rid}/accept")), world.charity, 200)
    contact = await eventually_status(
        client,
        ("GET", world.url("referral-intake", f"/referrals/{rid}/contact")),
        world.charity,
        200,
        what="contact details after acceptance",
    )
    await eventually_status(
        client,
        ("POST", world.url("outcomes", f"/referrals/{rid}/outcomes")),
        world.charity,
        201,
        {
            "status": "completed",
            "sessions_attended": 5,
            "measures": [{"instrument": "WEMWBS", "phase": "baseline", "answers": [3] * 14}],
        },
    )

    async def done():
        body = (await client.get(world.url("referral-intake", f"/referrals/{rid}"), headers=world.link_worker)).json()
        return body["status"] == "outcome_recorded"

    await wait_for(done, what="the lifecycle to finish")
    return world, rid, contact.json()


async def test_no_message_on_any_topic_carries_the_persons_details(lifecycle, kafka) -> None:
    _world, rid, _ = lifecycle
    seen_referral = False
    for topic in (*ALL_TOPICS, *ALL_DLQ_TOPICS):
        for record in await read_topic(kafka.bootstrap_servers, topic, timeout_s=15):
            blob = (record.value or b"") + (record.key or b"") + b"".join(v for _, v in record.headers or [])
            text = blob.decode(errors="replace")
            seen_referral |= rid in text
            for secret in SECRETS_IN_PERSON:
                assert secret not in text, f"{secret!r} found on {topic}"
    assert seen_referral  # the scan did read this referral's events


async def test_logs_hold_no_personal_details_or_tokens(lifecycle, platform) -> None:
    world, _rid, _ = lifecycle
    tokens = [
        world.charity["Authorization"].split()[1],
        world.link_worker["Authorization"].split()[1],
        world.finance["Authorization"].split()[1],
        world.admin["Authorization"].split()[1],
    ]
    for process in platform.services.values():
        text = process.log_path.read_text(errors="replace")
        assert text, f"{process.service} wrote no log"
        for secret in SECRETS_IN_PERSON + tokens:
            assert secret not in text, f"{secret[:12]}... found in {process.service}'s log"


async def test_contact_details_only_for_the_accepting_charity_and_every_read_audited(
    lifecycle, platform, jwt_secret, client
) -> None:
    world, rid, contact = lifecycle
    assert contact["given_name"] == PERSON["given_name"] and contact["phone"] == PERSON["phone"]
    url = world.url("referral-intake", f"/referrals/{rid}/contact")
    other_charity = auth(jwt_secret, "charity", organisation_id="org-" + uuid.uuid4().hex[:6])
    assert (await client.get(url, headers=other_charity)).status_code == 404
    assert (await client.get(url, headers=world.link_worker)).status_code == 403
    assert (await client.get(url)).status_code == 401
    audit = await client.get(
        world.url("referral-intake", f"/audit/contact-access?referral_id={rid}"), headers=world.admin
    )
    assert audit.status_code == 200
    [entry] = audit.json()["items"]
    assert entry["referral_id"] == rid and entry["organisation_id"] == world.organisation_id and entry["sub"]
    assert (
        await client.get(world.url("referral-intake", "/audit/contact-access"), headers=world.charity)
    ).status_code == 403


async def test_contact_details_refused_before_acceptance(platform, jwt_secret, client) -> None:
    world = make_world(platform, jwt_secret)
    rid = (await refer(client, world))["id"]
    refused = await client.get(world.url("referral-intake", f"/referrals/{rid}/contact"), headers=world.charity)
    assert refused.status_code == 403 and "after your organisation accepted" in refused.json()["detail"]
    audit = await client.get(
        world.url("referral-intake", f"/audit/contact-access?referral_id={rid}"), headers=world.admin
    )
    assert audit.json()["items"] == []


def _b64(part: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()


def _bad_tokens(secret: str) -> dict[str, str]:
    now = int(time.time())
    good = {"sub": "lw-1", "role": "link_worker", "pcn_id": PCN, "exp": now + 600}
    return {
        "expired": jwt.encode({**good, "exp": now - 10}, secret, algorithm="HS256"),
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(good)}.",
        "wrong key": jwt.encode(good, "another secret that is long enough for hs256", algorithm="HS256"),
        "malformed": "not.a.token",
        "garbage": "x" * 40,
        "missing exp": jwt.encode({k: v for k, v in good.items() if k != "exp"}, secret, algorithm="HS256"),
        "missing sub": jwt.encode({k: v for k, v in good.items() if k != "sub"}, secret, algorithm="HS256"),
        "missing role": jwt.encode({k: v for k, v in good.items() if k != "role"}, secret, algorithm="HS256"),
        "unknown role": jwt.encode({**good, "role": "superuser"}, secret, algorithm="HS256"),
        "link worker without pcn": jwt.encode(
            {k: v for k, v in good.items() if k != "pcn_id"}, secret, algorithm="HS256"
        ),
        "charity without organisation": jwt.encode({**good, "role": "charity"}, secret, algorithm="HS256"),
        "HS512 not HS256": jwt.encode(good, secret, algorithm="HS512"),
    }


@pytest.mark.parametrize("kind", list(_bad_tokens("only-the-names-are-used-here-" * 3)))
async def test_bad_tokens_are_refused_with_401_everywhere(platform, jwt_secret, client, kind: str) -> None:
    token = _bad_tokens(jwt_secret)[kind]
    probes = {
        "referral-intake": "/referrals",
        "directory": "/inbox",
        "outcomes": "/reports/outcomes",
        "funding-ledger": "/payments",
    }
    for service, path in probes.items():
        answer = await client.get(platform.url(service) + path, headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 401, (service, kind, answer.text)
        assert token not in answer.text and jwt_secret not in answer.text
        assert answer.headers.get("www-authenticate") == "Bearer"


async def test_missing_or_non_bearer_authorization_is_401(platform, jwt_secret, client) -> None:
    url = platform.url("referral-intake") + "/referrals"
    assert (await client.get(url)).status_code == 401
    token = _bad_tokens(jwt_secret)["expired"]
    assert (await client.get(url, headers={"Authorization": f"Basic {token}"})).status_code == 401
    assert (await client.get(url, headers={"Authorization": "Bearer"})).status_code == 401
