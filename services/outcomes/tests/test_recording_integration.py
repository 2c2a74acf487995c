"""Recording outcomes on the real broker and database: who may, for which referrals, and what it publishes."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

from socialrx_harness.testing import read_topic, wait_for
from socialrx_shared import events as ev

AT = datetime(2026, 5, 4, 9, tzinfo=timezone.utc)


async def _accepted_referral(outcomes, *, order: str = "created_first") -> tuple[str, str, str]:
    pcn, org, referral = outcomes.new_pcn(), "org-" + uuid.uuid4().hex[:6], "r-" + uuid.uuid4().hex[:10]
    made = outcomes.created(referral, pcn_id=pcn, organisation_id=org, at=AT)
    took = outcomes.accepted(referral, pcn_id=pcn, organisation_id=org, at=AT + timedelta(days=2))
    await outcomes.publish(*((made, took) if order == "created_first" else (took, made)))
    await _until_known(outcomes, referral, org)
    return pcn, org, referral


async def _until_known(outcomes, referral: str, org: str) -> None:
    async def visible():
        answer = await outcomes.client.get(f"/referrals/{referral}/outcomes", headers=outcomes.charity(org))
        return answer.status_code == 200 and answer.json()["referral_status"] in ("accepted", "declined")

    await wait_for(visible, what=f"referral {referral} decided in the outcomes view")


def _wemwbs(outcomes, phase: str, total: int) -> dict:
    return {"instrument": "WEMWBS", "phase": phase, "answers": outcomes.answers("WEMWBS", total)}


async def _outcome_events(outcomes, referral: str) -> list[dict]:
    records = await read_topic(outcomes.kafka, ev.OUTCOME_RECORDED.topic)
    return [json.loads(r.value) for r in records if r.key == referral.encode()]


async def test_recording_scores_measures_publishes_and_gives_the_change(outcomes) -> None:
    pcn, org, referral = await _accepted_referral(outcomes, order="accepted_first")
    first = await outcomes.client.post(
        f"/referrals/{referral}/outcomes",
        headers=outcomes.charity(org),
        json={
            "status": "engaged",
            "sessions_attended": 1,
            "measures": [
                _wemwbs(outcomes, "baseline", 40),
                {"instrument": "ONS4", "phase": "baseline", "answers": [4, 5, 9, 6]},
                {"instrument": "SWEMWBS", "phase": "baseline", "answers": outcomes.answers("SWEMWBS", 20)},
            ],
        },
    )
    assert first.status_code == 201, first.text
    scores = {m["instrument"]: m for m in first.json()["measures"]}
    assert scores["WEMWBS"]["score"] == 40
    assert scores["SWEMWBS"]["score"] == 18.59
    assert scores["ONS4"]["score"] is None and scores["ONS4"]["bands"] == ["low", "medium", "very high", "high"]
    assert first.json()["changes"] == []

    second = await outcomes.client.post(
        f"/referrals/{referral}/outcomes",
        headers=outcomes.link_worker(pcn),
        json={
            "status": "completed",
            "sessions_attended": 6,
            "measures": [
                _wemwbs(outcomes, "follow_up", 43),
                {"instrument": "ONS4", "phase": "follow_up", "answers": [6, 5, 9, 2]},
            ],
        },
    )
    assert second.status_code == 201, second.text
    changes = {c["instrument"]: c for c in second.json()["changes"]}
    assert changes["WEMWBS"]["change"] == 3 and changes["WEMWBS"]["flag"] == "meaningful_improvement"
    assert [i["flag"] for i in changes["ONS4"]["items"]] == ["improved", "no_change", "no_change", "improved"]
    assert "SWEMWBS" not in changes  # no follow-up yet

    async def both_published():
        found = await _outcome_events(outcomes, referral)
        return found if len(found) == 2 else None

    published = await wait_for(both_published, what="two outcome.recorded events")
    data = {e["data"]["outcome_id"]: e["data"] for e in published}
    latest = data[second.json()["outcome_id"]]
    assert latest["status"] == "completed" and latest["organisation_id"] == org and latest["pcn_id"] == pcn
    assert {
        "instrument": "WEMWBS",
        "phase": "follow_up",
        "score": 43.0,
        "item_scores": outcomes.answers("WEMWBS", 43),
    } in latest["measures"]


async def _refused(outcomes, referral: str, headers: dict, body: dict, status: int, says: str) -> None:
    answer = await outcomes.client.post(f"/referrals/{referral}/outcomes", headers=headers, json=body)
    assert answer.status_code == status, answer.text
    assert says in json.dumps(answer.json()["detail"])


async def _nothing_recorded(outcomes, referral: str, org: str) -> None:
    listing = await outcomes.client.get(f"/referrals/{referral}/outcomes", headers=outcomes.admin())
    assert listing.status_code == 200 and listing.json()["items"] == []
    assert await _outcome_events(outcomes, referral) == []


async def test_wrong_answers_are_refused_naming_the_item_and_change_nothing(outcomes) -> None:
    _pcn, org, referral = await _accepted_referral(outcomes)
    charity = outcomes.charity(org)
    await _refused(
        outcomes,
        referral,
        charity,
        {
            "status": "engaged",
            "sessions_attended": 1,
            "measures": [{"instrument": "SWEMWBS", "phase": "baseline", "answers": [3, 3, 3, 3, 3, 3]}],
        },
        422,
        "measures[0]: SWEMWBS has 7 items; 6 answers were given",
    )
    await _refused(
        outcomes,
        referral,
        charity,
        {
            "status": "engaged",
            "sessions_attended": 1,
            "measures": [
                _wemwbs(outcomes, "baseline", 40),
                {"instrument": "ONS4", "phase": "baseline", "answers": [5, 5, 5, 11]},
            ],
        },
        422,
        "measures[1]: ONS4 item 4 (anxious_yesterday): answer 11 is outside 0-10",
    )
    await _refused(
        outcomes,
        referral,
        charity,
        {
            "status": "engaged",
            "sessions_attended": 1,
            "measures": [{"instrument": "WEMWBS", "phase": "baseline", "answers": [3] * 13 + [2.5]}],
        },
        422,
        "WEMWBS item 14: answer must be a whole number",
    )
    await _refused(outcomes, referral, charity, {"status": "finished", "sessions_attended": 1}, 422, "status")
    await _nothing_recorded(outcomes, referral, org)


async def test_only_an_accepted_referral_of_ones_own_organisation_or_pcn(outcomes) -> None:
    pcn, org, referral = await _accepted_referral(outcomes)
    body = {"status": "engaged", "sessions_attended": 1, "measures": [_wemwbs(outcomes, "baseline", 30)]}
    await _refused(
        outcomes, referral, outcomes.charity("org-someone-else"), body, 403, "organisation the referral was sent to"
    )
    await _refused(outcomes, referral, outcomes.link_worker("Q99999"), body, 403, "link worker of its PCN")
    await _refused(outcomes, referral, outcomes.finance(pcn), body, 403, "needs the role")
    await _refused(outcomes, "r-never-heard-of", outcomes.charity(org), body, 404, "no such referral")
    await _nothing_recorded(outcomes, referral, org)

    declined_referral = "r-" + uuid.uuid4().hex[:10]
    await outcomes.publish(
        outcomes.created(declined_referral, pcn_id=pcn, organisation_id=org, at=AT),
        outcomes.declined(declined_referral, pcn_id=pcn, organisation_id=org, at=AT, reason="no_capacity"),
    )
    await _until_known(outcomes, declined_referral, org)
    await _refused(
        outcomes,
        declined_referral,
        outcomes.charity(org),
        body,
        409,
        "outcomes are recorded only for accepted referrals; this one is declined",
    )
    await _nothing_recorded(outcomes, declined_referral, org)


async def test_a_second_baseline_is_refused_and_a_correction_is_explicit(outcomes) -> None:
    _pcn, org, referral = await _accepted_referral(outcomes)
    charity = outcomes.charity(org)
    first = await outcomes.client.post(
        f"/referrals/{referral}/outcomes",
        headers=charity,
        json={"status": "engaged", "sessions_attended": 1, "measures": [_wemwbs(outcomes, "baseline", 30)]},
    )
    assert first.status_code == 201, first.text
    outcome_id = first.json()["outcome_id"]
    await _refused(
        outcomes,
        referral,
        charity,
        {"status": "engaged", "sessions_attended": 2, "measures": [_wemwbs(outcomes, "baseline", 35)]},
        409,
        f"/referrals/{referral}/outcomes/{outcome_id}/corrections",
    )
    await _refused(
        outcomes,
        referral,
        charity,
        {
            "status": "engaged",
            "sessions_attended": 2,
            "measures": [_wemwbs(outcomes, "follow_up", 35), _wemwbs(outcomes, "follow_up", 36)],
        },
        422,
        "a second WEMWBS follow_up",
    )

    corrected = await outcomes.client.post(
        f"/referrals/{referral}/outcomes/{outcome_id}/corrections",
        headers=charity,
        json={
            "status": "engaged",
            "sessions_attended": 1,
            "measures": [_wemwbs(outcomes, "baseline", 33)],
            "reason": "answers keyed from the wrong form",
        },
    )
    assert corrected.status_code == 201, corrected.text
    assert corrected.json()["outcome_id"] == outcome_id and corrected.json()["revision"] == 2
    follow_up = await outcomes.client.post(
        f"/referrals/{referral}/outcomes",
        headers=charity,
        json={"status": "completed", "sessions_attended": 5, "measures": [_wemwbs(outcomes, "follow_up", 35)]},
    )
    assert follow_up.json()["changes"][0]["change"] == 2  # against the corrected baseline, 33

    listing = (await outcomes.client.get(f"/referrals/{referral}/outcomes", headers=charity)).json()
    assert (listing["items"][0]["outcome_id"], listing["items"][0]["revision"]) == (outcome_id, 2)
    assert listing["items"][0]["measures"][0]["score"] == 33

    async def republished():
        found = [e for e in await _outcome_events(outcomes, referral) if e["data"]["outcome_id"] == outcome_id]
        return found if len(found) == 2 else None

    # The correction goes out under the same outcome_id, so the ledger (keyed by it) pays once.
    both = await wait_for(republished, what="the corrected outcome published again")
    assert sorted(e["data"]["measures"][0]["score"] for e in both) == [30.0, 33.0]
    # ... and with a higher revision, so a consumer tells the correction from a redelivery.
    by_revision = {e["data"]["revision"]: e["data"] for e in both}
    assert set(by_revision) == {1, 2}
    assert by_revision[1]["corrected_at"] is None and by_revision[2]["corrected_at"] is not None

    missing = await outcomes.client.post(
        f"/referrals/{referral}/outcomes/nope/corrections",
        headers=charity,
        json={"status": "engaged", "sessions_attended": 1, "reason": "typo"},
    )
    assert missing.status_code == 404
    no_reason = await outcomes.client.post(
        f"/referrals/{referral}/outcomes/{outcome_id}/corrections",
        headers=charity,
        json={"status": "engaged", "sessions_attended": 1},
    )
    assert no_reason.status_code == 422 and "reason" in no_reason.text
    other = await outcomes.client.post(
        f"/referrals/{referral}/outcomes/{outcome_id}/corrections",
        headers=outcomes.charity("org-other"),
        json={"status": "completed", "sessions_attended": 9, "reason": "not mine"},
    )
    assert other.status_code == 403
