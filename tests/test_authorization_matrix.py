"""Who may do what: every endpoint of every service x every role, generated from the apps' routes.

A route without a rule here fails the test, so a new endpoint cannot ship without deciding who may
call it. Each cell checks: no token -> 401 (unless public), a role not allowed -> 403 with a message
that leaks nothing, an allowed role -> past authorisation (any answer but 401/403/5xx).
"""

from __future__ import annotations

import importlib
import re
import uuid

import httpx
import pytest
from support import PCN, eventually_status, make_world, refer

from socialrx_harness.testing import auth, wait_for
from socialrx_shared.auth import ROLES

PUBLIC = "public"
ANY = set(ROLES)
OPERATIONS = {("GET", "/healthz"): PUBLIC, ("GET", "/readyz"): PUBLIC, ("GET", "/events/schemas"): PUBLIC}

RULES: dict[str, dict[tuple[str, str], str | set[str]]] = {
    "referral-intake": {
        ("POST", "/referrals"): {"link_worker"},
        ("POST", "/referrals/bulk"): {"link_worker"},
        ("GET", "/referrals"): {"link_worker", "charity", "admin"},
        ("GET", "/referrals/{referral_id}"): {"link_worker", "charity", "admin"},
        ("GET", "/referrals/{referral_id}/contact"): {"charity"},
        ("GET", "/audit/contact-access"): {"admin"},
    },
    "directory": {
        **{
            ("GET", path): PUBLIC
            for path in (
                "/",
                "/services",
                "/services/{service_id}",
                "/service_at_locations",
                "/service_at_locations/{sal_id}",
                "/organizations",
                "/organizations/{organization_id}",
                "/taxonomies",
                "/taxonomies/{taxonomy_id}",
                "/taxonomy_terms",
                "/taxonomy_terms/{term_id}",
                "/referral-stats",
                "/asyncapi",
            )
        },
        ("POST", "/organizations"): {"admin"},
        ("POST", "/services"): {"admin", "charity"},
        ("PATCH", "/services/{service_id}"): {"admin", "charity"},
        ("POST", "/imports"): {"admin"},
        ("POST", "/taxonomy_terms"): {"admin"},
        ("GET", "/inbox"): {"charity"},
        ("POST", "/referrals/{referral_id}/accept"): {"charity"},
        ("POST", "/referrals/{referral_id}/decline"): {"charity"},
        ("GET", "/subscriptions"): {"charity"},
        ("POST", "/subscriptions"): {"charity"},
        ("DELETE", "/subscriptions/{subscription_id}"): {"charity"},
        ("GET", "/subscriptions/{subscription_id}/deliveries"): {"charity"},
        ("POST", "/subscriptions/{subscription_id}/deliveries/{delivery_id}/replay"): {"charity"},
        ("GET", "/reports/unmet-need"): {"admin", "finance"},
    },
    "outcomes": {
        ("POST", "/referrals/{referral_id}/outcomes"): {"charity", "link_worker"},
        ("GET", "/referrals/{referral_id}/outcomes"): {"charity", "link_worker", "admin"},
        ("POST", "/referrals/{referral_id}/outcomes/{outcome_id}/corrections"): {"charity", "link_worker"},
        ("GET", "/reports/outcomes"): ANY,
        ("GET", "/reports/inclusion"): ANY,
        ("POST", "/outcomes/bulk"): {"charity"},
    },
    "funding-ledger": {
        ("POST", "/agreements"): {"finance"},
        ("PATCH", "/agreements/{agreement_id}"): {"finance"},
        ("GET", "/agreements"): {"finance", "charity", "admin"},
        ("GET", "/agreements/{agreement_id}/cap"): {"finance", "charity", "admin"},
        ("GET", "/payments"): {"finance", "charity", "admin"},
        ("GET", "/arrears"): {"finance", "charity", "admin"},
        ("POST", "/settlements"): {"finance"},
        ("GET", "/settlements"): {"finance", "charity", "admin"},
        ("POST", "/block-grants"): {"finance"},
        ("GET", "/statements/{organisation_id}"): {"finance", "charity", "admin"},
        ("POST", "/reconciliation"): {"finance"},
        ("GET", "/trial-balance"): {"finance", "admin"},
        ("GET", "/reports/prompt-payment"): {"finance", "admin", "charity"},
        ("GET", "/public/prompt-payment"): PUBLIC,
        ("GET", "/late-payment/{organisation_id}"): {"charity", "finance", "admin"},
        ("GET", "/reference-rates"): PUBLIC,
        ("POST", "/reference-rates"): {"admin"},
        ("GET", "/forecast/{organisation_id}"): {"charity", "finance"},
    },
}

ORG = "org-matrix-" + uuid.uuid4().hex[:6]


def _routes(service: str) -> list[tuple[str, str]]:
    app = importlib.import_module("socialrx_" + service.replace("-", "_") + ".app").build()
    return [(method.upper(), path) for path, ops in app.openapi()["paths"].items() for method in ops]


def _rule(service: str, route: tuple[str, str]) -> str | set[str]:
    return {**OPERATIONS, **RULES[service]}[route]


def _cells() -> list[tuple[str, str, str]]:
    return [(service, method, path) for service in RULES for method, path in _routes(service)]


@pytest.fixture(scope="module", autouse=True)
def _person_ref_key(monkeypatch_module):
    monkeypatch_module.setenv("SOCIALRX_PERSON_REF_KEY", "matrix-key-only-to-build-the-app-offline")


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_every_route_has_a_rule(monkeypatch_module) -> None:
    monkeypatch_module.setenv("SOCIALRX_PERSON_REF_KEY", "matrix-key-only-to-build-the-app-offline")
    missing = [(s, m, p) for s in RULES for m, p in _routes(s) if (m, p) not in {**OPERATIONS, **RULES[s]}]
    assert missing == [], f"routes with no authorisation rule: {missing}"
    stale = [(s, r) for s in RULES for r in RULES[s] if r not in set(_routes(s))]
    assert stale == [], f"rules for routes that no longer exist: {stale}"


def _tokens(secret: str) -> dict[str | None, dict[str, str]]:
    return {
        None: {},
        "link_worker": auth(secret, "link_worker", pcn_id=PCN, practice_id="B82005"),
        "charity": auth(secret, "charity", organisation_id=ORG),
        "finance": auth(secret, "finance", pcn_id=PCN),
        "admin": auth(secret, "admin"),
    }


def _fill(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: ORG if m.group(1) == "organisation_id" else str(uuid.uuid4()), path)


async def test_authorisation_matrix(platform, jwt_secret, monkeypatch_module) -> None:
    monkeypatch_module.setenv("SOCIALRX_PERSON_REF_KEY", "matrix-key-only-to-build-the-app-offline")
    failures: list[str] = []
    async with httpx.AsyncClient(timeout=15) as client:
        for service, method, path in _cells():
            rule = _rule(service, (method, path))
            url = platform.url(service) + _fill(path)
            for role, headers in _tokens(jwt_secret).items():
                body = {} if method in ("POST", "PATCH") else None
                answer = await client.request(method, url, headers=headers, json=body)
                cell = f"{service} {method} {path} as {role or 'nobody'} -> {answer.status_code}"
                if answer.status_code >= 500:
                    failures.append(cell + " (server error)")
                elif rule == PUBLIC or (role is not None and role in rule):
                    if answer.status_code in (401, 403):
                        failures.append(cell + f" (should be allowed: {answer.text[:120]})")
                elif role is None:
                    if answer.status_code != 401:
                        failures.append(cell + " (should be 401)")
                elif answer.status_code != 403:
                    failures.append(cell + " (should be 403)")
                elif ORG in answer.text or PCN in answer.text:
                    failures.append(cell + " (the refusal leaks an identifier)")
    assert failures == [], "\n".join(failures)


# Own versus other scope, on real data: a role allowed on an endpoint still sees only its own.


async def test_scopes_keep_each_pcn_and_organisation_to_its_own(platform, jwt_secret) -> None:
    world = make_world(platform, jwt_secret)
    other_pcn_link_worker = auth(jwt_secret, "link_worker", pcn_id="Y99999", practice_id="B82005")
    other_charity = auth(jwt_secret, "charity", organisation_id="org-other-" + uuid.uuid4().hex[:6])
    other_finance = auth(jwt_secret, "finance", pcn_id="Y99999")
    async with httpx.AsyncClient(timeout=15) as client:
        rid = (await refer(client, world))["id"]
        await eventually_status(
            client, ("POST", world.url("directory", f"/referrals/{rid}/accept")), world.charity, 200
        )
        await eventually_status(
            client,
            ("POST", world.url("outcomes", f"/referrals/{rid}/outcomes")),
            world.charity,
            201,
            {"status": "engaged", "sessions_attended": 1},
        )

        async def ledgered():
            answer = await client.get(
                world.url("funding-ledger", f"/payments?referral_id={rid}"), headers=world.finance
            )
            return answer.json()["total"] == 1

        await wait_for(ledgered, what="the acceptance fee")
        referral = world.url("referral-intake", f"/referrals/{rid}")
        assert (await client.get(referral, headers=world.link_worker)).status_code == 200
        assert (await client.get(referral, headers=world.charity)).status_code == 200
        assert (await client.get(referral, headers=other_pcn_link_worker)).status_code == 404
        assert (await client.get(referral, headers=other_charity)).status_code == 404
        listed = await client.get(world.url("referral-intake", "/referrals"), headers=other_pcn_link_worker)
        assert rid not in listed.text

        assert (
            await client.post(
                world.url("directory", f"/referrals/{rid}/decline"), headers=other_charity, json={"reason": "other"}
            )
        ).status_code == 404
        inbox = await client.get(world.url("directory", "/inbox"), headers=other_charity)
        assert rid not in inbox.text

        outcome = world.url("outcomes", f"/referrals/{rid}/outcomes")
        assert (await client.get(outcome, headers=world.charity)).status_code == 200
        for stranger in (other_charity, other_pcn_link_worker):
            answer = await client.post(outcome, headers=stranger, json={"status": "completed", "sessions_attended": 2})
            assert answer.status_code in (403, 404), answer.text
            assert (await client.get(outcome, headers=stranger)).status_code in (403, 404)

        payments = world.url("funding-ledger", f"/payments?organisation_id={world.organisation_id}")
        assert (await client.get(payments, headers=world.charity)).json()["total"] == 1
        assert (await client.get(payments, headers=other_finance)).json()["total"] == 0  # another PCN owes nothing here
        assert (await client.get(payments, headers=other_charity)).status_code == 403
        statement = world.url("funding-ledger", f"/statements/{world.organisation_id}")
        assert (await client.get(statement, headers=world.charity)).status_code == 200
        assert (await client.get(statement, headers=other_charity)).status_code == 403
        arrears = world.url("funding-ledger", f"/arrears?organisation_id={world.organisation_id}")
        assert (await client.get(arrears, headers=other_charity)).status_code == 403
        report = world.url("outcomes", f"/reports/outcomes?pcn_id={PCN}")
        assert (await client.get(report, headers=world.finance)).status_code == 200
        assert (await client.get(report, headers=other_finance)).status_code == 403
