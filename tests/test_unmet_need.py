"""Unmet need across services: referral-intake publishes `referral.refused` when it refuses a referral
for the service's sake; the directory counts it with declines for no capacity, under the small-number rule."""

from __future__ import annotations

import dataclasses
import uuid

import httpx
import pytest
from support import PERSON, events_on, eventually_status, make_world, refer, referral_body

from socialrx_harness.testing import auth, wait_for
from socialrx_shared import events as ev
from socialrx_shared.disclosure import SUPPRESSED


@pytest.fixture
async def client():
    async with httpx.AsyncClient(timeout=15) as http:
        yield http


async def test_refusals_and_capacity_declines_are_counted_as_unmet_need(platform, kafka, jwt_secret, client) -> None:
    pcn = "Q" + uuid.uuid4().hex[:8].upper()  # a PCN of its own: its finance officer sees only this test's figures
    link_worker = auth(jwt_secret, "link_worker", pcn_id=pcn, practice_id="B82005")
    full = dataclasses.replace(make_world(platform, jwt_secret, capacity=0), link_worker=link_worker)
    expired = dataclasses.replace(make_world(platform, jwt_secret, safeguarding="2020-01-01"), link_worker=link_worker)
    open_world = dataclasses.replace(make_world(platform, jwt_secret), link_worker=link_worker)
    referrals = full.url("referral-intake", "/referrals")

    # Wait until intake knows the full service; that first refusal counts too.
    await eventually_status(
        client, ("POST", referrals), link_worker, 409, referral_body(full.service_id), what="refusal for no capacity"
    )
    for _ in range(10):
        answer = await client.post(referrals, headers=link_worker, json=referral_body(full.service_id))
        assert answer.status_code == 409 and "no capacity" in answer.json()["detail"]
    # The same request retried with its Idempotency-Key is one refusal, not two.
    keyed = {**link_worker, "Idempotency-Key": "retry-" + uuid.uuid4().hex}
    for _ in range(2):
        assert (await client.post(referrals, headers=keyed, json=referral_body(full.service_id))).status_code == 409
    await eventually_status(
        client,
        ("POST", referrals),
        link_worker,
        409,
        referral_body(expired.service_id),
        what="refusal for safeguarding",
    )
    rid = (await refer(client, open_world))["id"]
    await eventually_status(
        client,
        ("POST", open_world.url("directory", f"/referrals/{rid}/decline")),
        open_world.charity,
        200,
        {"reason": "no_capacity"},
    )

    # The events carry need codes, district, age band, service and reason: nothing about the person.
    refusals = [e for e, _ in await events_on(kafka.bootstrap_servers, ev.REFERRAL_REFUSED.topic, pcn_id=pcn)]
    assert len(refusals) == 14
    assert {e.data["reason"] for e in refusals} == {"no_capacity", "safeguarding_policy_expired"}
    # Keyed by service, so the two services' refusals sit on different partitions: read them by key,
    # not by their place in the list.
    by_service = {e.subject: e for e in refusals}
    assert set(by_service) == {full.service_id, expired.service_id}
    for refused in by_service.values():
        assert set(refused.data) == set(ev.ReferralRefused.model_fields)
        assert (refused.data["postcode_district"], refused.data["age_band"]) == ("LS1", "75-84")
    assert by_service[full.service_id].data["reason"] == "no_capacity"
    assert by_service[expired.service_id].data["reason"] == "safeguarding_policy_expired"
    text = " ".join(e.model_dump_json() for e in refusals)
    for secret in (
        PERSON["nhs_number"],
        PERSON["given_name"],
        PERSON["family_name"],
        PERSON["date_of_birth"],
        PERSON["postcode"],
        PERSON["phone"],
        PERSON["email"],
    ):
        assert secret not in text

    finance = auth(jwt_secret, "finance", pcn_id=pcn)
    unmet = full.url("directory", "/reports/unmet-need")

    async def counted():
        answer = await client.get(unmet, headers=finance)
        assert answer.status_code == 200, answer.text
        rows = {(r["need"], r["postcode_district"]): r for r in answer.json()["items"]}
        row = rows.get(("loneliness", "LS1"))
        return row if row and row["total"] == 15 and row["declined_no_capacity"] == SUPPRESSED else None

    row = await wait_for(counted, what="the refusals and the decline counted")
    # 12 refusals for capacity (the keyed retry once: 13 would show 15), 1 for safeguarding, 1 decline.
    # 12 -> 10; the two 1s hidden (1-7); total 14 -> 15.
    assert (row["refused_no_capacity"], row["refused_safeguarding"], row["refused_not_active"]) == (10, SUPPRESSED, 0)
    gaps = {s["service_id"]: s["reason"] for s in row["services_not_taking_referrals"]}
    assert gaps[full.service_id].startswith("no capacity") and "safeguarding policy expired" in gaps[expired.service_id]
    assert open_world.service_id not in gaps

    other = await client.get(unmet, headers=auth(jwt_secret, "finance", pcn_id="Y" + uuid.uuid4().hex[:8].upper()))
    assert other.status_code == 200 and other.json()["items"] == []
    admin = await client.get(unmet + "?from=2026-01-01", headers=full.admin)
    assert admin.status_code == 200 and any(r["need"] == "loneliness" for r in admin.json()["items"])
    for bad in ("from=2026-12-01&to=2026-11-01", "to=9999-12-31", "from=yesterday"):
        refused = await client.get(f"{unmet}?{bad}", headers=finance)
        assert refused.status_code == 422, refused.text
    assert (await client.get(unmet, headers=full.charity)).status_code == 403
    assert (await client.get(unmet, headers=link_worker)).status_code == 403
