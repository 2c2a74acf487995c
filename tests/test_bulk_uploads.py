"""Bulk uploads on the real platform: a PCN's referrals (CSV or NDJSON) and a charity's outcomes (CSV).

Each line is checked like its single request; a bad line is reported with its number and stores
nothing; the good lines are stored, published and seen downstream (directory, outcomes, the
ledger); re-sending a file makes nothing twice; refusals are clear 4xx; nothing identifying on the bus.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json

import httpx
import pytest
from support import PCN, PRACTICE, World, events_on, eventually_status, make_world, wait_for

from socialrx_harness.testing import auth, read_topic
from socialrx_shared.events import ALL_TOPICS, REFERRAL_REFUSED

COLUMNS = [
    "service_id",
    "needs",
    "nhs_number",
    "given_name",
    "family_name",
    "date_of_birth",
    "postcode",
    "phone",
    "email",
    "accessibility_needs",
    "consent_given",
    "consent_recorded_at",
]
# Valid modulus-11 NHS numbers of the synthetic 999 range, used only by this module.
GOOD_NHS = ["9990000018", "9990000026", "9990000034", "9990000042"]
CSV_TYPE = {"content-type": "text/csv"}


@pytest.fixture
async def client():
    async with httpx.AsyncClient(timeout=60) as http:
        yield http


def person_row(service_id: str, n: int, **changes: str) -> dict[str, str]:
    row = {
        "service_id": service_id,
        "needs": "loneliness",
        "nhs_number": GOOD_NHS[n],
        "given_name": f"Bulkgiven{n}",
        "family_name": f"Bulkfamily{n}",
        "date_of_birth": "1960-02-0" + str(n + 1),
        "postcode": "LS6 2AB",
        "phone": "07700 900456",
        "email": f"bulk{n}@example.org",
        "accessibility_needs": "hearing loop; step-free access",
        "consent_given": "yes",
        "consent_recorded_at": "2026-11-01T10:00:00Z",
    }
    row.update(changes)
    return row


def as_csv(rows: list[dict[str, str]], columns: list[str] = COLUMNS) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


async def upload_referrals(
    client: httpx.AsyncClient, world: World, body: bytes, content_type: str = "text/csv", headers: dict | None = None
) -> httpx.Response:
    return await client.post(
        world.url("referral-intake", "/referrals/bulk"),
        content=body,
        headers={**(headers or world.link_worker), "content-type": content_type},
    )


async def service_known(client: httpx.AsyncClient, world: World) -> None:
    """referral-intake learns of the new service by `service.updated`: wait until a referral goes through."""

    async def known() -> bool:
        answer = await upload_referrals(client, world, as_csv([person_row(world.service_id, 3)]))
        return answer.status_code == 200 and answer.json()["lines"][0]["status"] != "refused"

    await wait_for(known, what="the service to reach referral-intake")


async def inbox(client: httpx.AsyncClient, world: World) -> list[dict]:
    answer = await client.get(world.url("directory", "/inbox"), headers=world.charity, params={"per_page": 100})
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]


async def test_a_mixed_referral_file_creates_the_good_lines_reports_the_bad_and_resending_makes_nothing_twice(
    platform, jwt_secret, client
) -> None:
    world = make_world(platform, jwt_secret, capacity=100)
    await service_known(client, world)  # line 4 below: GOOD_NHS[3], created here
    rows = [
        person_row(world.service_id, 0),  # line 2: good
        person_row(world.service_id, 1, nhs_number="9990000019"),  # line 3: bad check digit
        person_row(world.service_id, 1),  # line 4: good
        person_row(world.service_id, 2, consent_given="no"),  # line 5: no consent
        person_row("no-such-service", 2),  # line 6: unknown service
        person_row(world.service_id, 2, needs="gardening-on-mars"),  # line 7: need not in taxonomy
        person_row(world.service_id, 2, consent_recorded_at="yesterday"),  # line 8: not a time
        person_row(world.service_id, 0),  # line 9: line 2 again
        person_row(world.service_id, 3),  # line 10: sent before
    ]
    body = as_csv(rows) + b"only,three,cells\n" + b"\n"  # line 11: short; line 12 blank
    answer = await upload_referrals(client, world, body)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    by_line = {line["line"]: line for line in result["lines"]}
    assert sorted(by_line) == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    assert (result["created"], result["already_created"], result["refused"]) == (2, 2, 6)
    assert {n for n, line in by_line.items() if line["status"] == "created"} == {2, 4}
    assert "invalid NHS number" in by_line[3]["error"] and by_line[3]["error"].startswith("person.nhs_number")
    assert "consent.given must be true" in by_line[5]["error"]
    assert "unknown service" in by_line[6]["error"]
    assert "not in the directory's needs taxonomy" in by_line[7]["error"]
    assert by_line[8]["error"].startswith("consent.recorded_at")
    assert by_line[9] == {
        "line": 9,
        "status": "already_created",
        "referral_id": by_line[2]["referral_id"],
        "error": None,
    }
    assert by_line[10]["status"] == "already_created"
    assert "has 3 cells" in by_line[11]["error"]
    for line in result["lines"]:  # nothing the caller sent is echoed (but need codes, [a-z0-9-] only)
        assert not line["error"] or not any(
            secret in line["error"] for secret in ("Bulkgiven", "9990000019", "yesterday")
        )
    created = [by_line[2]["referral_id"], by_line[4]["referral_id"]]

    # Seen downstream: the directory's inbox has exactly the created referrals (and the one made while
    # waiting for the service), outcomes knows them; nothing of a refused line is anywhere.
    async def in_inbox() -> list[dict] | None:
        items = await inbox(client, world)
        return items if len(items) == 3 else None

    items = await wait_for(in_inbox, what="the referrals in the charity's inbox")
    assert set(created) <= {item["referral_id"] for item in items}
    for rid in created:
        await eventually_status(
            client,
            ("GET", world.url("outcomes", f"/referrals/{rid}/outcomes")),
            world.charity,
            200,
            what="outcomes to know the referral",
        )
        mine = await client.get(world.url("referral-intake", f"/referrals/{rid}"), headers=world.link_worker)
        assert mine.status_code == 200 and mine.json()["pcn_id"] == PCN and mine.json()["practice_id"] == PRACTICE
        assert mine.json()["needs"] == ["loneliness"]

    # The same file again (a volunteer fixing a line and re-sending the lot): nothing is made twice.
    again = await upload_referrals(client, world, body)
    assert again.status_code == 200
    assert (again.json()["created"], again.json()["already_created"], again.json()["refused"]) == (0, 4, 6)
    assert {line["line"]: line.get("referral_id") for line in again.json()["lines"] if line["status"] != "refused"} == {
        n: line["referral_id"] for n, line in by_line.items() if line["status"] != "refused"
    }
    # The same referrals as NDJSON: the same lines, so the same referrals.
    ndjson = "\n".join(
        json.dumps(
            {
                "service_id": world.service_id,
                "needs": ["loneliness"],
                "person": {
                    "nhs_number": r["nhs_number"],
                    "given_name": r["given_name"],
                    "family_name": r["family_name"],
                    "date_of_birth": r["date_of_birth"],
                    "postcode": r["postcode"],
                    "phone": r["phone"],
                    "email": r["email"],
                    "accessibility_needs": ["hearing loop", "step-free access"],
                },
                "consent": {"given": True, "recorded_at": r["consent_recorded_at"]},
            }
        )
        for r in (rows[0], rows[2])
    )
    as_ndjson = await upload_referrals(client, world, ndjson.encode(), "application/x-ndjson")
    assert as_ndjson.status_code == 200, as_ndjson.text
    assert [(line["status"], line["referral_id"]) for line in as_ndjson.json()["lines"]] == [
        ("already_created", created[0]),
        ("already_created", created[1]),
    ]
    await _settled_inbox(client, world, 3)


async def _settled_inbox(client: httpx.AsyncClient, world: World, expected: int) -> None:
    # Give a duplicate event time to arrive, then count: still exactly `expected`.
    for _ in range(20):
        assert len(await inbox(client, world)) == expected
        await asyncio.sleep(0.1)


async def test_bulk_referrals_publish_nothing_identifying_and_an_ndjson_line_error_names_its_line(
    platform, jwt_secret, client, kafka
) -> None:
    world = make_world(platform, jwt_secret)
    await service_known(client, world)
    good = {
        "service_id": world.service_id,
        "needs": ["loneliness"],
        "person": {
            "nhs_number": GOOD_NHS[2],
            "given_name": "Privatename",
            "family_name": "Secretfamily",
            "date_of_birth": "1944-07-30",
            "postcode": "LS7 3QT",
            "email": "private.person@example.org",
        },
        "consent": {"given": True, "recorded_at": "2026-11-02T09:00:00Z"},
    }
    nul = {**good, "person": {**good["person"], "given_name": "Nul\x00name"}}
    body = "\n".join(
        [json.dumps(good), "{not json", "[1, 2]", json.dumps({**good, "extra": 1}), json.dumps(nul)]
    ).encode()
    answer = await upload_referrals(client, world, body, "application/x-ndjson")
    assert answer.status_code == 200, answer.text
    lines = answer.json()["lines"]
    assert [(line["line"], line["status"]) for line in lines] == [
        (1, "created"),
        (2, "refused"),
        (3, "refused"),
        (4, "refused"),
        (5, "refused"),
    ]
    assert lines[1]["error"].startswith("not a JSON object")
    assert lines[3]["error"].startswith("extra: ")
    assert lines[4]["error"] == "must not contain the NUL character (U+0000)"
    rid = lines[0]["referral_id"]
    await eventually_status(client, ("GET", world.url("outcomes", f"/referrals/{rid}/outcomes")), world.charity, 200)
    seen = False
    for topic in ALL_TOPICS:
        for record in await read_topic(kafka.bootstrap_servers, topic, timeout_s=15):
            text = ((record.value or b"") + (record.key or b"")).decode(errors="replace")
            seen |= rid in text
            for secret in (GOOD_NHS[2], "Privatename", "Secretfamily", "1944-07-30", "LS7 3QT", "private.person"):
                assert secret not in text, f"{secret!r} found on {topic}"
    assert seen


async def test_a_line_refused_for_the_services_sake_counts_as_unmet_need_once(
    platform, jwt_secret, client, kafka
) -> None:
    world = make_world(platform, jwt_secret, capacity=0)
    body = as_csv([person_row(world.service_id, 1), person_row(world.service_id, 2, needs="loneliness;debt")])

    async def refused_by_service() -> dict | None:
        answer = (await upload_referrals(client, world, body)).json()
        return answer if "not accepting" in (answer["lines"][0]["error"] or "") else None

    first = await wait_for(refused_by_service, what="the full service to reach referral-intake")
    assert [(line["line"], line["status"]) for line in first["lines"]] == [(2, "refused"), (3, "refused")]
    await upload_referrals(client, world, body)  # the same file again

    async def refusals() -> list | None:
        found = await events_on(kafka.bootstrap_servers, REFERRAL_REFUSED.topic, service_id=world.service_id)
        return found if len({envelope.data["refusal_id"] for envelope, _ in found}) == 2 else None

    found = await wait_for(refusals, what="the refusals on the topic")
    # Two lines, each counted once however often it is sent; only the needs the service serves count.
    assert len({envelope.data["refusal_id"] for envelope, _ in found}) == 2
    assert {tuple(envelope.data["needs"]) for envelope, _ in found} == {("loneliness",)}
    assert (await client.get(world.url("directory", "/inbox"), headers=world.charity)).json()["total"] == 0


async def test_bulk_referral_refusals(platform, jwt_secret, client) -> None:
    world = make_world(platform, jwt_secret, fund=False)
    url = world.url("referral-intake", "/referrals/bulk")
    one = as_csv([person_row(world.service_id, 0)])
    for role, claims in (
        ("charity", {"organisation_id": world.organisation_id}),
        ("admin", {}),
        ("finance", {"pcn_id": PCN}),
    ):
        refused = await client.post(url, content=one, headers={**auth(jwt_secret, role, **claims), **CSV_TYPE})
        assert refused.status_code == 403, (role, refused.text)
    cases = [
        ("application/json", b'{"service_id": "x"}', 415, "text/csv or application/x-ndjson"),
        ("text/plain", one, 415, "text/csv"),
        ("text/csv", b"", 422, "no referrals"),
        ("text/csv", ",".join(COLUMNS).encode() + b"\n", 422, "no referrals"),
        ("text/csv", b'=HYPERLINK("http://evil"),needs\nx,y\n', 422, "column 1 of the header is not one we know"),
        ("text/csv", b"service_id,needs\nx,y\n", 422, "lacks the column(s) nhs_number"),
        ("text/csv", "\u00e9".encode("latin-1") + b",x\n", 422, "not UTF-8"),
        ("text/csv", as_csv([person_row(world.service_id, 0)] * 20_001), 413, "at most 20,000"),
        ("text/csv", b"x" * 12_000_001, 413, "larger than"),
    ]
    for content_type, body, status, message in cases:
        refused = await client.post(url, content=body, headers={**world.link_worker, "content-type": content_type})
        assert refused.status_code == status, (content_type, body[:40], refused.text)
        assert message in refused.text
        assert "evil" not in refused.text
    # Nothing was made by any of them.
    listed = await client.get(world.url("directory", "/inbox"), headers=world.charity)
    assert listed.json()["total"] == 0


# --- Outcomes ------------------------------------------------------------------------------------

OUTCOME_COLUMNS = [
    "referral_id",
    "status",
    "sessions_attended",
    "swemwbs_baseline",
    "swemwbs_follow_up",
    "ons4_baseline",
]


def outcome_csv(rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(OUTCOME_COLUMNS)
    writer.writerows(rows)
    return out.getvalue().encode()


async def _referrals_for(client: httpx.AsyncClient, world: World, count: int) -> list[str]:
    await service_known(client, world)
    rows = [
        person_row(world.service_id, 0, nhs_number=nhs, given_name=f"Outcomeperson{i}")
        for i, nhs in enumerate(["9990000050", "9990000069", "9990000077", "9990000085"][:count])
    ]
    answer = await upload_referrals(client, world, as_csv(rows))
    assert answer.json()["created"] == count, answer.text
    return [line["referral_id"] for line in answer.json()["lines"]]


async def test_a_mixed_outcome_file_records_the_good_rows_ledgers_them_and_resending_makes_nothing_twice(
    platform, jwt_secret, client
) -> None:
    world = make_world(platform, jwt_secret, capacity=100)
    other = make_world(platform, jwt_secret, capacity=100)
    accepted = await _referrals_for(client, world, 4)
    not_accepted = accepted.pop()
    others = await _referrals_for(client, other, 1)
    for rid in accepted:
        await eventually_status(
            client, ("POST", world.url("directory", f"/referrals/{rid}/accept")), world.charity, 200
        )
    await eventually_status(
        client, ("POST", other.url("directory", f"/referrals/{others[0]}/accept")), other.charity, 200
    )
    for rid in [*accepted, not_accepted]:  # outcomes has heard of every decision (or the referral, at least)
        await eventually_status(
            client, ("GET", world.url("outcomes", f"/referrals/{rid}/outcomes")), world.charity, 200
        )

    async def decided() -> bool:
        statuses = [
            (await client.get(world.url("outcomes", f"/referrals/{rid}/outcomes"), headers=world.charity)).json()[
                "referral_status"
            ]
            for rid in accepted
        ]
        return statuses == ["accepted"] * 3

    await wait_for(decided, what="the acceptances to reach outcomes")
    a, b, c = accepted
    body = outcome_csv(
        [
            [a, "completed", "6", "3 3 3 3 3 3 3", "", ""],  # row 2: good, with a baseline
            [b, "Engaged", "2", "", "", "5 6 7 8"],  # row 3: good (status in any case), ONS4
            [c, "completed", "4", "3 3 3", "", ""],  # row 4: too few answers
            [c, "finished", "4", "", "", ""],  # row 5: not a status
            [not_accepted, "completed", "1", "", "", ""],  # row 6: not accepted
            [others[0], "completed", "1", "", "", ""],  # row 7: another charity's referral
            ['=HYPERLINK("http://evil.example","x")', "completed", "1", "", "", ""],  # row 8: a formula
            [a, "completed", "6", "4 4 4 4 4 4 4", "", ""],  # row 9: a second SWEMWBS baseline
            [c, "completed", "many", "", "", ""],  # row 10: not a number
            [c, "completed", "3", "", "4 4 4 4 4 4 4", ""],  # row 11: good, follow-up only
        ]
    )
    answer = await client.post(
        world.url("outcomes", "/outcomes/bulk"), content=body, headers={**world.charity, **CSV_TYPE}
    )
    assert answer.status_code == 200, answer.text
    result = answer.json()
    by_line = {line["line"]: line for line in result["lines"]}
    assert (result["recorded"], result["already_recorded"], result["refused"]) == (3, 0, 7)
    assert {n for n, line in by_line.items() if line["status"] == "recorded"} == {2, 3, 11}
    assert by_line[4]["error"].startswith("measures[0]:")
    assert by_line[5]["error"].startswith("status:")
    assert "only for accepted referrals" in by_line[6]["error"]
    assert "not sent to your organisation" in by_line[7]["error"]
    assert "not a referral id" in by_line[8]["error"] and by_line[8]["referral_id"] is None
    assert "SWEMWBS baseline is already recorded" in by_line[9]["error"] and "row 2" in by_line[9]["error"]
    assert by_line[10]["error"].startswith("sessions_attended:")
    assert "evil" not in answer.text

    # Stored and scored as the single recording does; nothing from a refused row.
    listed = (await client.get(world.url("outcomes", f"/referrals/{a}/outcomes"), headers=world.charity)).json()
    assert [
        (i["status"], [(m["instrument"], m["phase"], m["score"]) for m in i["measures"]]) for i in listed["items"]
    ] == [("completed", [("SWEMWBS", "baseline", 19.25)])]
    for rid in (c, not_accepted):
        items = (await client.get(world.url("outcomes", f"/referrals/{rid}/outcomes"), headers=world.charity)).json()
        assert len(items["items"]) == (1 if rid == c else 0)
    other_items = (
        await client.get(other.url("outcomes", f"/referrals/{others[0]}/outcomes"), headers=other.charity)
    ).json()["items"]
    assert other_items == []

    # Downstream: the ledger accrues an outcome fee for each recorded outcome that qualifies
    # (completed/engaged by the default agreement), and referral-intake shows the status.
    async def fees() -> list[dict] | None:
        paid = (
            await client.get(world.url("funding-ledger", "/payments"), headers=world.charity, params={"per_page": 100})
        ).json()["items"]
        outcome_fees = [p for p in paid if p["basis"] == "outcome_recorded"]
        return outcome_fees if {p["referral_id"] for p in outcome_fees} == {a, c} else None

    # `engaged` (row 3) earns no fee under the agreement: completed ones do.
    outcome_fees = await wait_for(fees, timeout_s=60, what="the ledger to accrue the outcome fees")
    assert len(outcome_fees) == 2
    await eventually_status(client, ("GET", world.url("referral-intake", f"/referrals/{a}")), world.link_worker, 200)

    async def intake_saw() -> bool:
        got = await client.get(world.url("referral-intake", f"/referrals/{a}"), headers=world.link_worker)
        return got.json()["status"] == "outcome_recorded"

    await wait_for(intake_saw, what="referral-intake to see the outcome")

    # The same file again: nothing recorded twice, no second fee.
    again = await client.post(
        world.url("outcomes", "/outcomes/bulk"), content=body, headers={**world.charity, **CSV_TYPE}
    )
    assert (again.json()["recorded"], again.json()["already_recorded"], again.json()["refused"]) == (0, 3, 7)
    assert [line.get("outcome_id") for line in again.json()["lines"] if line["status"] == "already_recorded"] == [
        by_line[n]["outcome_id"] for n in (2, 3, 11)
    ]
    for _ in range(10):
        paid = (
            await client.get(world.url("funding-ledger", "/payments"), headers=world.charity, params={"per_page": 100})
        ).json()["items"]
        assert len([p for p in paid if p["basis"] == "outcome_recorded"]) == 2
        await asyncio.sleep(0.2)


async def test_bulk_outcome_refusals(platform, jwt_secret, client) -> None:
    world = make_world(platform, jwt_secret, fund=False)
    url = world.url("outcomes", "/outcomes/bulk")
    one = outcome_csv([["r-1", "completed", "1", "", "", ""]])
    for role, claims in (("link_worker", {"pcn_id": PCN}), ("admin", {}), ("finance", {"pcn_id": PCN})):
        refused = await client.post(url, content=one, headers={**auth(jwt_secret, role, **claims), **CSV_TYPE})
        assert refused.status_code == 403, (role, refused.text)
    cases = [
        ("application/json", b"{}", 415, "text/csv"),
        ("application/x-ndjson", one, 415, "text/csv"),
        ("text/csv", b"", 422, "no outcomes"),
        ("text/csv", b"referral_id,status,sessions_attended\n", 422, "no outcomes"),
        ("text/csv", b"referral_id,status,sessions_attended,=cmd|' /C calc'!A0\n", 422, "column 4 of the header"),
        ("text/csv", b"referral_id,status\nx,completed\n", 422, "lacks the column(s) sessions_attended"),
        ("text/csv", b"referral_id,status,sessions_attended\n" + b"r-1,completed,1\n" * 20_001, 413, "at most 20,000"),
        ("text/csv", b"x" * 5_000_001, 413, "larger than"),
    ]
    for content_type, body, status, message in cases:
        refused = await client.post(url, content=body, headers={**world.charity, "content-type": content_type})
        assert refused.status_code == status, (content_type, body[:40], refused.text)
        assert message in refused.text
        assert "calc" not in refused.text
    # A row for a referral the charity never had is refused on its own, naming the row.
    alone = await client.post(url, content=one, headers={**world.charity, **CSV_TYPE})
    assert alone.status_code == 200
    assert alone.json()["lines"] == [
        {
            "line": 2,
            "status": "refused",
            "referral_id": "r-1",
            "outcome_id": None,
            "error": "no such referral (a new referral may take a moment to arrive)",
        }
    ]
