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
from datetime import date
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from socialrx_shared.db import make_engine, make_sessionmaker, run_migrations
from socialrx_shared.events import (
    PAYMENT_DUE, PAYMENT_REVERSED, PAYMENT_SETTLED, PaymentDue, PaymentReversed, PaymentSettled, PoisonMessage,
    parse_event,
)

from . import ledger
from .store import agreement_versions, agreements, journal_entries, journal_lines, payments, settlements

MIGRATIONS = Path(__file__).parent / "migrations"


async def read_topic(bootstrap: str, topic: str) -> list[Any]:
    """Every record on `topic` from offset 0 up to its end when we started (no consumer group)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()  # noqa: SLF001 - see topics made since start
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


async def replay(session: AsyncSession, due_records: list, settled_records: list, pcn_id: str | None,
                 reversed_records: list = ()) -> dict:
    counts = {"payment_due": 0, "payment_settled": 0, "payment_reversed": 0, "duplicates": 0, "unreadable": 0,
              "other_pcn": 0}
    # Every payment before any settlement: a settlement's allocations name payments. Reversals
    # last: a reversed payment is never allocated to afterwards (nothing of it is open), so every
    # allocation it had came before its reversal, whose split (open / already paid) it carries.
    for spec, records in ((PAYMENT_DUE, due_records), (PAYMENT_SETTLED, settled_records),
                          (PAYMENT_REVERSED, reversed_records)):
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


async def _apply(session: AsyncSession, event: PaymentDue | PaymentSettled | PaymentReversed,
                 headers: dict[str, str]) -> bool:
    if isinstance(event, PaymentReversed):
        return await ledger.record_reversal(
            None, session, event, cause_key=headers.get(ledger.HEADER_CAUSE, f"reversal:payment:{event.payment_id}"))
    if isinstance(event, PaymentDue):
        # An event without a business date (from another producer) is dated by its due date.
        return await ledger.record_payment(
            None, session, event, cause_key=headers.get(ledger.HEADER_CAUSE, f"payment:{event.payment_id}"),
            business_date=event.business_date or event.due_date, refused_over_cap_pence=event.refused_over_cap_pence)
    return await ledger.record_settlement(
        None, session, event, cause_key=headers.get(ledger.HEADER_CAUSE, f"settlement:{event.settlement_id}"))


async def snapshot(session: AsyncSession, pcn_id: str | None) -> dict:
    """What must be equal: every account's balance, every payment and what is open, every settlement."""
    balances = {account: int(balance) for account, balance in (await session.execute(
        select(journal_lines.c.account, func.sum(journal_lines.c.debit_pence - journal_lines.c.credit_pence))
        .group_by(journal_lines.c.account))).all() if not pcn_id or account.split(":")[1] == pcn_id}
    payment_query = select(payments.c.payment_id, payments.c.organisation_id, payments.c.basis, payments.c.amount_pence,
                           payments.c.open_pence, payments.c.due_date, payments.c.business_date,
                           payments.c.refused_over_cap_pence, payments.c.reversed_pence, payments.c.caused_at)
    settlement_query = select(settlements.c.settlement_id, settlements.c.organisation_id, settlements.c.amount_pence,
                              settlements.c.unallocated_pence, settlements.c.paid_on, settlements.c.reference)
    if pcn_id:
        payment_query = payment_query.where(payments.c.pcn_id == pcn_id)
        settlement_query = settlement_query.where(settlements.c.pcn_id == pcn_id)
    return {
        "balances": balances,
        "payments": {r[0]: [str(v) for v in r[1:]] for r in (await session.execute(payment_query)).all()},
        "settlements": {r[0]: [str(v) for v in r[1:]] for r in (await session.execute(settlement_query)).all()},
    }


def differences(live: dict, rebuilt: dict) -> list[str]:
    found = []
    for part in ("balances", "payments", "settlements"):
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
        versions = [dict(r) for r in (await source.execute(select(agreement_versions).where(
            agreement_versions.c.agreement_id.in_([r["id"] for r in rows])))).mappings().all()]
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
        async with make_sessionmaker(target_engine)() as target, target.begin():
            if await target.scalar(select(func.count()).select_from(journal_entries)) or \
                    await target.scalar(select(func.count()).select_from(payments)):
                raise SystemExit("the target database already holds a ledger: rebuild into a fresh database")
            report: dict[str, Any] = {"replayed": await replay(target, due, settled, pcn_id, reversed_)}
            if source_engine is None:
                return report | {"compared": False}
            async with make_sessionmaker(source_engine)() as source:
                report["agreements_copied"] = await _copy_agreements(source, target, pcn_id)
                live = await snapshot(source, pcn_id)
            rebuilt = await snapshot(target, pcn_id)
        found = differences(live, rebuilt)
        return report | {"compared": True, "equal": not found, "differences": found[:50],
                         "accounts": len(live["balances"]), "payments": len(live["payments"]),
                         "open_payments": sum(1 for p in live["payments"].values() if p[3] != "0"),
                         "settlements": len(live["settlements"])}
    finally:
        await target_engine.dispose()
        if source_engine is not None:
            await source_engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m socialrx_funding_ledger.rebuild", description=__doc__.split("\n")[0])
    parser.add_argument("--target-url", required=True, help="a fresh, empty database to rebuild into")
    parser.add_argument("--source-url", default=os.environ.get("FUNDING_LEDGER_DATABASE_URL"),
                        help="the live ledger to compare with (default $FUNDING_LEDGER_DATABASE_URL)")
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    parser.add_argument("--pcn-id", help="rebuild and compare only this PCN")
    args = parser.parse_args(argv)
    report = asyncio.run(rebuild(args.bootstrap, args.target_url, source_url=args.source_url, pcn_id=args.pcn_id))
    print(json.dumps(report, indent=2))
    return 0 if report.get("equal", True) else 1


if __name__ == "__main__":
    sys.exit(main())
