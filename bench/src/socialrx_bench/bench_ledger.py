"""The funding ledger's reports and rebuild as history piles up (issue 14), each figure next to a limit
measured in the same run.

    python -m socialrx_bench.bench_ledger [--arrears-payments 1000000] [--statement-payments 100000]
                                             [--rebuild-payments 100000] [--only arrears,statement,rebuild]

Starts its own PostgreSQL and Kafka with the test harness's classes (or uses KAFKA_BOOTSTRAP_SERVERS /
*_DATABASE_URL), prints the figures as JSON. The functions below each return a dict of figures, for
`bench.py` to call:

- `arrears_figures`: GET /arrears over N payments of one PCN (200 organisations, work over 700 days, a
  third half-paid), written with COPY-speed INSERT ... SELECT straight into a fresh ledger database, the
  projections built from those rows as migration 0011 does; next to the scan the report did before
  (the same rows, the old query) and a SELECT 1 round trip.
- `statement_figures`: GET /statements/{org} for one organisation with N payments over six years,
  for a quarter and a financial year, with EXPLAIN ANALYZE of the reads.
- `rebuild_figures`: N payment.due (and settlements and reversals) produced to the topics; the rebuild
  (batched) into a fresh database, compared with a ledger built from the same events one by one
  through the live write path (ledger.record_payment / record_settlement / record_reversal); next to
  reading the topics alone and asyncpg COPY rows/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from datetime import date, datetime, timedelta, timezone
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from sqlalchemy import insert

from socialrx_harness.infra import PostgresServer, start_kafka, start_postgres
from socialrx_harness.testing import auth, running_service
from socialrx_shared import events as ev


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


async def _round_trip_ms(conn: asyncpg.Connection) -> float:
    best = float("inf")
    for _ in range(20):
        started = time.perf_counter()
        await conn.fetchval("SELECT 1")
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 3)


async def _copy_rows_per_s(conn: asyncpg.Connection, rows: int = 200_000) -> float:
    """The database's raw write limit here: asyncpg COPY of payment-sized rows into a scratch table."""
    await conn.execute("CREATE TEMP TABLE bench_copy (a text, b text, c bigint, d date, e date)")
    records = [(f"payment-{i}", f"cause:{i}", 5000, date(2026, 4, 1), date(2026, 7, 30)) for i in range(rows)]
    started = time.perf_counter()
    await conn.copy_records_to_table("bench_copy", records=records)
    seconds = time.perf_counter() - started
    await conn.execute("DROP TABLE bench_copy")
    return round(rows / seconds)


async def _fresh_ledger(pg: PostgresServer, prefix: str) -> str:
    from socialrx_funding_ledger.rebuild import MIGRATIONS
    from socialrx_shared.db import run_migrations

    url = pg.new_database(prefix)
    await run_migrations(MIGRATIONS, url)
    return url


# --- arrears -----------------------------------------------------------------------------------

SEED_PAYMENTS = """
INSERT INTO payments (payment_id, cause_key, agreement_id, pcn_id, organisation_id, referral_id, basis,
                      amount_pence, open_pence, period, due_date, business_date, refused_over_cap_pence)
SELECT 'arrears-' || $1 || '-' || g, 'arrears:' || $1 || ':' || g, 'agreement-arrears-' || (g % 200), $2,
       'org-arrears-' || (g % 200), 'ref-arrears-' || g, 'referral_accepted', 5000,
       CASE WHEN g < $5::bigint THEN 2500 ELSE 5000 END, '2025/26-Q1',
       DATE '2024-07-31' + (g % 700)::int, DATE '2024-04-01' + (g % 700)::int, 0
FROM generate_series($3::bigint, $4::bigint) AS g
"""

# GET /arrears before the projections: every payment, its allocations and its reversal, scanned.
ARREARS_BY_SCAN = """
SELECT p.organisation_id, p.due_date, p.business_date,
       sum(p.amount_pence - coalesce(paid.paid_pence, 0) - coalesce(r.open_cancelled_pence, 0)) AS open_pence
FROM payments p
LEFT JOIN (SELECT a.payment_id, sum(a.amount_pence) AS paid_pence FROM allocations a
           JOIN settlements s ON s.settlement_id = a.settlement_id WHERE s.paid_on <= $2 GROUP BY a.payment_id) paid
       ON paid.payment_id = p.payment_id
LEFT JOIN payment_reversals r ON r.payment_id = p.payment_id AND r.business_date <= $2
WHERE p.pcn_id = $1 AND p.business_date <= $2
  AND p.amount_pence - coalesce(paid.paid_pence, 0) - coalesce(r.open_cancelled_pence, 0) > 0
GROUP BY p.organisation_id, p.due_date, p.business_date
"""


PROJECTIONS = {
    "open_movements": "pcn_id, organisation_id, due_date, business_date, effective_on, accrued_pence, paid_pence, "
    "cancelled_pence",
    "credit_movements": "pcn_id, organisation_id, effective_on, credit_pence",
    "statement_days": "pcn_id, organisation_id, on_date, charged_pence, reversed_pence, paid_pence",
}


async def build_projections(conn: asyncpg.Connection, pcn: str) -> None:
    """The reports' projections of one PCN whose rows were written straight into the tables (as the
    benches seed them), built as migration 0011 builds them from existing rows."""
    from socialrx_funding_ledger.projection import RECOMPUTE_CREDIT, RECOMPUTE_OPEN, RECOMPUTE_STATEMENT

    for (table, columns), sql in zip(
        PROJECTIONS.items(), (RECOMPUTE_OPEN, RECOMPUTE_CREDIT, RECOMPUTE_STATEMENT), strict=False
    ):
        # Only this PCN's rows (the filter on the recomputation's output is pushed down to its inputs).
        await conn.execute(f"INSERT INTO {table} ({columns}) SELECT * FROM ({sql}) m WHERE m.pcn_id = $1", pcn)


async def delete_projections(conn: asyncpg.Connection, pcn: str) -> None:
    for table in PROJECTIONS:
        await conn.execute(f"DELETE FROM {table} WHERE pcn_id = $1", pcn)


async def seed_arrears(conn: asyncpg.Connection, pcn: str, count: int) -> dict:
    """`count` payments of one PCN (200 organisations, due dates over 700 days, the first third half
    paid by one settlement per organisation), and the projections built from them as migration 0011
    builds them from existing rows."""
    tag = pcn.lower()
    settled = count // 3
    started = time.perf_counter()
    for first in range(0, count, 200_000):
        await conn.execute(SEED_PAYMENTS, tag, pcn, first, min(first + 200_000, count) - 1, settled)
    await conn.execute(
        "INSERT INTO settlements (settlement_id, cause_key, pcn_id, organisation_id, amount_pence, unallocated_pence,"
        " paid_on, reference) SELECT 'settle-' || $1 || '-' || o, 'settle:' || $1 || ':' || o, $2,"
        " 'org-arrears-' || o, 2500 * count(*), 0, DATE '2025-06-01', 'bench ' || $1 || ' ' || o"
        " FROM generate_series(0, $3::bigint - 1) AS g, LATERAL (SELECT g % 200 AS o) x GROUP BY o",
        tag,
        pcn,
        settled,
    )
    await conn.execute(
        "INSERT INTO allocations (settlement_id, payment_id, amount_pence) SELECT 'settle-' || $1 || '-' || (g % 200),"
        " 'arrears-' || $1 || '-' || g, 2500 FROM generate_series(0, $2::bigint - 1) AS g",
        tag,
        settled,
    )
    payments_s = time.perf_counter() - started
    started = time.perf_counter()
    await build_projections(conn, pcn)
    projection_s = time.perf_counter() - started
    await conn.execute("ANALYZE")
    return {
        "payments": count,
        "organisations": 200,
        "allocations": settled,
        "load_seconds": round(payments_s, 1),
        "projection_build_seconds": round(projection_s, 1),
        "projection_rows": await conn.fetchval("SELECT count(*) FROM open_movements WHERE pcn_id = $1", pcn),
    }


async def arrears_figures(pg: PostgresServer, bootstrap: str, secret: str, count: int = 1_000_000) -> dict:
    from socialrx_funding_ledger.app import Settings, build

    url = await _fresh_ledger(pg, "bench_arrears")
    pcn = "A" + uuid.uuid4().hex[:8].upper()
    conn = await asyncpg.connect(_dsn(url))
    try:
        result = await seed_arrears(conn, pcn, count)
        as_of = date(2026, 11, 24)
        expected = count * 5000 - (count // 3) * 2500
        async with running_service(build, Settings, database_url=url, kafka=bootstrap, jwt_secret=secret) as (
            _,
            client,
        ):
            finance = auth(secret, "finance", pcn_id=pcn)
            timings, body = [], None
            for _ in range(5):
                started = time.perf_counter()
                answer = await client.get(f"/arrears?as_of={as_of}", headers=finance, timeout=600)
                timings.append(time.perf_counter() - started)
                answer.raise_for_status()
                body = answer.json()
            started = time.perf_counter()
            one_org = await client.get(f"/arrears?as_of={as_of}&organisation_id=org-arrears-7", headers=finance)
            one_org.raise_for_status()
            one_org_s = time.perf_counter() - started
        # The report alone, without HTTP (its SQL and the ageing in Python), and the plan of its SQL.
        from socialrx_funding_ledger import reports
        from socialrx_shared.db import make_engine, make_sessionmaker

        engine = make_engine(url, pool_size=1)
        try:
            direct = []
            async with make_sessionmaker(engine)() as session:
                for _ in range(5):
                    started = time.perf_counter()
                    await reports.arrears(session, as_of, pcn_id=pcn, organisation_id=None)
                    direct.append(time.perf_counter() - started)
        finally:
            await engine.dispose()
        plan = await _plan(
            conn,
            "SELECT organisation_id, due_date, business_date, "
            "sum(accrued_pence - paid_pence - cancelled_pence) FROM open_movements "
            "WHERE pcn_id = $1 AND effective_on <= $2 GROUP BY 1, 2, 3 "
            "HAVING sum(accrued_pence - paid_pence - cancelled_pence) > 0",
            pcn,
            as_of,
        )
        scan = []
        for _ in range(2):
            started = time.perf_counter()
            await conn.fetch(ARREARS_BY_SCAN, pcn, as_of)
            scan.append(time.perf_counter() - started)
        return result | {
            "get_arrears_ms": [_ms(t) for t in timings],
            "best_ms": _ms(min(timings)),
            "median_ms": _ms(sorted(timings)[len(timings) // 2]),
            "one_organisation_ms": _ms(one_org_s),
            "target_ms": 150,
            "owed_pence_correct": body is not None and body["total"]["owed_pence"] == expected,
            "limit_select_1_round_trip_ms": await _round_trip_ms(conn),
            "before_scan_query_ms": [_ms(t) for t in scan],
            "report_without_http_ms": [_ms(t) for t in direct],
            "explain_analyze": plan,
            "note": "GET /arrears through the service's ASGI app (auth, JSON) in this process; 'before' is the "
            "query the report ran before the projections, over the same rows, SQL alone",
        }
    finally:
        await conn.close()


# --- statement ---------------------------------------------------------------------------------


async def statement_figures(pg: PostgresServer, bootstrap: str, secret: str, count: int = 100_000) -> dict:
    """One organisation with `count` payments over six financial years (2021/22 to 2026/27), other
    organisations' rows around it; its statement for a quarter and for a financial year."""
    from socialrx_funding_ledger.app import Settings, build
    from socialrx_funding_ledger.projection import RECOMPUTE_STATEMENT

    url = await _fresh_ledger(pg, "bench_statement")
    pcn, org = "S" + uuid.uuid4().hex[:8].upper(), "org-statement-0"
    days = 6 * 365
    conn = await asyncpg.connect(_dsn(url))
    try:
        started = time.perf_counter()
        await conn.execute(
            "INSERT INTO payments (payment_id, cause_key, agreement_id, pcn_id, organisation_id, referral_id, basis,"
            " amount_pence, open_pence, period, due_date, business_date, refused_over_cap_pence)"
            " SELECT 'st-' || g, 'st:' || g, 'agreement-st-' || (g % 5), $1, 'org-statement-' || (g % 5),"
            " 'ref-st-' || g, 'referral_accepted', 5000, 5000, '2025/26-Q1',"
            " DATE '2021-04-01' + ((g / 5) % $3::int)::int + 120, DATE '2021-04-01' + ((g / 5) % $3::int)::int, 0"
            " FROM generate_series(0, 5 * $2::bigint - 1) AS g",
            pcn,
            count,
            days,
        )
        await conn.execute(
            "INSERT INTO settlements (settlement_id, cause_key, pcn_id, organisation_id, amount_pence,"
            " unallocated_pence, paid_on, reference) SELECT 'st-settle-' || m, 'st-settle:' || m, $1, $2,"
            " 100000, 100000,"
            " DATE '2021-05-01' + 30 * m, 'monthly ' || m FROM generate_series(0, 71) AS m",
            pcn,
            org,
        )
        await conn.execute(
            "INSERT INTO statement_days (pcn_id, organisation_id, on_date, charged_pence,"
            f" reversed_pence, paid_pence) SELECT * FROM ({RECOMPUTE_STATEMENT}) m"
        )
        await conn.execute("ANALYZE")
        load_s = time.perf_counter() - started
        figures: dict[str, Any] = {
            "payments_of_the_organisation": count,
            "payments_in_the_database": 5 * count,
            "load_seconds": round(load_s, 1),
            "target_ms": 150,
        }
        async with running_service(build, Settings, database_url=url, kafka=bootstrap, jwt_secret=secret) as (
            _,
            client,
        ):
            charity = auth(secret, "charity", organisation_id=org)
            ranges = (("quarter", "2026-04-01", "2026-06-30"), ("financial_year", "2025-04-01", "2026-03-31"))
            for name, from_, to in ranges:
                timings, body = [], None
                for _ in range(5):
                    started = time.perf_counter()
                    answer = await client.get(f"/statements/{org}?from={from_}&to={to}", headers=charity, timeout=600)
                    timings.append(time.perf_counter() - started)
                    answer.raise_for_status()
                    body = answer.json()
                started = time.perf_counter()
                csv_answer = await client.get(f"/statements/{org}?from={from_}&to={to}&format=csv", headers=charity)
                csv_s = time.perf_counter() - started
                csv_answer.raise_for_status()
                assert body is not None
                figures[name] = {
                    "from": from_,
                    "to": to,
                    "lines": len(body["lines"]),
                    "get_statement_ms": [_ms(t) for t in timings],
                    "best_ms": _ms(min(timings)),
                    "median_ms": _ms(sorted(timings)[2]),
                    "csv_ms": _ms(csv_s),
                    "paged": await _pages_timed(client, f"/statements/{org}?from={from_}&to={to}", charity, body),
                }
        figures["explain_analyze"] = {
            "opening_balance": await _plan(
                conn,
                "SELECT coalesce(sum(charged_pence - reversed_pence - paid_pence), 0) "
                "FROM statement_days WHERE organisation_id = $1 AND on_date < $2",
                org,
                date(2025, 4, 1),
            ),
            "lines": await _plan(
                conn,
                "SELECT * FROM payments WHERE organisation_id = $1 AND business_date >= $2 AND business_date <= $3",
                org,
                date(2025, 4, 1),
                date(2026, 3, 31),
            ),
        }
        figures["limit_select_1_round_trip_ms"] = await _round_trip_ms(conn)
        return figures
    finally:
        await conn.close()


async def _pages_timed(client: Any, url: str, headers: dict, whole: dict, per_page: int = 200) -> dict:
    """The first and the last page of `per_page` lines (the web app's page), five times each; the
    last page's lines must be the whole statement's last lines, balances included."""
    last = max(1, -(-len(whole["lines"]) // per_page))
    figures: dict[str, Any] = {"per_page": per_page}
    for name, page in (("first_page", 1), ("last_page", last)):
        timings = []
        for _ in range(5):
            started = time.perf_counter()
            answer = await client.get(f"{url}&per_page={per_page}&page={page}", headers=headers, timeout=600)
            timings.append(time.perf_counter() - started)
            answer.raise_for_status()
        lines = answer.json()["lines"]
        assert lines == whole["lines"][(page - 1) * per_page : page * per_page], f"page {page} differs"
        figures[name] = {"page": page, "best_ms": _ms(min(timings)), "median_ms": _ms(sorted(timings)[2])}
    return figures


async def _plan(conn: asyncpg.Connection, sql: str, *args: Any) -> list[str]:
    return [row[0] for row in await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *args)]


# --- rebuild -----------------------------------------------------------------------------------


def ledger_events(pcn: str, count: int) -> list[tuple[ev.EventSpec, ev.Strict, str]]:
    """`count` payments due over 20 organisations and two years, a settlement per organisation and month
    paying most of what fell due, and one payment in fifty taken back: (spec, event, cause key), in
    the order the live ledger would have published them by topic."""
    from socialrx_funding_ledger import domain
    from socialrx_funding_ledger.ledger import PAYMENT_NAMESPACE

    due: list[tuple[ev.EventSpec, ev.Strict, str]] = []
    by_org_month: dict[tuple[str, date], list[tuple[str, int]]] = {}
    for i in range(count):
        org, business_date = f"org-rebuild-{i % 20}", date(2025, 4, 1) + timedelta(days=(i // 20) % 730)
        cause = f"referral_accepted:{pcn.lower()}-{i}"
        payment = ev.PaymentDue(
            payment_id=str(uuid.uuid5(PAYMENT_NAMESPACE, cause)),
            agreement_id=f"agreement-rebuild-{i % 20}",
            pcn_id=pcn,
            organisation_id=org,
            referral_id=f"{pcn.lower()}-{i}",
            basis="referral_accepted",
            amount_pence=5000,
            period=domain.period_of(business_date, "quarterly").label,
            due_date=domain.due_date(business_date, "quarterly", 30),
            business_date=business_date,
            caused_at=datetime(business_date.year, business_date.month, business_date.day, 10, tzinfo=timezone.utc),
        )
        due.append((ev.PAYMENT_DUE, payment, cause))
        by_org_month.setdefault((org, business_date.replace(day=1)), []).append((payment.payment_id, 5000))
    settled: list[tuple[ev.EventSpec, ev.Strict, str]] = []
    paid: set[str] = set()
    for (org, month), items in sorted(by_org_month.items()):
        chosen = items[: max(1, len(items) * 3 // 4)]
        paid.update(p for p, _ in chosen)
        settlement_id = str(uuid.uuid4())
        settled.append(
            (
                ev.PAYMENT_SETTLED,
                ev.PaymentSettled(
                    settlement_id=settlement_id,
                    pcn_id=pcn,
                    organisation_id=org,
                    amount_pence=sum(a for _, a in chosen) + 700,
                    paid_on=month + timedelta(days=40),
                    reference=f"bacs {org} {month}",
                    allocations=[ev.Allocation(payment_id=p, amount_pence=a) for p, a in chosen],
                ),
                f"settlement:key:{pcn}:{settlement_id}",
            )
        )
    reversed_: list[tuple[ev.EventSpec, ev.Strict, str]] = []
    for _spec, payment, _ in due[::50]:
        assert isinstance(payment, ev.PaymentDue) and payment.business_date is not None
        was_paid = payment.payment_id in paid
        reversed_.append(
            (
                ev.PAYMENT_REVERSED,
                ev.PaymentReversed(
                    payment_id=payment.payment_id,
                    agreement_id=payment.agreement_id,
                    pcn_id=pcn,
                    organisation_id=payment.organisation_id,
                    referral_id=payment.referral_id,
                    basis=payment.basis,
                    reversed_pence=5000,
                    open_cancelled_pence=0 if was_paid else 5000,
                    overpaid_pence=5000 if was_paid else 0,
                    business_date=payment.business_date + timedelta(days=100),
                    reason="bench correction",
                ),
                f"reversal:payment:{payment.payment_id}",
            )
        )
    return due + settled + reversed_


async def produce(bootstrap: str, items: list[tuple[ev.EventSpec, ev.Strict, str]]) -> float:
    from socialrx_funding_ledger.ledger import HEADER_CAUSE

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    started = time.perf_counter()
    try:
        pending = []
        for spec, data, cause in items:
            envelope = ev.new_event(spec, data, source="funding-ledger")
            pending.append(
                await producer.send(
                    spec.topic,
                    envelope.to_bytes(),
                    key=envelope.subject.encode(),
                    headers=[(HEADER_CAUSE, cause.encode())],
                )
            )
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def rebuild_figures(
    pg: PostgresServer, bootstrap: str, count: int = 100_000, *, check_payments: int = 3_000
) -> dict:
    """Rebuild speed over `count` payments' events; and, over `check_payments` payments' events, equality
    with a ledger written one event at a time by the live write path, whose speed is the 'before'."""
    from socialrx_funding_ledger import rebuild
    from socialrx_shared.db import make_engine, make_sessionmaker

    # Equal to live: a smaller history (the live path is slow: that is the point), compared row by row.
    small_pcn = "Q" + uuid.uuid4().hex[:8].upper()
    small = ledger_events(small_pcn, check_payments)
    await produce(bootstrap, small)
    records = {
        spec.topic: await rebuild.read_topic(bootstrap, spec.topic)
        for spec in (ev.PAYMENT_DUE, ev.PAYMENT_SETTLED, ev.PAYMENT_REVERSED)
    }
    live = await _fresh_ledger(pg, "bench_rebuild_live")
    engine = make_engine(live, pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            await session.execute(
                insert(rebuild.agreements),
                [
                    {
                        "id": f"agreement-rebuild-{o}",
                        "pcn_id": small_pcn,
                        "organisation_id": f"org-rebuild-{o}",
                        "per_referral_pence": 5000,
                        "per_outcome_pence": 0,
                        "outcome_statuses": ["completed"],
                        "block_grant_pence_per_period": 0,
                        "cap_pence_per_year": None,
                        "period": "quarterly",
                        "days_after_period_end": 30,
                        "starts_on": date(2025, 4, 1),
                        "ends_on": None,
                        "created_by": "bench",
                    }
                    for o in range(20)
                ],
            )
        started = time.perf_counter()
        async with make_sessionmaker(engine)() as session, session.begin():
            one_by_one = await rebuild.replay_one_by_one(
                session,
                records[ev.PAYMENT_DUE.topic],
                records[ev.PAYMENT_SETTLED.topic],
                small_pcn,
                records[ev.PAYMENT_REVERSED.topic],
            )
        one_by_one_s = time.perf_counter() - started
    finally:
        await engine.dispose()
    one_by_one_n = one_by_one["payment_due"] + one_by_one["payment_settled"] + one_by_one["payment_reversed"]
    checked = await rebuild.rebuild(
        bootstrap, await _fresh_ledger(pg, "bench_rebuild_check"), source_url=live, pcn_id=small_pcn
    )

    # Speed: the whole history on the topics, this run's PCN replayed, nothing to compare.
    pcn = "R" + uuid.uuid4().hex[:8].upper()
    items = ledger_events(pcn, count)
    produce_s = await produce(bootstrap, items)
    started = time.perf_counter()
    for spec in (ev.PAYMENT_DUE, ev.PAYMENT_SETTLED, ev.PAYMENT_REVERSED):
        await rebuild.read_topic(bootstrap, spec.topic)
    read_s = time.perf_counter() - started
    target = pg.new_database("bench_rebuild")
    started = time.perf_counter()
    report = await rebuild.rebuild(bootstrap, target, pcn_id=pcn)
    rebuild_s = time.perf_counter() - started
    read = sum(report["replayed"].values())
    applied = sum(report["replayed"][k] for k in ("payment_due", "payment_settled", "payment_reversed"))
    conn = await asyncpg.connect(_dsn(target))
    try:
        copy_rows_per_s = await _copy_rows_per_s(conn)
    finally:
        await conn.close()
    return {
        "events_of_this_run": len(items),
        "events_read": read,
        "events_applied": applied,
        "produce_seconds": round(produce_s, 1),
        "rebuild_seconds": round(rebuild_s, 2),
        "rebuild_events_per_s": round(read / rebuild_s),
        "rebuild_applied_per_s": round(applied / rebuild_s),
        "target_events_per_s": 20_000,
        "limit_read_topics_events_per_s": round(read / read_s),
        "limit_copy_rows_per_s": copy_rows_per_s,
        "check": {
            "events": len(small),
            "equal_to_one_by_one_live_path": checked.get("equal"),
            "differences": checked.get("differences", [])[:5],
            "one_by_one_seconds": round(one_by_one_s, 2),
            "one_by_one_events_per_s": round(one_by_one_n / one_by_one_s),
        },
        "note": "rebuild: reads the three topics from offset 0 (earlier runs' events too, filtered by PCN), migrates "
        "a fresh database (included in the time), replays in batches; one by one: the live write path per "
        "event (what the rebuild did before) over records already read, into a migrated database",
    }


# --- on its own --------------------------------------------------------------------------------


async def run(args: argparse.Namespace, pg: PostgresServer, bootstrap: str) -> dict:
    secret = "bench-ledger-" + uuid.uuid4().hex
    only = set(args.only.split(","))
    figures: dict[str, Any] = {}
    if "rebuild" in only:
        figures["rebuild"] = await rebuild_figures(
            pg, bootstrap, args.rebuild_payments, check_payments=args.check_payments
        )
    if "statement" in only:
        figures["statement"] = await statement_figures(pg, bootstrap, secret, args.statement_payments)
    if "arrears" in only:
        figures["arrears"] = await arrears_figures(pg, bootstrap, secret, args.arrears_payments)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m socialrx_bench.bench_ledger", description=__doc__.split("\n")[0])
    parser.add_argument("--arrears-payments", type=int, default=1_000_000)
    parser.add_argument("--statement-payments", type=int, default=100_000)
    parser.add_argument("--rebuild-payments", type=int, default=100_000)
    parser.add_argument(
        "--check-payments",
        type=int,
        default=3_000,
        help="payments whose events the rebuild is compared over with the one-by-one live path",
    )
    parser.add_argument("--only", default="arrears,statement,rebuild", help="comma-separated parts to run")
    args = parser.parse_args(argv)
    kafka = start_kafka()
    try:
        pg = start_postgres()
        try:
            started = time.perf_counter()
            figures = asyncio.run(run(args, pg, kafka.bootstrap_servers))
            figures["seconds_total"] = round(time.perf_counter() - started, 1)
            print(json.dumps(figures, indent=2, default=str))
        finally:
            pg.stop()
    finally:
        kafka.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
