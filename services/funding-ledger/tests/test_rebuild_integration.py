"""Rebuild from the topics (offset 0) into a fresh database equals the live ledger; the journal
cannot be edited, only reversed."""

from __future__ import annotations

import uuid
from datetime import date

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from socialrx_funding_ledger import ledger as ledger_module
from socialrx_funding_ledger import rebuild
from socialrx_funding_ledger.store import journal_lines, outbox
from socialrx_harness.testing import wait_for
from socialrx_shared import events as ev
from socialrx_shared.db import make_engine, make_sessionmaker


async def test_rebuild_from_topics_equals_live_ledger(ledger, postgres) -> None:
    pcn, org_a, org_b = (
        "P" + uuid.uuid4().hex[:8].upper(),
        "org-a" + uuid.uuid4().hex[:6],
        "org-b" + uuid.uuid4().hex[:6],
    )
    finance = ledger.finance(pcn)
    await ledger.agree(
        pcn,
        organisation_id=org_a,
        per_referral_pence=5000,
        per_outcome_pence=12000,
        cap_pence_per_year=25000,
        period="quarterly",
        days_after_period_end=30,
        starts_on="2026-04-01",
    )
    await ledger.agree(
        pcn,
        organisation_id=org_b,
        per_referral_pence=700,
        block_grant_pence_per_period=9000,
        period="monthly",
        days_after_period_end=14,
        starts_on="2026-04-01",
    )
    referrals = [await ledger.accept(pcn, org_a, date(2026, 4 + i, 3)) for i in range(4)]
    await ledger.payments(pcn, org_a, 4)  # the first referral is accrued before the cap can bite
    await ledger.publish(
        ev.OUTCOME_RECORDED,
        ev.OutcomeRecorded(
            outcome_id="o-" + referrals[0],
            referral_id=referrals[0],
            organisation_id=org_a,
            pcn_id=pcn,
            status="completed",
            sessions_attended=6,
            recorded_at="2026-09-01T10:00:00Z",
        ),
    )
    for day in (date(2026, 5, 9), date(2026, 6, 30)):
        await ledger.accept(pcn, org_b, day)
    await ledger.client.post("/block-grants", headers=finance, json={"on": "2026-05-20"})
    await ledger.payments(pcn, org_a, 5)
    await ledger.payments(pcn, org_b, 3)
    for org, pence, ref in ((org_a, 7000, "A-1"), (org_b, 20000, "B-1")):  # B overpays: a credit is held
        response = await ledger.client.post(
            "/settlements",
            headers=finance,
            json={"organisation_id": org, "amount_pence": pence, "paid_on": "2026-10-01", "reference": ref},
        )
        assert response.status_code == 201, response.text

    # The outcome is corrected to engaged: its (capped) fee is taken back by a reversal.
    await ledger.publish(
        ev.OUTCOME_RECORDED,
        ev.OutcomeRecorded(
            outcome_id="o-" + referrals[0],
            referral_id=referrals[0],
            organisation_id=org_a,
            pcn_id=pcn,
            status="engaged",
            sessions_attended=6,
            recorded_at="2026-09-01T10:00:00Z",
            revision=2,
            corrected_at="2026-09-20T10:00:00Z",
        ),
    )

    async def reversed_fee():
        items = (await ledger.client.get(f"/payments?organisation_id={org_a}", headers=finance)).json()["items"]
        return [p for p in items if p["reversed_pence"]] or None

    [fee] = await wait_for(reversed_fee, what="the outcome fee taken back")
    assert (fee["basis"], fee["amount_pence"], fee["reversed_pence"], fee["open_pence"]) == (
        "outcome_recorded",
        5000,
        5000,
        0,
    )

    engine = make_engine(ledger.database_url, pool_size=1)
    try:

        async def outbox_drained() -> bool:  # a rebuild sees what has been published
            async with make_sessionmaker(engine)() as session:
                return (
                    await session.scalar(select(func.count()).select_from(outbox).where(outbox.c.sent_at.is_(None)))
                    == 0
                )

        await wait_for(outbox_drained, what="outbox relayed")

        target = postgres.new_database("ledger_rebuilt")
        report = await rebuild.rebuild(ledger.bootstrap, target, source_url=ledger.database_url, pcn_id=pcn)
        assert report["equal"], report["differences"]
        assert (report["payments"], report["settlements"], report["agreements_copied"]) == (8, 2, 2)
        assert report["replayed"]["payment_due"] == 8 and report["replayed"]["payment_settled"] == 2
        assert report["replayed"]["payment_reversed"] == 1

        with pytest.raises(SystemExit, match="already holds a ledger"):  # never into a used database
            await rebuild.rebuild(ledger.bootstrap, target, pcn_id=pcn)

        # The comparison does catch a difference: the live ledger with one more entry.
        async with make_sessionmaker(engine)() as session, session.begin():
            assert (
                await ledger_module.post_entry(
                    session,
                    "manual:test",
                    date(2026, 10, 2),
                    "a by-hand entry",
                    [(ledger_module.payable_account(pcn, org_a), 100, 0), (f"expense:{pcn}", 0, 100)],
                )
                is not None
            )
            assert (
                await ledger_module.post_entry(
                    session,
                    "manual:test",
                    date(2026, 10, 2),
                    "twice",
                    [(ledger_module.payable_account(pcn, org_a), 100, 0), (f"expense:{pcn}", 0, 100)],
                )
                is None
            )  # once
        async with (
            make_sessionmaker(make_engine(target, pool_size=1))() as rebuilt_session,
            make_sessionmaker(engine)() as live_session,
        ):
            found = rebuild.differences(
                await rebuild.snapshot(live_session, pcn), await rebuild.snapshot(rebuilt_session, pcn)
            )
        assert any(line.startswith(f"balances payable:{pcn}:{org_a}") for line in found)

        # It compares the reports' projections too: a rebuilt arrears row that differs is found.
        target_engine = make_engine(target, pool_size=1)
        try:
            async with make_sessionmaker(target_engine)() as rebuilt_session, rebuilt_session.begin():
                await rebuilt_session.execute(
                    text(
                        "UPDATE open_movements SET paid_pence = paid_pence + 1 WHERE pcn_id = :pcn "
                        "AND organisation_id = :org AND paid_pence > 0"
                    ),
                    {"pcn": pcn, "org": org_b},
                )
            async with (
                make_sessionmaker(target_engine)() as rebuilt_session,
                make_sessionmaker(engine)() as live_session,
            ):
                found = rebuild.differences(
                    await rebuild.snapshot(live_session, pcn), await rebuild.snapshot(rebuilt_session, pcn)
                )
            assert any(line.startswith(f"open_movements {pcn} {org_b} ") for line in found), found
        finally:
            await target_engine.dispose()
    finally:
        await engine.dispose()


async def test_journal_lines_cannot_be_edited_or_deleted(ledger) -> None:
    engine = make_engine(ledger.database_url, pool_size=1)
    try:
        for statement in (
            "UPDATE journal_lines SET debit_pence = debit_pence + 1",
            "DELETE FROM journal_entries",
            "UPDATE journal_entries SET memo = 'x'",
        ):
            async with make_sessionmaker(engine)() as session:
                count = await session.scalar(select(func.count()).select_from(journal_lines))
                assert count > 0  # there is something to protect
                with pytest.raises(DBAPIError, match="immutable"):
                    await session.execute(text(statement))
                await session.rollback()
    finally:
        await engine.dispose()
