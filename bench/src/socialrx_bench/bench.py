"""`make bench`: the whole pipeline's throughput and latency, next to the raw Kafka client limit.

Starts (or reuses, from KAFKA_BOOTSTRAP_SERVERS / *_DATABASE_URL) Kafka and PostgreSQL on free
ports, runs the four services as separate processes with separate databases, drives referral
lifecycles through the HTTP API (bench_driver.py), then measures and checks (see bench/README.md):

- flat out: N lifecycles, lifecycles/s from the first POST /referrals to the last payment ledgered,
  events/s per service, latency referral.accepted published -> its payment posted in the ledger;
- fixed rate: the same latency at an offered rate (default 100 lifecycles/s);
- the limit: raw aiokafka produce and consume of as many messages of the same size on the same broker;
- ledger rebuild from its topics (events/s) and GET /arrears over a ledger of 1,000,000 payments;
- correctness: every lifecycle completed exactly once, trial balance zero.

It prints a table and writes bench/results/<name>.json and .png. It asserts no speed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import platform as host
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata as pkg_metadata
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from socialrx_harness import procs
from socialrx_harness.infra import PostgresServer, given_database_urls
from socialrx_harness.kafka import KAFKA_VERSION, LocalKafka
from socialrx_harness.platform import DEV_PERSON_REF_KEY, Platform
from socialrx_harness.postgres import SERVICES, LocalPostgres
from socialrx_harness.testing import auth, read_topic
from socialrx_harness.topics import ensure_topics_sync
from socialrx_shared import events as ev

from . import bench_ledger  # ledger-fast hook (arrears projections)
from .bench_driver import FEE_OUTCOME_PENCE, FEE_REFERRAL_PENCE, PERSON, Driver, PhaseResult, World, make_world
from .bench_png import Chart

ROOT = Path(__file__).resolve().parents[3]
DEFAULT_N = 1500
# created, accepted, outcome.recorded, 2 x payment.due; and service.updated, coalesced by the directory
# (at most 2 per lifecycle, far fewer under load: one per service per DIRECTORY_SERVICE_UPDATE_INTERVAL_S).
EVENTS_PER_LIFECYCLE_WITHOUT_SERVICE_UPDATES = 5


def _say(message: str = "") -> None:
    print(message, flush=True)


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def _latency_summary(values_s: list[float]) -> dict:
    ms = [v * 1000 for v in values_s]
    return {
        "count": len(ms),
        "p50_ms": _pct(ms, 50),
        "p95_ms": _pct(ms, 95),
        "p99_ms": _pct(ms, 99),
        "max_ms": max(ms) if ms else None,
        "mean_ms": statistics.fmean(ms) if ms else None,
    }


# --- CPU per process tree, from /proc ------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree


def _cpu_s(pid: int, tree: dict[int, list[int]]) -> float:
    """User + system CPU seconds of a process and its live descendants."""
    total, todo = 0.0, [pid]
    tick = os.sysconf("SC_CLK_TCK")
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
        todo.extend(tree.get(p, []))
    return total


class CpuMeter:
    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids

    def sample(self) -> dict[str, float]:
        tree = _children()
        sample = {name: _cpu_s(pid, tree) for name, pid in self.pids.items()}
        usage = resource.getrusage(resource.RUSAGE_SELF)
        sample["bench driver"] = usage.ru_utime + usage.ru_stime
        return sample

    @staticmethod
    def ms_per(before: dict[str, float], after: dict[str, float], count: int) -> dict[str, float]:
        """CPU milliseconds per unit (lifecycle) of each component, and of the platform (all but the driver)."""
        if count <= 0:
            return {}
        per = {k: round((after[k] - before.get(k, 0.0)) * 1000 / count, 2) for k in after}
        per["platform (services, Kafka, PostgreSQL)"] = round(sum(v for k, v in per.items() if k != "bench driver"), 2)
        return per

    @staticmethod
    def share(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
        """Cores used by each component over the interval (2.0 = both cores of this machine)."""
        return {k: round((after[k] - before.get(k, 0.0)) / seconds, 2) for k in after} if seconds > 0 else {}


# --- what the services' databases say ------------------------------------------------------------


class Databases:
    def __init__(self, urls: dict[str, str]) -> None:
        self.urls = urls
        self.conns: dict[str, asyncpg.Connection] = {}

    async def __aenter__(self) -> Databases:
        for service, url in self.urls.items():
            self.conns[service] = await asyncpg.connect(_dsn(url))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for conn in self.conns.values():
            await conn.close()

    async def payments_of(self, ids: list[str]) -> list[asyncpg.Record]:
        return await self.conns["funding-ledger"].fetch(
            "SELECT referral_id, basis, payment_id, created_at FROM payments WHERE referral_id = ANY($1::text[])", ids
        )

    async def ledgered(self, pcn_id: str) -> int:
        return await self.conns["funding-ledger"].fetchval("SELECT count(*) FROM payments WHERE pcn_id = $1", pcn_id)

    async def unsent(self) -> dict[str, int]:
        return {s: await c.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL") for s, c in self.conns.items()}

    async def events_between(self, t0: datetime, t1: datetime) -> dict[str, dict]:
        """Per service: events consumed (inbox, by topic) and published (outbox) in [t0, t1]."""
        out = {}
        for service, conn in self.conns.items():
            consumed = dict(
                await conn.fetch(
                    "SELECT topic, count(*) FROM inbox WHERE handled_at BETWEEN $1 AND $2 GROUP BY topic", t0, t1
                )
            )
            published = dict(
                await conn.fetch(
                    "SELECT topic, count(*) FROM outbox WHERE created_at BETWEEN $1 AND $2 GROUP BY topic", t0, t1
                )
            )
            sizes = await conn.fetchval(
                "SELECT avg(length(value)) FROM outbox WHERE created_at BETWEEN $1 AND $2", t0, t1
            )
            out[service] = {"consumed": consumed, "published": published, "avg_value_bytes": float(sizes or 0)}
        return out


# --- phases ------------------------------------------------------------------------------------


async def wait_ledgered(dbs: Databases, pcn_id: str, expected: int, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await dbs.ledgered(pcn_id) >= expected:
            return time.time()
        await asyncio.sleep(0.25)
    raise TimeoutError(f"only {await dbs.ledgered(pcn_id)} of {expected} payments ledgered after {timeout_s:.0f}s")


async def wait_caught_up(dbs: Databases, ids: list[str], timeout_s: float) -> float:
    """Until referral-intake shows every referral's outcome and the directory gave back every place:
    the slowest consumers are done with these lifecycles too."""
    deadline = time.monotonic() + timeout_s
    while True:
        intake = await dbs.conns["referral-intake"].fetchval(
            "SELECT count(*) FROM referrals WHERE id = ANY($1::text[]) AND status = 'outcome_recorded'", ids
        )
        directory = await dbs.conns["directory"].fetchval(
            "SELECT count(*) FROM referral_inbox WHERE referral_id = ANY($1::text[]) AND status = 'finished'", ids
        )
        if intake >= len(ids) and directory >= len(ids):
            return time.time()
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"after {timeout_s:.0f}s intake shows {intake}, directory {directory} of {len(ids)} finished"
            )
        await asyncio.sleep(0.25)


async def handler_seconds(urls: dict[str, str]) -> dict[str, dict]:
    """Mean time in the consumer's handler (one database transaction) per service, from /metrics."""
    out: dict[str, dict] = {}
    async with httpx.AsyncClient(timeout=30) as client:
        for service, url in urls.items():
            total = count = 0.0
            for line in (await client.get(url + "/metrics")).text.splitlines():
                if line.startswith("socialrx_handler_duration_seconds_sum"):
                    total += float(line.rsplit(" ", 1)[1])
                elif line.startswith("socialrx_handler_duration_seconds_count"):
                    count += float(line.rsplit(" ", 1)[1])
            out[service] = {"handled": int(count), "mean_handler_ms": round(1000 * total / count, 1) if count else None}
    return out


async def phase_figures(phase: PhaseResult, dbs: Databases, accepted_published: dict[str, float]) -> dict:
    rows = await dbs.payments_of(phase.referral_ids)
    posted = {r["referral_id"]: r["created_at"].timestamp() for r in rows if r["basis"] == "referral_accepted"}
    last = max((r["created_at"].timestamp() for r in rows), default=phase.first_create_sent)
    window = last - phase.first_create_sent
    latencies = [
        posted[rid] - accepted_published[rid]
        for rid in phase.referral_ids
        if rid in posted and rid in accepted_published
    ]
    n = len(phase.referral_ids)
    return {
        "lifecycles": n,
        "offered_rate_per_s": phase.offered_rate,
        "seconds_first_create_to_last_payment": round(window, 3),
        "lifecycles_per_s": round(n / window, 1) if window > 0 else None,
        "latency_accepted_published_to_payment_posted": _latency_summary(latencies),
        "driver_lifecycle_create_to_outcome_201": _latency_summary(phase.lifecycle_s),
        "http_requests": phase.requests,
        "http_retries_not_known_yet": phase.retries_not_yet_known,
        "http_retries_connection": phase.retries_connection,
        "http_retries_already_done": phase.retries_already_done,
        "http_errors": phase.errors,
        "http_seconds_by_step": {
            step: {
                "requests": len(v),
                "mean_ms": round(statistics.fmean(v) * 1000, 1),
                "p95_ms": round(_pct(v, 95) * 1000, 1),
            }
            for step, v in phase.http_s.items()
        },
        "_posted": posted,
        "_rows": rows,
    }


async def hop_latencies(bootstrap: str, dbs: Databases, t0: datetime, t1: datetime) -> dict:
    """Where a lifecycle's time goes, per service: outbox (staged -> sent by the relay) and, per topic
    consumed, published (Kafka CreateTime) -> handled (inbox row committed), over [t0, t1]."""
    published: dict[str, float] = {}
    for topic in (
        ev.REFERRAL_CREATED.topic,
        ev.REFERRAL_ACCEPTED.topic,
        ev.OUTCOME_RECORDED.topic,
        ev.SERVICE_UPDATED.topic,
    ):
        for record in await read_topic(bootstrap, topic, timeout_s=120):
            try:
                published[json.loads(record.value)["id"]] = record.timestamp / 1000
            except (ValueError, KeyError, TypeError):
                continue
    out: dict[str, dict] = {}
    for service, conn in dbs.conns.items():
        relay = await conn.fetch(
            "SELECT extract(epoch FROM sent_at - created_at) AS s FROM outbox "
            "WHERE created_at BETWEEN $1 AND $2 AND sent_at IS NOT NULL",
            t0,
            t1,
        )
        hops = {"outbox staged -> sent": _latency_summary([float(r["s"]) for r in relay])}
        by_topic: dict[str, list[float]] = {}
        for r in await conn.fetch(
            "SELECT event_id::text AS id, topic, handled_at FROM inbox WHERE handled_at BETWEEN $1 AND $2", t0, t1
        ):
            if r["id"] in published:
                by_topic.setdefault(r["topic"], []).append(r["handled_at"].timestamp() - published[r["id"]])
        for topic, values in sorted(by_topic.items()):
            hops[f"{topic} published -> handled"] = _latency_summary(values)
        out[service] = hops
    return out


async def accepted_publish_times(bootstrap: str, pcn_id: str) -> dict[str, float]:
    """referral id -> when referral.accepted was published (the Kafka record's CreateTime, set by the
    directory's outbox relay producer as it sent the record)."""
    found = {}
    for record in await read_topic(bootstrap, ev.REFERRAL_ACCEPTED.topic, timeout_s=120):
        try:
            data = json.loads(record.value)["data"]
        except (ValueError, KeyError, TypeError):
            continue
        if data.get("pcn_id") == pcn_id:
            found.setdefault(data["referral_id"], record.timestamp / 1000)
    return found


async def raw_kafka(bootstrap: str, count: int, size: int) -> dict:
    """Produce then consume `count` messages of `size` bytes with aiokafka, configured as the services'
    outbox relay is (acks=all, idempotence, linger 5 ms), on a topic of the platform's shape (3 partitions)."""
    topic = f"bench.raw.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    finally:
        await admin.close()
    value = b"x" * size
    keys = [str(uuid.uuid4()).encode() for _ in range(1000)]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        for p in range(3):  # a new topic's leaders settle before the clock starts
            await producer.send_and_wait(topic, b"warm", partition=p)
        started = time.perf_counter()
        for first in range(0, count, 500):  # batches of 500, as the relay sends them, then await every ack
            pending = [
                await producer.send(topic, value, key=keys[i % 1000]) for i in range(first, min(first + 500, count))
            ]
            await asyncio.gather(*pending)
        produce_s = time.perf_counter() - started
        started = time.perf_counter()
        for i in range(min(count, 500)):
            await producer.send_and_wait(topic, value, key=keys[i % 1000])
        one_by_one_s = time.perf_counter() - started
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(3)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        seen, started = 0, time.perf_counter()
        count += 3 + min(count, 500)  # the warm-up and the one-at-a-time messages are on it too
        while seen < count:
            for records in (await consumer.getmany(timeout_ms=1000, max_records=5000)).values():
                seen += len(records)
        consume_s = time.perf_counter() - started
    finally:
        await consumer.stop()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic])
    except Exception:
        pass
    finally:
        await admin.close()
    return {
        "messages": count,
        "value_bytes": size,
        "produce_per_s": round(count / produce_s, 1),
        "consume_per_s": round(count / consume_s, 1),
        "produce_one_at_a_time_per_s": round(min(count, 500) / one_by_one_s, 1),
    }


async def rebuild_figures(bootstrap: str, ledger_url: str, pcn_id: str) -> dict:
    from socialrx_funding_ledger.rebuild import rebuild

    target = PostgresServer(ledger_url).new_database("bench_rebuild")
    started = time.perf_counter()
    report = await rebuild(bootstrap, target, source_url=ledger_url, pcn_id=pcn_id)
    seconds = time.perf_counter() - started
    read = sum(report["replayed"].values())
    return {
        "seconds": round(seconds, 2),
        "events_read": read,
        "events_read_per_s": round(read / seconds, 1),
        "replayed_of_this_run": report["replayed"]["payment_due"] + report["replayed"]["payment_settled"],
        "equal_to_live": report.get("equal"),
        "differences": report.get("differences", [])[:5],
        "note": "reads payment.due.v1 and payment.settled.v1 from offset 0, replays this run's PCN into a fresh "
        "database (migrations included in the time), compares with the live ledger",
    }


ARREARS_SQL = """
INSERT INTO payments (payment_id, cause_key, agreement_id, pcn_id, organisation_id, referral_id, basis,
                      amount_pence, open_pence, period, due_date, business_date, refused_over_cap_pence)
SELECT 'arrears-' || $1 || '-' || g, 'arrears:' || $1 || ':' || g, 'agreement-arrears-' || (g % 200), $2,
       'org-arrears-' || (g % 200), 'ref-arrears-' || g, 'referral_accepted', 5000, 5000, '2025/26-Q1',
       DATE '2024-07-31' + (g % 700)::int, DATE '2024-04-01' + (g % 700)::int, 0
FROM generate_series($3::bigint, $4::bigint) AS g
"""


async def arrears_figures(
    client: httpx.AsyncClient, ledger_http: str, ledger_url: str, secret: str, count: int
) -> dict:
    """GET /arrears over `count` payments of one PCN (200 organisations, due dates over 700 days, a third
    part-paid), written straight into the ledger's tables under a PCN of their own, then deleted."""
    pcn = "A" + uuid.uuid4().hex[:8].upper()
    tag = pcn.lower()
    conn = await asyncpg.connect(_dsn(ledger_url))
    try:
        started = time.perf_counter()
        for first in range(0, count, 200_000):
            await conn.execute(ARREARS_SQL, tag, pcn, first, min(first + 200_000, count) - 1)
        settled = count // 3
        await conn.execute(
            "INSERT INTO settlements (settlement_id, cause_key, pcn_id, organisation_id, amount_pence, unallocated_pence,"
            " paid_on, reference) SELECT 'settle-' || $1 || '-' || o, 'settle:' || $1 || ':' || o, $2,"
            " 'org-arrears-' || o, 2500 * $3::bigint, 0, DATE '2025-06-01', 'bench ' || $1 || ' ' || o"
            " FROM generate_series(0, 199) AS o",
            tag,
            pcn,
            settled // 200 + 1,
        )
        await conn.execute(
            "INSERT INTO allocations (settlement_id, payment_id, amount_pence) SELECT 'settle-' || $1 || '-' || (g % 200),"
            " 'arrears-' || $1 || '-' || g, 2500 FROM generate_series(0, $2::bigint - 1) AS g",
            tag,
            settled,
        )
        await bench_ledger.build_projections(conn, pcn)  # ledger-fast hook: GET /arrears reads the projections
        await conn.execute("ANALYZE payments; ANALYZE allocations; ANALYZE settlements")
        load_s = time.perf_counter() - started
        finance = auth(secret, "finance", pcn_id=pcn)
        timings, body = [], None
        for _ in range(3):
            started = time.perf_counter()
            answer = await client.get(ledger_http + "/arrears?as_of=2026-11-24", headers=finance, timeout=600)
            timings.append(time.perf_counter() - started)
            answer.raise_for_status()
            body = answer.json()
        one_org_started = time.perf_counter()
        answer = await client.get(
            ledger_http + "/arrears?as_of=2026-11-24&organisation_id=org-arrears-7", headers=finance, timeout=600
        )
        one_org_s = time.perf_counter() - one_org_started
        # The query every accrual runs (ledger.accrued_in_financial_year) at this table size.
        cap_ms = []
        for _ in range(3):
            started = time.perf_counter()
            await conn.fetchval(
                "SELECT coalesce(sum(amount_pence), 0) FROM payments WHERE agreement_id = $1 "
                "AND business_date >= $2 AND business_date < $3",
                "agreement-arrears-7",
                datetime(2025, 4, 1).date(),
                datetime(2026, 4, 1).date(),
            )
            cap_ms.append(round((time.perf_counter() - started) * 1000, 1))
        expected = count * 5000 - settled * 2500
        result = {
            "payments": count,
            "organisations": 200,
            "allocations": settled,
            "load_seconds": round(load_s, 1),
            "get_arrears_seconds": [round(t, 3) for t in timings],
            "best_seconds": round(min(timings), 3),
            "one_organisation_seconds": round(one_org_s, 3),
            "cap_query_ms": cap_ms,
            "owed_pence_correct": body is not None and body["total"]["owed_pence"] == expected,
        }
        started = time.perf_counter()
        await conn.execute("DELETE FROM allocations WHERE settlement_id LIKE 'settle-' || $1 || '-%'", tag)
        await conn.execute("DELETE FROM settlements WHERE pcn_id = $1", pcn)
        await conn.execute("DELETE FROM payments WHERE pcn_id = $1", pcn)
        await bench_ledger.delete_projections(conn, pcn)  # ledger-fast hook
        result["cleanup_seconds"] = round(time.perf_counter() - started, 1)
        return result
    finally:
        await conn.close()


# --- correctness -------------------------------------------------------------------------------


async def correctness(
    dbs: Databases, client: httpx.AsyncClient, world: World, phases: list[PhaseResult], bootstrap: str
) -> dict:
    ids = [rid for p in phases for rid in p.referral_ids]
    statuses = dict(
        await dbs.conns["referral-intake"].fetch(
            "SELECT status, count(*) FROM referrals WHERE id = ANY($1::text[]) GROUP BY status", ids
        )
    )
    rows = await dbs.payments_of(ids)
    per_referral: dict[str, list[str]] = {}
    for r in rows:
        per_referral.setdefault(r["referral_id"], []).append(r["basis"])
    exactly_once = sum(
        1 for rid in ids if sorted(per_referral.get(rid, [])) == ["outcome_recorded", "referral_accepted"]
    )
    outcomes = await dbs.conns["outcomes"].fetchval(
        "SELECT count(*) FROM outcomes WHERE referral_id = ANY($1::text[])", ids
    )
    due_events: dict[str, set] = {}
    for record in await read_topic(bootstrap, ev.PAYMENT_DUE.topic, timeout_s=120):
        try:
            data = json.loads(record.value)["data"]
        except (ValueError, KeyError, TypeError):
            continue
        if data.get("pcn_id") == world.pcn_id:
            due_events.setdefault(data["referral_id"], set()).add(data["payment_id"])
    balance = (await client.get(world.urls["funding-ledger"] + "/trial-balance", headers=world.admin)).json()
    expense = await dbs.conns["funding-ledger"].fetchval(
        "SELECT coalesce(sum(debit_pence - credit_pence), 0) FROM journal_lines WHERE account = $1",
        f"expense:{world.pcn_id}",
    )
    unsent = await dbs.unsent()
    expected_pence = len(ids) * (FEE_REFERRAL_PENCE + FEE_OUTCOME_PENCE)
    checks = {
        "lifecycles_driven": len(ids),
        "driver_errors": sum(sum(p.errors.values()) for p in phases),
        "referrals_outcome_recorded_in_intake": statuses.get("outcome_recorded", 0),
        "outcomes_recorded": outcomes,
        "referrals_with_exactly_two_payments": exactly_once,
        "payments_ledgered": len(rows),
        "payment_due_published_distinct": sum(len(v) for v in due_events.values()),
        "referrals_with_payment_due_published_twice_or_more_per_basis": sum(
            1 for v in due_events.values() if len(v) > 2
        ),
        "expense_pence": int(expense),
        "expected_expense_pence": expected_pence,
        "trial_balance": balance,
        "outbox_unsent": unsent,
    }
    checks["every_lifecycle_completed_exactly_once"] = (
        len(ids) > 0
        and checks["driver_errors"] == 0
        and checks["referrals_outcome_recorded_in_intake"] == len(ids)
        and outcomes == len(ids)
        and exactly_once == len(ids)
        and len(rows) == 2 * len(ids)
        and checks["payment_due_published_distinct"] == 2 * len(ids)
        and int(expense) == expected_pence
    )
    checks["trial_balance_zero"] = bool(balance.get("balanced")) and balance["debits_pence"] == balance["credits_pence"]
    checks["ok"] = checks["every_lifecycle_completed_exactly_once"] and checks["trial_balance_zero"]
    return checks


# --- the chart ---------------------------------------------------------------------------------


def timeline(phases: list[PhaseResult], figures: list[dict], accepted: dict[str, float], t0: float) -> dict:
    created: dict[int, int] = {}
    done: dict[int, int] = {}
    lat: dict[int, list[float]] = {}
    for phase, fig in zip(phases, figures, strict=False):
        for _rid, at in phase.created_at.items():
            created[int(at - t0)] = created.get(int(at - t0), 0) + 1
        for row in fig["_rows"]:
            if row["basis"] == "outcome_recorded":
                second = int(row["created_at"].timestamp() - t0)
                done[second] = done.get(second, 0) + 1
        for rid, posted in fig["_posted"].items():
            if rid in accepted:
                lat.setdefault(int(accepted[rid] - t0), []).append((posted - accepted[rid]) * 1000)
    end = max([*created, *done, *lat, 0]) + 1
    return {
        "second": list(range(end)),
        "created_per_s": [created.get(s, 0) for s in range(end)],
        "ledgered_per_s": [done.get(s, 0) for s in range(end)],
        "latency_p50_ms": [_pct(lat[s], 50) if s in lat else None for s in range(end)],
        "latency_p99_ms": [_pct(lat[s], 99) if s in lat else None for s in range(end)],
    }


def draw(series: dict, path: Path, title: str) -> None:
    chart = Chart(1200, 720)
    xs = series["second"]
    nan = float("nan")
    chart.text(10, 4, title, scale=2)
    chart.panel(
        (0, 20, 1200, 370),
        "LIFECYCLES/S",
        [
            ("REFERRALS CREATED/S", [(x, y) for x, y in zip(xs, series["created_per_s"], strict=False)]),
            ("LIFECYCLES LEDGERED/S", [(x, y) for x, y in zip(xs, series["ledgered_per_s"], strict=False)]),
        ],
        x_label="TIME S",
    )
    chart.panel(
        (0, 370, 1200, 720),
        "LATENCY ACCEPTED PUBLISHED TO PAYMENT POSTED (MS)",
        [
            ("P50", [(x, nan if y is None else y) for x, y in zip(xs, series["latency_p50_ms"], strict=False)]),
            ("P99", [(x, nan if y is None else y) for x, y in zip(xs, series["latency_p99_ms"], strict=False)]),
        ],
        x_label="TIME S",
    )
    chart.save(path)


# --- the machine and the run -------------------------------------------------------------------


def machine() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        host.processor(),
    )
    mem_kb = next(
        (
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        0,
    )
    load = os.getloadavg()
    return {
        "hostname": host.node(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gb": round(mem_kb / 1e6, 1),
        "kernel": host.release(),
        "load_average_at_start": [round(x, 2) for x in load],
    }


def versions(pg_version: str | None) -> dict:
    found = {"python": host.python_version(), "kafka": KAFKA_VERSION, "postgresql": pg_version}
    for name in ("aiokafka", "faststream", "fastapi", "uvicorn", "sqlalchemy", "asyncpg", "httpx", "pydantic"):
        with contextlib.suppress(pkg_metadata.PackageNotFoundError):
            found[name] = pkg_metadata.version(name)
    try:
        java = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=20).stderr.splitlines()[0]
        found["java"] = java
    except (OSError, IndexError, subprocess.SubprocessError):
        pass
    return found


def commit() -> dict:
    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


async def measure(
    args: argparse.Namespace,
    *,
    bootstrap: str,
    database_urls: dict[str, str],
    urls: dict[str, str],
    secret: str,
    cpu: CpuMeter,
    infra: dict,
    profile_pids: dict[str, int] | None = None,
) -> dict:
    limits = httpx.Limits(max_connections=4 * args.workers + 20, max_keepalive_connections=4 * args.workers + 20)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client, Databases(database_urls) as dbs:
        world = await make_world(client, urls, secret, organisations=args.organisations)
        driver = Driver(client, world, workers=args.workers)
        expected = 0
        _say(f"warm-up: {args.warmup} lifecycles (services learn of the new services; connections open) ...")
        warm = await driver.run("warm-up", args.warmup)
        expected += 2 * len(warm.referral_ids)
        await wait_ledgered(dbs, world.pcn_id, expected, 120)

        # What each process burns doing nothing (polls, fetch loops, the broker's own work): at a few
        # lifecycles/s on a crowded machine it is a large part of the CPU per lifecycle, so it is shown apart.
        await asyncio.sleep(2)
        idle0 = cpu.sample()
        await asyncio.sleep(args.idle_seconds)
        idle_cores = CpuMeter.share(idle0, cpu.sample(), args.idle_seconds)
        _say(f"flat out: {args.n} lifecycles, {args.workers} concurrent HTTP workers per step ...")
        profiler = None
        if args.profile and profile_pids:  # (profile_pids: the services' pids, also for CPU per request)
            from .bench_profile import Profiler

            profiler = Profiler(args.profile, profile_pids)
            profiler.start()
        cpu0 = cpu.sample()
        flat = await driver.run("flat-out", args.n)
        expected += 2 * len(flat.referral_ids)
        _say(f"  driver done in {flat.last_outcome_done - flat.first_create_sent:.1f}s; waiting for the ledger ...")
        flat_end = await wait_ledgered(dbs, world.pcn_id, expected, max(300, args.n / 5))
        cpu0_end = cpu.sample()
        cpu_flat = CpuMeter.share(cpu0, cpu0_end, flat_end - flat.first_create_sent)
        cpu_ms_per_lifecycle = CpuMeter.ms_per(cpu0, cpu0_end, len(flat.referral_ids))
        flat_window = flat_end - flat.first_create_sent
        cpu_ms_above_idle = CpuMeter.ms_per(
            cpu0, {k: v - idle_cores.get(k, 0.0) * flat_window for k, v in cpu0_end.items()}, len(flat.referral_ids)
        )
        profile = profiler.stop() if profiler else None
        caught_up = await wait_caught_up(dbs, flat.referral_ids, max(300, args.n / 5))
        handlers = await handler_seconds(urls)
        rate = args.rate
        if rate is None:  # half what flat out achieved: latency at a load the platform can carry
            achieved = len(flat.referral_ids) / max(flat_end - flat.first_create_sent, 1e-3)
            rate = round(min(100.0, max(1.0, achieved / 2)), 1)

        rate_n = int(rate * args.rate_seconds)
        _say(f"fixed rate: {rate_n} lifecycles offered at {rate:g}/s ...")
        await asyncio.sleep(1)
        cpu1 = cpu.sample()
        fixed = await driver.run("fixed-rate", rate_n, rate)
        expected += 2 * len(fixed.referral_ids)
        fixed_end = await wait_ledgered(dbs, world.pcn_id, expected, max(300, rate_n / 5))
        await wait_caught_up(dbs, [*warm.referral_ids, *fixed.referral_ids], max(300, rate_n / 5))
        cpu_fixed = CpuMeter.share(cpu1, cpu.sample(), fixed_end - fixed.first_create_sent) if rate_n else {}
        await asyncio.sleep(2)  # let the relays mark the last rows sent

        _say("reading timestamps, counting events ...")
        accepted = await accepted_publish_times(bootstrap, world.pcn_id)
        figures = [await phase_figures(p, dbs, accepted) for p in (flat, fixed)]
        t0 = datetime.fromtimestamp(flat.first_create_sent, timezone.utc)
        t1 = datetime.fromtimestamp(
            flat.first_create_sent + figures[0]["seconds_first_create_to_last_payment"], timezone.utc
        )
        window = (t1 - t0).total_seconds()
        per_service = await dbs.events_between(t0, t1)
        hops = await hop_latencies(bootstrap, dbs, t0, t1)
        services_out = {}
        for service, counts in per_service.items():
            consumed, published = sum(counts["consumed"].values()), sum(counts["published"].values())
            services_out[service] = {
                "consumed": consumed,
                "published": published,
                "consumed_per_s": round(consumed / window, 1),
                "published_per_s": round(published / window, 1),
                "events_per_s": round((consumed + published) / window, 1),
                "consumed_by_topic": counts["consumed"],
                "published_by_topic": counts["published"],
                "cpu_cores_used": cpu_flat.get(service),
            }
        published_total = sum(s["published"] for s in services_out.values())
        sizes = [c["avg_value_bytes"] for c in per_service.values() if c["avg_value_bytes"]]
        avg_size = round(statistics.fmean(sizes)) if sizes else 600
        pipeline_events_per_s = published_total / window if window > 0 else 0.0

        _say("correctness ...")
        checks = await correctness(dbs, client, world, [warm, flat, fixed], bootstrap)
        _say(f"raw aiokafka: {published_total} messages of {avg_size} bytes ...")
        raw = await raw_kafka(bootstrap, max(published_total, 1000), avg_size)
        _say(
            f"limits: POST /referrals alone, a minimal FastAPI endpoint doing one INSERT ({args.limit_seconds:g} s each), COPY ..."
        )
        limits_http = await http_limits(
            client,
            world,
            database_urls["funding-ledger"],
            secret,
            args.workers,
            args.limit_seconds,
            (profile_pids or {}).get("referral-intake"),
        )
        limits_copy = await copy_limit(database_urls["funding-ledger"])
        _say("ledger rebuild from topics ...")
        try:
            rebuilt = await rebuild_figures(bootstrap, database_urls["funding-ledger"], world.pcn_id)
        except Exception as exc:  # e.g. no right to create a database on a given server
            rebuilt = {"error": repr(exc)[:300]}
        if args.arrears_payments:
            _say(f"GET /arrears over {args.arrears_payments:,} payments ...")
            arrears = await arrears_figures(
                client, urls["funding-ledger"], database_urls["funding-ledger"], secret, args.arrears_payments
            )
        else:
            arrears = {"skipped": True}
        extra = (
            {}
            if args.no_extra
            else await extra_phases(
                BenchStack(
                    bootstrap_servers=bootstrap,
                    database_urls=database_urls,
                    service_urls=urls,
                    jwt_secret=secret,
                    tmp=args.tmp,
                )
            )
        )
        series = timeline([flat, fixed], figures, accepted, flat.first_create_sent)
        figures[0]["seconds_first_create_to_all_services_caught_up"] = round(caught_up - flat.first_create_sent, 3)
        for service, handled in handlers.items():
            services_out[service].update(handled)
        for fig in figures:
            fig.pop("_posted")
            fig.pop("_rows")
        figures[0]["cpu_cores_used"] = cpu_flat
        figures[0]["cpu_ms_per_lifecycle"] = cpu_ms_per_lifecycle
        figures[0]["cpu_cores_idle"] = idle_cores
        figures[0]["cpu_ms_per_lifecycle_above_idle"] = cpu_ms_above_idle
        figures[1]["cpu_cores_used"] = cpu_fixed
        return {
            "load_path": "HTTP API only (httpx.AsyncClient): POST /referrals, POST /referrals/{id}/accept, "
            "POST /referrals/{id}/outcomes; payments accrue from events. No bulk import.",
            "pcn_id": world.pcn_id,
            "organisations": args.organisations,
            "workers_per_step": args.workers,
            "warmup_lifecycles": len(warm.referral_ids),
            "flat_out": figures[0],
            "fixed_rate": figures[1],
            "per_service_flat_out": services_out,
            "hop_latency_flat_out": hops,
            "warmup_errors": warm.errors,
            "pipeline_events_published_flat_out": published_total,
            "pipeline_events_per_s": round(pipeline_events_per_s, 1),
            "raw_kafka": raw,
            "ratio_pipeline_events_to_raw_produce": round(pipeline_events_per_s / raw["produce_per_s"], 4),
            "limits_http": limits_http,
            "limits_copy": limits_copy,
            "ledger_rebuild": rebuilt,
            "arrears": arrears,
            "correctness": checks,
            "target": {
                "lifecycles_per_s": 150,  # issue 14
                "note": "issue 14: flat out over HTTP, every lifecycle exactly once (an earlier aim was 2,000/s)",
            },
            "infra": infra,
            "timeline": series,
            **({"profile_flat_out": profile} if profile else {}),
            "extra_phases": extra,
        }


# --- the limits beside the figures: one INSERT over HTTP, COPY -------------------------------------


async def _post_for(client: httpx.AsyncClient, url: str, make: Any, seconds: float, workers: int) -> dict:
    """`workers` concurrent loops POSTing `make()` = (headers, json) to `url` for `seconds`: req/s of 2xx."""
    ok, failed, times = 0, 0, []
    end = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal ok, failed
        while time.perf_counter() < end:
            headers, body = make()
            sent = time.perf_counter()
            try:
                answer = await client.post(url, headers=headers, json=body)
            except httpx.TransportError:
                failed += 1
                continue
            times.append(time.perf_counter() - sent)
            if answer.is_success:
                ok += 1
            else:
                failed += 1

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(workers)))
    elapsed = time.perf_counter() - started
    return {
        "requests_ok": ok,
        "failed": failed,
        "req_per_s": round(ok / elapsed, 1),
        "mean_ms": round(statistics.fmean(times) * 1000, 1) if times else None,
        "p99_ms": round(_pct(times, 99) * 1000, 1) if times else None,
    }


async def http_limits(
    client: httpx.AsyncClient,
    world: World,
    database_url: str,
    secret: str,
    workers: int,
    seconds: float,
    intake_pid: int | None,
) -> dict:
    """`POST /referrals` alone, then the minimal FastAPI endpoint doing one INSERT (bench_minimal.py,
    its own process, same stack), each for `seconds` with `workers` concurrent clients; and the CPU
    each used per request. Referrals made here belong to a PCN of their own (not the bench's)."""
    pcn_id = "C" + uuid.uuid4().hex[:8].upper()
    link_worker = auth(secret, "link_worker", pcn_id=pcn_id, practice_id="B82005", sub=f"lw-limit-{pcn_id.lower()}")
    bodies = [
        {
            "service_id": service,
            "needs": ["loneliness"],
            "person": PERSON,
            "consent": {"given": True, "recorded_at": "2026-11-01T10:00:00Z"},
        }
        for service in world.services
    ]
    counter = iter(range(10**9))

    def referral() -> tuple[dict, dict]:
        return {**link_worker, "Idempotency-Key": str(uuid.uuid4())}, bodies[next(counter) % len(bodies)]

    def cpu_of(pid: int | None) -> float:
        return _cpu_s(pid, _children()) if pid else 0.0

    cpu0 = cpu_of(intake_pid)
    create = await _post_for(client, world.urls["referral-intake"] + "/referrals", referral, seconds, workers)
    create["service_cpu_ms_per_request"] = round((cpu_of(intake_pid) - cpu0) * 1000 / max(create["requests_ok"], 1), 2)

    port = procs.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "socialrx_bench.bench_minimal", database_url, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/items"
        for _ in range(300):
            try:
                if (await client.post(url, json={"name": "warm-up"})).status_code == 201:
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
        cpu0 = cpu_of(proc.pid)
        minimal = await _post_for(client, url, lambda: ({}, {"name": "bench"}), seconds, workers)
        minimal["service_cpu_ms_per_request"] = round(
            (cpu_of(proc.pid) - cpu0) * 1000 / max(minimal["requests_ok"], 1), 2
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        conn = await asyncpg.connect(_dsn(database_url))
        try:
            await conn.execute("DROP TABLE IF EXISTS bench_minimal_items")
        finally:
            await conn.close()
    return {
        "seconds_each": seconds,
        "workers": workers,
        "post_referrals": create,
        "minimal_insert_endpoint": minimal,
        "ratio_post_referrals_to_minimal": round(create["req_per_s"] / minimal["req_per_s"], 3)
        if minimal["req_per_s"]
        else None,
        # On a machine whose cores are shared, req/s measures the crowd (the driver included); the CPU
        # each request costs its server does not: the same ratio by CPU.
        "ratio_by_cpu_minimal_to_post_referrals": round(
            minimal["service_cpu_ms_per_request"] / create["service_cpu_ms_per_request"], 3
        )
        if create["service_cpu_ms_per_request"]
        else None,
    }


async def copy_limit(database_url: str, rows: int = 200_000) -> dict:
    """asyncpg COPY into a temporary table of the same database: the floor of writing rows at all."""
    conn = await asyncpg.connect(_dsn(database_url))
    try:
        await conn.execute("CREATE TEMP TABLE bench_copy (id uuid, name text, at timestamptz)")
        now = datetime.now(timezone.utc)
        records = [(uuid.uuid4(), "bench", now) for _ in range(rows)]
        started = time.perf_counter()
        await conn.copy_records_to_table("bench_copy", records=records)
        elapsed = time.perf_counter() - started
    finally:
        await conn.close()
    return {"rows": rows, "seconds": round(elapsed, 3), "rows_per_s": round(rows / elapsed)}


# --- optional phases written by other modules: bench_ledger, bench_bulk ---------------------------

# bench_ledger is not among them: this bench measures arrears and the rebuild itself, and its
# statement and million-payment figures run on databases of their own (`python -m socialrx_bench.bench_ledger`).
EXTRA_PHASES = ("bench_bulk",)


@dataclass(frozen=True)
class BenchStack:
    """What an optional bench phase gets: the running platform of this bench run.

    A phase is a module `socialrx_bench.<name>` (see EXTRA_PHASES) with

        async def run(stack: BenchStack) -> dict[str, float]

    returning its figures by name (units last: `rows_per_s`, `seconds`, `p99_ms`); the bench prints
    them under the module's name and keeps them in the JSON under `extra_phases.<name>`. It runs after
    the pipeline's own phases and correctness checks, on the same Kafka, PostgreSQL and services, and
    must leave them as it found them (its own PCN / organisations; no truncation of shared tables).
    A module that is not there is skipped; one that raises is reported as `{"error": ...}`."""

    bootstrap_servers: str  # Kafka, "host:port[,host:port]"
    database_urls: dict[str, str]  # service -> SQLAlchemy URL (postgresql+asyncpg://...), its own database
    service_urls: dict[str, str]  # service -> base URL of its HTTP API (http://127.0.0.1:PORT)
    jwt_secret: str  # HS256 key the services accept: `testing.auth(secret, role, ...)` makes headers
    tmp: Path  # a scratch folder removed at the end of the run


async def extra_phases(stack: BenchStack, names: tuple[str, ...] = EXTRA_PHASES) -> dict[str, dict]:
    found: dict[str, dict] = {}
    for name in names:
        try:
            module = importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__package__}.{name}":
                continue  # not written (yet): nothing to run
            raise
        _say(f"extra phase {name} ...")
        try:
            found[name] = dict(await module.run(stack))
        except Exception as exc:  # one phase failing must not lose the rest of the run's figures
            found[name] = {"error": repr(exc)[:300]}
    return found


# --- infrastructure: reuse what is given, start the rest on free ports --------------------------


class Stack:
    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="socialrx-bench-"))
        self.kafka: LocalKafka | None = None
        self.postgres: LocalPostgres | None = None
        self.platform: Platform | None = None

    def start(self, secret: str, durable: bool) -> tuple[str, dict[str, str], dict]:
        info: dict[str, Any] = {}
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if bootstrap:
            info["kafka"] = f"given: {bootstrap}"
        else:
            self.kafka = LocalKafka(self.tmp / "kafka", procs.free_port(), procs.free_port())
            _say(f"starting Kafka {KAFKA_VERSION} (KRaft, single node) on {self.kafka.bootstrap_servers} ...")
            self.kafka.start()
            bootstrap = self.kafka.bootstrap_servers
            info["kafka"] = f"started: {bootstrap}, 3 partitions a topic, heap {self.kafka.heap}"
        ensure_topics_sync(bootstrap, partitions=3)
        urls = given_database_urls()
        if len(urls) < len(SERVICES):
            self.postgres = LocalPostgres(self.tmp / "postgres", procs.free_port(), durable=durable)
            _say(f"starting PostgreSQL on 127.0.0.1:{self.postgres.port} (fsync {'on' if durable else 'off'}) ...")
            self.postgres.start()
            urls = {**self.postgres.create_service_databases(), **urls}
            info["postgresql"] = f"started: port {self.postgres.port}, durable={durable}, max_connections=300"
        else:
            info["postgresql"] = "given: *_DATABASE_URL"
        ports = {s: procs.free_port() for s in SERVICES}
        self.platform = Platform.build(
            kafka=bootstrap,
            database_urls=urls,
            ports=ports,
            jwt_secret=secret,
            person_ref_key=DEV_PERSON_REF_KEY,
            log_dir=self.tmp / "logs",
            group_prefix="bench-" + uuid.uuid4().hex[:8],
        )
        _say(f"starting the four services on ports {', '.join(str(p) for p in ports.values())} ...")
        self.platform.start()
        info["services"] = {s: p.url for s, p in self.platform.services.items()}
        info["logs"] = str(self.tmp / "logs")
        return bootstrap, urls, info

    def pids(self) -> dict[str, int]:
        found = {s: p.proc.pid for s, p in (self.platform.services.items() if self.platform else []) if p.proc}
        if self.kafka and self.kafka.proc:
            found["kafka"] = self.kafka.proc.pid
        if self.postgres and self.postgres.proc:
            found["postgresql"] = self.postgres.proc.pid
        return found

    def stop(self) -> None:
        if self.platform:
            self.platform.stop()
        if self.kafka:
            self.kafka.stop()
        if self.postgres:
            self.postgres.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self.postgres:
            shutil.rmtree(self.postgres.data_dir, ignore_errors=True)


def pg_version(url: str) -> str | None:
    async def ask() -> str:
        conn = await asyncpg.connect(_dsn(url))
        try:
            return await conn.fetchval("SHOW server_version")
        finally:
            await conn.close()

    try:
        return asyncio.run(ask())
    except Exception:
        return None


# --- the table ---------------------------------------------------------------------------------


def table(r: dict) -> str:
    f, x, c = r["flat_out"], r["fixed_rate"], r["correctness"]
    lf, lx = f["latency_accepted_published_to_payment_posted"], x["latency_accepted_published_to_payment_posted"]

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:,.0f} ms"

    rows = [
        ("lifecycles (flat out)", f"{f['lifecycles']:,} in {f['seconds_first_create_to_last_payment']:.1f} s"),
        (
            "all services caught up",
            f"{f['seconds_first_create_to_all_services_caught_up']:.1f} s after the first create",
        ),
        (
            "throughput (flat out)",
            f"{f['lifecycles_per_s']} lifecycles/s   (target 150/s: {(f['lifecycles_per_s'] or 0) / 150:.1%} of it)",
        ),
        (
            "pipeline events published",
            f"{r['pipeline_events_per_s']:,} events/s ({r['pipeline_events_published_flat_out']:,})",
        ),
    ]
    for service, s in r["per_service_flat_out"].items():
        rows.append(
            (
                f"  {service}",
                f"{s['events_per_s']:,} events/s (in {s['consumed_per_s']}, out "
                f"{s['published_per_s']}), {s['cpu_cores_used']} cores, "
                f"handler {s['mean_handler_ms']} ms",
            )
        )
    others = {k: v for k, v in f["cpu_cores_used"].items() if k not in r["per_service_flat_out"]}
    rows.append(("  CPU cores, others", ", ".join(f"{k} {v}" for k, v in others.items())))
    per = f.get("cpu_ms_per_lifecycle") or {}
    if per:
        rows.append(
            (
                "CPU per lifecycle (flat out)",
                f"{per['platform (services, Kafka, PostgreSQL)']} ms in the platform "
                f"(target <= 12 ms): " + ", ".join(f"{k} {v}" for k, v in per.items() if not k.startswith("platform")),
            )
        )
    above = f.get("cpu_ms_per_lifecycle_above_idle") or {}
    if above:
        rows.append(
            (
                "  above idle",
                f"{above['platform (services, Kafka, PostgreSQL)']} ms: "
                + ", ".join(f"{k} {v}" for k, v in above.items() if not k.startswith("platform")),
            )
        )
        rows.append(("  idle (cores)", ", ".join(f"{k} {v}" for k, v in f["cpu_cores_idle"].items())))
    rows += [
        (
            "HTTP (flat out)",
            ", ".join(f"{k} {v['mean_ms']:,.0f} ms" for k, v in f["http_seconds_by_step"].items()) + " mean",
        ),
        ("latency flat out", f"p50 {ms(lf['p50_ms'])}  p95 {ms(lf['p95_ms'])}  p99 {ms(lf['p99_ms'])}"),
        (
            f"latency at {x['offered_rate_per_s']:g}/s offered",
            f"p50 {ms(lx['p50_ms'])}  p95 {ms(lx['p95_ms'])}  "
            f"p99 {ms(lx['p99_ms'])}  (achieved {x['lifecycles_per_s']}/s)",
        ),
        (
            "raw aiokafka produce",
            f"{r['raw_kafka']['produce_per_s']:,} msg/s ({r['raw_kafka']['messages']:,} x "
            f"{r['raw_kafka']['value_bytes']} B, acks=all, batches of 500)",
        ),
        ("raw aiokafka consume", f"{r['raw_kafka']['consume_per_s']:,} msg/s"),
        ("raw produce, one at a time", f"{r['raw_kafka']['produce_one_at_a_time_per_s']:,} msg/s (send_and_wait)"),
        ("pipeline / raw produce", f"{r['ratio_pipeline_events_to_raw_produce']:.2%}"),
    ]
    lh, lc = r.get("limits_http"), r.get("limits_copy")
    if lh:
        pr, mn = lh["post_referrals"], lh["minimal_insert_endpoint"]
        rows += [
            (
                "POST /referrals alone",
                f"{pr['req_per_s']:,} req/s ({pr['service_cpu_ms_per_request']} ms CPU each in "
                f"referral-intake, mean {pr['mean_ms']} ms, {lh['workers']} clients)",
            ),
            (
                "minimal endpoint, one INSERT",
                f"{mn['req_per_s']:,} req/s ({mn['service_cpu_ms_per_request']} ms CPU each, "
                f"mean {mn['mean_ms']} ms; same stack)",
            ),
            (
                "POST /referrals / minimal",
                f"{lh['ratio_post_referrals_to_minimal']} by req/s (target >= 0.5); by CPU per "
                f"request {lh.get('ratio_by_cpu_minimal_to_post_referrals')}",
            ),
        ]
    if lc:
        rows.append(("asyncpg COPY", f"{lc['rows_per_s']:,} rows/s ({lc['rows']:,} rows)"))
    for service, hops in r["hop_latency_flat_out"].items():
        for hop, lat in hops.items():
            if lat["count"]:
                rows.append(
                    (
                        f"  {service[:10]}: {hop.replace(' published -> handled', ' in').replace('.v1', '')}",
                        f"p50 {ms(lat['p50_ms'])}  p95 {ms(lat['p95_ms'])}  ({lat['count']:,})",
                    )
                )
    rb = r["ledger_rebuild"]
    rows.append(
        (
            "ledger rebuild from topics",
            f"{rb['events_read_per_s']:,} events/s ({rb['events_read']:,} in "
            f"{rb['seconds']} s), equal to live: {rb['equal_to_live']}"
            if "error" not in rb
            else rb["error"],
        )
    )
    a = r["arrears"]
    if not a.get("skipped"):
        rows.append(
            (
                "GET /arrears",
                f"{a['best_seconds']} s over {a['payments']:,} payments (one org: "
                f"{a['one_organisation_seconds']} s), totals right: {a['owed_pence_correct']}",
            )
        )
        rows.append(("ledger cap query per accrual", f"{min(a['cap_query_ms'])} ms at {a['payments']:,} payments"))
    rows += [
        (
            "every lifecycle once",
            f"{c['every_lifecycle_completed_exactly_once']} ({c['referrals_with_exactly_two_payments']:,}"
            f" of {c['lifecycles_driven']:,}, {c['payments_ledgered']:,} payments)",
        ),
        (
            "trial balance zero",
            f"{c['trial_balance_zero']} (debits {c['trial_balance'].get('debits_pence', 0):,} = credits "
            f"{c['trial_balance'].get('credits_pence', 0):,} pence)",
        ),
        (
            "HTTP (flat out)",
            f"{f['http_requests']:,} requests, {f['http_retries_not_known_yet']:,} retried (not known "
            f"yet), {f['http_retries_connection']:,} after a dropped connection ({f['http_retries_already_done']:,} "
            f"had taken effect), errors {f['http_errors'] or 0}",
        ),
    ]
    for name, figures in (r.get("extra_phases") or {}).items():
        for key, value in figures.items():
            rows.append((f"{name}: {key}", f"{value:,}" if isinstance(value, (int, float)) else str(value)))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m socialrx_bench.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=DEFAULT_N, help=f"lifecycles driven flat out (default {DEFAULT_N})")
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="offered lifecycles/s of the fixed-rate phase (default: half the flat-out rate, at most 100)",
    )
    parser.add_argument("--rate-seconds", type=float, default=20.0, help="how long the fixed-rate phase offers load")
    parser.add_argument("--warmup", type=int, default=100, help="lifecycles before the measured phases")
    parser.add_argument(
        "--workers", type=int, default=24, help="concurrent HTTP workers per step (create/accept/outcome)"
    )
    parser.add_argument("--organisations", type=int, default=8, help="organisations, one funded service each")
    parser.add_argument(
        "--arrears-payments",
        type=int,
        default=1_000_000,
        help="payments in the ledger GET /arrears is timed over (0: skip)",
    )
    parser.add_argument(
        "--no-fsync", action="store_true", help="a PostgreSQL started here runs with fsync off (as tests do)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="folder for the JSON and PNG")
    parser.add_argument("--name", help="file name of the results (default: a UTC timestamp)")
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=10.0,
        help="CPU of each process measured idle this long before flat out (shown apart)",
    )
    parser.add_argument(
        "--limit-seconds",
        type=float,
        default=8.0,
        help="how long POST /referrals alone and the minimal endpoint are each driven",
    )
    parser.add_argument(
        "--no-extra",
        action="store_true",
        help=f"skip the optional phases ({', '.join(EXTRA_PHASES)}) even when their modules exist",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="folder: sample each service with py-spy during the flat-out phase (raw stacks + summary)",
    )
    args = parser.parse_args(argv)

    secret = os.environ.get("SOCIALRX_JWT_SECRET") or "bench-" + uuid.uuid4().hex
    stack = Stack()
    started_at = datetime.now(timezone.utc)
    result: dict[str, Any] = {
        "started_at": started_at.isoformat(),
        "machine": machine(),
        "commit": commit(),
        "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    try:
        bootstrap, database_urls, infra = stack.start(secret, durable=not args.no_fsync)
        result["versions"] = versions(pg_version(database_urls["funding-ledger"]))
        cpu = CpuMeter(stack.pids())
        args.tmp = stack.tmp
        result.update(
            asyncio.run(
                measure(
                    args,
                    bootstrap=bootstrap,
                    database_urls=database_urls,
                    urls={s: p.url for s, p in stack.platform.services.items()},
                    secret=secret,
                    cpu=cpu,
                    infra=infra,
                    profile_pids={s: p for s, p in stack.pids().items() if s in SERVICES},
                )
            )
        )
    finally:
        _say("stopping what the bench started ...")
        stack.stop()
    result["seconds_total"] = round((datetime.now(timezone.utc) - started_at).total_seconds(), 1)
    args.out.mkdir(parents=True, exist_ok=True)
    name = args.name or started_at.strftime("%Y%m%dT%H%M%SZ")
    json_path, png_path = args.out / f"{name}.json", args.out / f"{name}.png"
    result["chart"] = png_path.name
    json_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    draw(
        result["timeline"],
        png_path,
        f"SOCIALRX BENCH N={args.n} FLAT OUT THEN {result['fixed_rate']['offered_rate_per_s']:g}/S",
    )
    _say("\n" + table(result))
    _say(f"\nwritten: {json_path}\n         {png_path}")
    return 0 if result["correctness"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
