"""Rebuild the ledger from its Kafka topics into a fresh database, and prove it equals the live one.

What is replayed: the ledger's own facts, `payment.due.v1` (every accrual with its amount after
the cap, due date, period, business date and refused amount; a header carries its cause),
`payment.settled.v1` (every settlement with its allocations; what is not allocated is the credit
held) and `payment.reversed.v1` (a payment taken back by a correction, with what of it was open
and what had been paid). Why not the inputs (`referral.accepted`, `outcome.recorded`)? The cap makes an accrual
depend on what was accrued before it, so replaying inputs in another interleaving could cap a
different referral; the published facts are order-free. Agreements are HTTP commands, not events:
they are copied from the live database when one is given (`--source-url`).

Usage:
    python -m socialrx_funding_ledger.rebuild --target-url postgresql+asyncpg://.../fresh \\
        [--source-url $FUNDING_LEDGER_DATABASE_URL] [--pcn-id U12345] [--bootstrap $KAFKA_BOOTSTRAP_SERVERS]
Exit status 0 when the rebuilt ledger equals the live one (or no live one was given), 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from socialrx_shared.db import make_engine, make_sessionmaker, run_migrations
from socialrx_shared.events import (
    PAYMENT_DUE,
    PAYMENT_REVERSED,
    PAYMENT_SETTLED,
    PaymentDue,
    PaymentReversed,
    PaymentSettled,
    PoisonMessage,
    parse_event,
)

from . import ledger, ledger_batch, projection
from .store import agreement_versions, agreements, journal_entries, journal_lines, payments, settlements

MIGRATIONS = Path(__file__).parent / "migrations"


async def read_topic(bootstrap: str, topic: str) -> list[Any]:
    """Every record on `topic` from offset 0 up to its end when we started (no consumer group)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            return []
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        records: list[Any] = []
        while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
            for tp, batch in (await consumer.getmany(timeout_ms=1000)).items():
                records.extend(r for r in batch if r.offset < end[tp])
        return records
    finally:
        await consumer.stop()


def _headers(record: Any) -> dict[str, str]:
    return {k: v.decode(errors="replace") for k, v in (record.headers or [])}


BATCH_EVENTS = 5000


async def replay(
    sessionmaker: async_sessionmaker[AsyncSession],
    due_records: list,
    settled_records: list,
    pcn_id: str | None,
    reversed_records: list = (),
    batch_events: int = BATCH_EVENTS,
) -> dict:
    """Replay the topics' records in batches, one transaction each, set-based (ledger_batch): what
    replay_one_by_one (the live write path, fact by fact) leaves, faster. A batch that breaks a money
    rule rolls back alone and stops the rebuild (the target is then not a ledger: start afresh)."""
    counts = {
        "payment_due": 0,
        "payment_settled": 0,
        "payment_reversed": 0,
        "duplicates": 0,
        "unreadable": 0,
        "other_pcn": 0,
    }
    # The same order as one by one: every payment, then every settlement, then every reversal.
    for spec, records, record_batch in (
        (PAYMENT_DUE, due_records, _payments_batch),
        (PAYMENT_SETTLED, settled_records, _settlements_batch),
        (PAYMENT_REVERSED, reversed_records, _reversals_batch),
    ):
        for first in range(0, len(records), batch_events):
            facts = []
            for record in records[first : first + batch_events]:
                try:
                    _, event = parse_event(spec.topic, record.value)
                except PoisonMessage:
                    counts["unreadable"] += 1
                    continue
                if pcn_id and event.pcn_id != pcn_id:
                    counts["other_pcn"] += 1
                    continue
                facts.append((event, _headers(record)))
            async with sessionmaker() as session, session.begin():
                applied = await record_batch(session, facts)
            counts[spec.name.replace(".", "_")] += applied
            counts["duplicates"] += len(facts) - applied
    return counts


async def _payments_batch(session: AsyncSession, facts: list) -> int:
    # An event without a business date (from another producer) is dated by its due date.
    return await ledger_batch.record_payments(
        session,
        [
            (
                event,
                headers.get(ledger.HEADER_CAUSE, f"payment:{event.payment_id}"),
                event.business_date or event.due_date,
            )
            for event, headers in facts
        ],
    )


async def _settlements_batch(session: AsyncSession, facts: list) -> int:
    return await ledger_batch.record_settlements(
        session,
        [(event, headers.get(ledger.HEADER_CAUSE, f"settlement:{event.settlement_id}")) for event, headers in facts],
    )


async def _reversals_batch(session: AsyncSession, facts: list) -> int:
    return await ledger_batch.record_reversals(
        session,
        [(event, headers.get(ledger.HEADER_CAUSE, f"reversal:payment:{event.payment_id}")) for event, headers in facts],
    )


async def replay_one_by_one(
    session: AsyncSession, due_records: list, settled_records: list, pcn_id: str | None, reversed_records: list = ()
) -> dict:
    """Replay fact by fact through the live write path (ledger.record_*), in the caller's transaction:
    the reference the batched `replay` must equal (bench_ledger compares them)."""
    counts = {
        "payment_due": 0,
        "payment_settled": 0,
        "payment_reversed": 0,
        "duplicates": 0,
        "unreadable": 0,
        "other_pcn": 0,
    }
    # Every payment before any settlement: a settlement's allocations name payments. Reversals
    # last: a reversed payment is never allocated to afterwards (nothing of it is open), so every
    # allocation it had came before its reversal, whose split (open / already paid) it carries.
    for spec, records in (
        (PAYMENT_DUE, due_records),
        (PAYMENT_SETTLED, settled_records),
        (PAYMENT_REVERSED, reversed_records),
    ):
        for record in records:
            try:
                _, event = parse_event(spec.topic, record.value)
            except PoisonMessage:
                counts["unreadable"] += 1
                continue
            if pcn_id and event.pcn_id != pcn_id:
                counts["other_pcn"] += 1
                continue
            applied = await _apply(session, event, _headers(record))
            counts[spec.name.replace(".", "_") if applied else "duplicates"] += 1
    return counts


async def _apply(
    session: AsyncSession, event: PaymentDue | PaymentSettled | PaymentReversed, headers: dict[str, str]
) -> bool:
    if isinstance(event, PaymentReversed):
        return await ledger.record_reversal(
            None, session, event, cause_key=headers.get(ledger.HEADER_CAUSE, f"reversal:payment:{event.payment_id}")
        )
    if isinstance(event, PaymentDue):
        # An event without a business date (from another producer) is dated by its due date.
        return await ledger.record_payment(
            None,
            session,
            event,
            cause_key=headers.get(ledger.HEADER_CAUSE, f"payment:{event.payment_id}"),
            business_date=event.business_date or event.due_date,
            refused_over_cap_pence=event.refused_over_cap_pence,
        )
    return await ledger.record_settlement(
        None, session, event, cause_key=headers.get(ledger.HEADER_CAUSE, f"settlement:{event.settlement_id}")
    )


async def snapshot(session: AsyncSession, pcn_id: str | None) -> dict:
    """What must be equal: every account's balance, every payment and what is open, every settlement, and
    the reports' projections."""
    balances = {
        account: int(balance)
        for account, balance in (
            await session.execute(
                select(
                    journal_lines.c.account, func.sum(journal_lines.c.debit_pence - journal_lines.c.credit_pence)
                ).group_by(journal_lines.c.account)
            )
        ).all()
        if not pcn_id or account.split(":")[1] == pcn_id
    }
    payment_query = select(
        payments.c.payment_id,
        payments.c.organisation_id,
        payments.c.basis,
        payments.c.amount_pence,
        payments.c.open_pence,
        payments.c.due_date,
        payments.c.business_date,
        payments.c.refused_over_cap_pence,
        payments.c.reversed_pence,
        payments.c.caused_at,
    )
    settlement_query = select(
        settlements.c.settlement_id,
        settlements.c.organisation_id,
        settlements.c.amount_pence,
        settlements.c.unallocated_pence,
        settlements.c.paid_on,
        settlements.c.reference,
    )
    if pcn_id:
        payment_query = payment_query.where(payments.c.pcn_id == pcn_id)
        settlement_query = settlement_query.where(settlements.c.pcn_id == pcn_id)
    stored = await projection.stored(session)  # the reports' projections, rows of nothing left out
    return {
        "balances": balances,
        "payments": {r[0]: [str(v) for v in r[1:]] for r in (await session.execute(payment_query)).all()},
        "settlements": {r[0]: [str(v) for v in r[1:]] for r in (await session.execute(settlement_query)).all()},
        **{
            name: {
                " ".join(str(v) for v in row[:key_columns]): [str(v) for v in row[key_columns:]]
                for row in stored[name]
                if not pcn_id or row[0] == pcn_id
            }
            for name, key_columns in PROJECTION_KEYS.items()
        },
    }


# How many leading columns of each projection's rows (projection.stored) are its key.
PROJECTION_KEYS = {"open_movements": 5, "credit_movements": 3, "statement_days": 3}


def differences(live: dict, rebuilt: dict) -> list[str]:
    found = []
    for part in ("balances", "payments", "settlements", *PROJECTION_KEYS):
        for key in sorted(set(live[part]) | set(rebuilt[part])):
            if live[part].get(key) != rebuilt[part].get(key):
                found.append(f"{part} {key}: live {live[part].get(key)} rebuilt {rebuilt[part].get(key)}")
    return found


async def _copy_agreements(source: AsyncSession, target: AsyncSession, pcn_id: str | None) -> int:
    query = select(agreements)
    if pcn_id:
        query = query.where(agreements.c.pcn_id == pcn_id)
    rows = [dict(r) for r in (await source.execute(query)).mappings().all()]
    if rows:
        await target.execute(insert(agreements), rows)
        versions = [
            dict(r)
            for r in (
                await source.execute(
                    select(agreement_versions).where(agreement_versions.c.agreement_id.in_([r["id"] for r in rows]))
                )
            )
            .mappings()
            .all()
        ]
        if versions:  # every version of their terms, as they were changed
            await target.execute(insert(agreement_versions), versions)
    return len(rows)


async def rebuild(bootstrap: str, target_url: str, *, source_url: str | None = None, pcn_id: str | None = None) -> dict:
    await run_migrations(MIGRATIONS, target_url)
    target_engine = make_engine(target_url, pool_size=2)
    source_engine = make_engine(source_url, pool_size=2) if source_url else None
    try:
        due = await read_topic(bootstrap, PAYMENT_DUE.topic)
        settled = await read_topic(bootstrap, PAYMENT_SETTLED.topic)
        reversed_ = await read_topic(bootstrap, PAYMENT_REVERSED.topic)
        sessions = make_sessionmaker(target_engine)
        async with sessions() as target:
            if await target.scalar(select(func.count()).select_from(journal_entries)) or await target.scalar(
                select(func.count()).select_from(payments)
            ):
                raise SystemExit("the target database already holds a ledger: rebuild into a fresh database")
        report: dict[str, Any] = {"replayed": await replay(sessions, due, settled, pcn_id, reversed_)}
        if source_engine is None:
            return report | {"compared": False}
        async with make_sessionmaker(source_engine)() as source, sessions() as target, target.begin():
            report["agreements_copied"] = await _copy_agreements(source, target, pcn_id)
            live = await snapshot(source, pcn_id)
            rebuilt = await snapshot(target, pcn_id)
        found = differences(live, rebuilt)
        return report | {
            "compared": True,
            "equal": not found,
            "differences": found[:50],
            "accounts": len(live["balances"]),
            "payments": len(live["payments"]),
            "open_payments": sum(1 for p in live["payments"].values() if p[3] != "0"),
            "settlements": len(live["settlements"]),
        }
    finally:
        await target_engine.dispose()
        if source_engine is not None:
            await source_engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m socialrx_funding_ledger.rebuild", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--target-url", required=True, help="a fresh, empty database to rebuild into")
    parser.add_argument(
        "--source-url",
        default=os.environ.get("FUNDING_LEDGER_DATABASE_URL"),
        help="the live ledger to compare with (default $FUNDING_LEDGER_DATABASE_URL)",
    )
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    parser.add_argument("--pcn-id", help="rebuild and compare only this PCN")
    args = parser.parse_args(argv)
    report = asyncio.run(rebuild(args.bootstrap, args.target_url, source_url=args.source_url, pcn_id=args.pcn_id))
    print(json.dumps(report, indent=2))
    return 0 if report.get("equal", True) else 1


if __name__ == "__main__":
    sys.exit(main())
