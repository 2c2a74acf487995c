"""Bulk uploads, measured: `python -m socialrx_bench.bench_bulk [--lines 20000]`.

Starts its own Kafka, PostgreSQL and the four services (bench.py's `Stack`: it reuses
KAFKA_BOOTSTRAP_SERVERS / *_DATABASE_URL when given), then:

1. referrals: one `POST /referrals/bulk` of N CSV lines by a link worker; seconds from the request
   to its answer, and to every referral seen downstream (the directory's inbox and outcomes' view);
2. outcomes: every referral accepted (the `referral.accepted` events are put on the topic straight
   away: the directory's accept is not what is measured), then one `POST /outcomes/bulk` of N rows
   by the charity; seconds to the answer and to every outcome fee posted in the ledger.

Lines/s = N / seconds from the request to the last one seen downstream. It asserts no speed; it
prints the figures and writes bench/results/bulk-<name>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import os
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaProducer

from socialrx_harness.testing import auth
from socialrx_shared import events as ev

from .bench import ROOT, Stack, commit, machine

PCN = "U12345"
PRACTICE = "B82005"
FEE_REFERRAL_PENCE = 5000
FEE_OUTCOME_PENCE = 12000


def nhs_numbers(count: int, start: int = 600_000_000) -> list[str]:
    """`count` NHS numbers with a valid modulus-11 check digit (a synthetic range)."""
    found: list[str] = []
    stem = start
    while len(found) < count:
        digits = [int(d) for d in f"{stem:09d}"]
        check = 11 - sum(d * w for d, w in zip(digits, range(10, 1, -1), strict=False)) % 11
        check = 0 if check == 11 else check
        if check != 10:
            found.append(f"{stem:09d}{check}")
        stem += 1
    return found


def referral_csv(service_id: str, count: int) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            "service_id",
            "needs",
            "nhs_number",
            "given_name",
            "family_name",
            "date_of_birth",
            "postcode",
            "consent_given",
            "consent_recorded_at",
        ]
    )
    for i, nhs in enumerate(nhs_numbers(count)):
        born_on = f"19{40 + i % 60}-0{1 + i % 9}-1{i % 10}"
        writer.writerow(
            [
                service_id,
                "loneliness",
                nhs,
                f"Given{i}",
                f"Family{i}",
                born_on,
                "LS1 4AP",
                "yes",
                "2026-11-01T10:00:00Z",
            ]
        )
    return out.getvalue().encode()


def outcome_csv(referral_ids: list[str]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["referral_id", "status", "sessions_attended", "swemwbs_baseline"])
    for i, rid in enumerate(referral_ids):
        writer.writerow([rid, "completed", str(1 + i % 12), " ".join(str(1 + (i + k) % 5) for k in range(7))])
    return out.getvalue().encode()


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def _count(conn: asyncpg.Connection, sql: str, ids: list[str]) -> int:
    # The ids joined (not `= ANY($1)`): 20,000 ids compared with every row of a table not yet analysed
    # kept a PostgreSQL core busy polling, slowing the very pipeline being timed.
    return int(await conn.fetchval(sql, ids))


async def wait_count(
    conn: asyncpg.Connection, sql: str, ids: list[str], expected: int, timeout_s: float, what: str
) -> float:
    deadline = time.monotonic() + timeout_s
    while True:
        seen = await _count(conn, sql, ids)
        if seen >= expected:
            return time.perf_counter()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: {seen} of {expected} after {timeout_s:.0f}s")
        await asyncio.sleep(0.1)


async def setup(client: httpx.AsyncClient, urls: dict[str, str], secret: str, capacity: int) -> dict[str, Any]:
    admin = auth(secret, "admin")
    org = await client.post(urls["directory"] + "/organizations", headers=admin, json={"name": "Bulk Bench Friends"})
    org.raise_for_status()
    organisation_id = org.json()["id"]
    charity = auth(secret, "charity", organisation_id=organisation_id)
    service = await client.post(
        urls["directory"] + "/services",
        headers=charity,
        json={
            "organization_id": organisation_id,
            "name": "Bulk walk and talk",
            "needs": ["loneliness"],
            "capacity": capacity,
            "safeguarding_policy_valid_until": "2030-12-31",
            "postcode": "LS1 4AP",
        },
    )
    service.raise_for_status()
    finance = auth(secret, "finance", pcn_id=PCN)
    body = {
        "organisation_id": organisation_id,
        "per_referral_pence": FEE_REFERRAL_PENCE,
        "per_outcome_pence": FEE_OUTCOME_PENCE,
        "period": "quarterly",
        "days_after_period_end": 30,
        "starts_on": "2026-04-01",
    }
    for _ in range(600):  # the ledger learns of the organisation by organisation.registered
        agreement = await client.post(urls["funding-ledger"] + "/agreements", headers=finance, json=body)
        if agreement.status_code == 201:
            break
        await asyncio.sleep(0.1)
    agreement.raise_for_status()
    link_worker = auth(secret, "link_worker", pcn_id=PCN, practice_id=PRACTICE)
    probe = referral_csv(service.json()["id"], 1).replace(b"Given0", b"Probe")
    for _ in range(600):  # referral-intake learns of the service by service.updated
        answer = await client.post(
            urls["referral-intake"] + "/referrals/bulk",
            content=probe,
            headers={**link_worker, "content-type": "text/csv"},
        )
        if answer.status_code == 200 and answer.json()["created"] + answer.json()["already_created"] == 1:
            break
        await asyncio.sleep(0.1)
    return {
        "organisation_id": organisation_id,
        "service_id": service.json()["id"],
        "charity": charity,
        "link_worker": link_worker,
    }


async def bulk_referrals(
    client: httpx.AsyncClient,
    urls: dict[str, str],
    dbs: dict[str, asyncpg.Connection],
    world: dict[str, Any],
    lines: int,
    timeout_s: float,
) -> tuple[dict[str, Any], list[str]]:
    """One upload of `lines` referrals: seconds to the answer and until the directory and outcomes hold them all."""
    body = referral_csv(world["service_id"], lines)
    t0 = time.perf_counter()
    answer = await client.post(
        urls["referral-intake"] + "/referrals/bulk",
        content=body,
        headers={**world["link_worker"], "content-type": "text/csv"},
        timeout=timeout_s,
    )
    t_answer = time.perf_counter()
    answer.raise_for_status()
    result = answer.json()
    ids = [line["referral_id"] for line in result["lines"] if line["referral_id"]]
    t_directory = await wait_count(
        dbs["directory"],
        "SELECT count(*) FROM unnest($1::text[]) AS t(id) JOIN referral_inbox r ON r.referral_id = t.id",
        ids,
        len(ids),
        timeout_s,
        "directory inbox",
    )
    t_outcomes = await wait_count(
        dbs["outcomes"],
        "SELECT count(*) FROM unnest($1::text[]) AS t(id) JOIN referral_view r ON r.referral_id = t.id "
        "WHERE r.organisation_id IS NOT NULL",
        ids,
        len(ids),
        timeout_s,
        "outcomes' view",
    )
    seen = max(t_directory, t_outcomes) - t0
    return {
        "lines": lines,
        "bytes": len(body),
        "created": result["created"],
        "refused": result["refused"],
        "seconds_to_answer": round(t_answer - t0, 2),
        "seconds_to_directory": round(t_directory - t0, 2),
        "seconds_to_outcomes": round(t_outcomes - t0, 2),
        "seconds_to_all_seen": round(seen, 2),
        "created_per_s_answered": round(result["created"] / (t_answer - t0), 1),
        "lines_per_s_seen_downstream": round(result["created"] / seen, 1),
    }, ids


async def accept_all(
    bootstrap: str, dbs: dict[str, asyncpg.Connection], world: dict[str, Any], ids: list[str], timeout_s: float
) -> dict[str, Any]:
    """`referral.accepted` for every referral, straight onto the topic, as the directory would publish it."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    t0 = time.perf_counter()
    try:
        now = datetime.now(timezone.utc)
        pending = []
        for rid in ids:
            envelope = ev.new_event(
                ev.REFERRAL_ACCEPTED,
                ev.ReferralAccepted(
                    referral_id=rid,
                    organisation_id=world["organisation_id"],
                    service_id=world["service_id"],
                    pcn_id=PCN,
                    accepted_at=now,
                ),
                source="bench-bulk",
            )
            pending.append(
                await producer.send(
                    ev.REFERRAL_ACCEPTED.topic,
                    envelope.to_bytes(),
                    key=rid.encode(),
                    headers=[("ce_type", ev.REFERRAL_ACCEPTED.ce_type.encode())],
                )
            )
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    t_outcomes = await wait_count(
        dbs["outcomes"],
        "SELECT count(*) FROM unnest($1::text[]) AS t(id) JOIN referral_view r ON r.referral_id = t.id "
        "WHERE r.status = 'accepted'",
        ids,
        len(ids),
        timeout_s,
        "acceptances in outcomes",
    )
    t_ledger = await wait_count(
        dbs["funding-ledger"],
        "SELECT count(*) FROM unnest($1::text[]) AS t(id) JOIN payments p ON p.referral_id = t.id "
        "WHERE p.basis = 'referral_accepted'",
        ids,
        len(ids),
        timeout_s,
        "referral fees",
    )
    return {"seconds_to_outcomes": round(t_outcomes - t0, 2), "seconds_to_referral_fees": round(t_ledger - t0, 2)}


async def bulk_outcomes(
    client: httpx.AsyncClient,
    urls: dict[str, str],
    dbs: dict[str, asyncpg.Connection],
    world: dict[str, Any],
    ids: list[str],
    timeout_s: float,
) -> dict[str, Any]:
    """One upload of an outcome per referral: seconds to the answer and until every outcome fee is ledgered."""
    body = outcome_csv(ids)
    t0 = time.perf_counter()
    answer = await client.post(
        urls["outcomes"] + "/outcomes/bulk",
        content=body,
        headers={**world["charity"], "content-type": "text/csv"},
        timeout=timeout_s,
    )
    t_answer = time.perf_counter()
    answer.raise_for_status()
    result = answer.json()
    t_ledger = await wait_count(
        dbs["funding-ledger"],
        "SELECT count(*) FROM unnest($1::text[]) AS t(id) JOIN payments p ON p.referral_id = t.id "
        "WHERE p.basis = 'outcome_recorded'",
        ids,
        result["recorded"],
        timeout_s,
        "outcome fees",
    )
    seen = t_ledger - t0
    return {
        "lines": len(ids),
        "bytes": len(body),
        "recorded": result["recorded"],
        "refused": result["refused"],
        "seconds_to_answer": round(t_answer - t0, 2),
        "seconds_to_all_ledgered": round(seen, 2),
        "recorded_per_s_answered": round(result["recorded"] / (t_answer - t0), 1),
        "lines_per_s_ledgered": round(result["recorded"] / seen, 1),
    }


async def measure(
    urls: dict[str, str], database_urls: dict[str, str], bootstrap: str, secret: str, lines: int, timeout_s: float
) -> dict[str, Any]:
    dbs = {s: await asyncpg.connect(_dsn(u)) for s, u in database_urls.items()}
    try:
        async with httpx.AsyncClient(timeout=60) as client:
            world = await setup(client, urls, secret, capacity=lines * 2 + 10)
            referrals, ids = await bulk_referrals(client, urls, dbs, world, lines, timeout_s)
            print(f"referrals: {json.dumps(referrals)}", flush=True)
            accepted = await accept_all(bootstrap, dbs, world, ids, timeout_s)
            print(f"acceptances: {json.dumps(accepted)}", flush=True)
            outcomes = await bulk_outcomes(client, urls, dbs, world, ids, timeout_s)
            print(f"outcomes: {json.dumps(outcomes)}", flush=True)
            again_t0 = time.perf_counter()
            again = await client.post(
                urls["referral-intake"] + "/referrals/bulk",
                content=referral_csv(world["service_id"], lines),
                headers={**world["link_worker"], "content-type": "text/csv"},
                timeout=timeout_s,
            )
            resent = {
                "seconds_to_answer": round(time.perf_counter() - again_t0, 2),
                "created": again.json()["created"],
                "already_created": again.json()["already_created"],
            }
    finally:
        for conn in dbs.values():
            await conn.close()
    return {"referrals": referrals, "acceptances": accepted, "outcomes": outcomes, "referrals_resent": resent}


# As a phase of `make bench` (bench.py's EXTRA_PHASES): the same steps on the bench's running platform.
PHASE_LINES = 20_000


async def run(stack: Any) -> dict[str, float]:
    """`make bench`'s bulk phase: figures by name, on the platform the bench started (a BenchStack)."""
    result = await measure(
        stack.service_urls, stack.database_urls, stack.bootstrap_servers, stack.jwt_secret, PHASE_LINES, 600.0
    )
    referrals, outcomes = result["referrals"], result["outcomes"]
    return {
        "lines_per_upload": PHASE_LINES,
        "referrals_upload_answered_s": referrals["seconds_to_answer"],
        "referrals_seen_downstream_per_s": referrals["lines_per_s_seen_downstream"],
        "referral_fees_ledgered_s": result["acceptances"]["seconds_to_referral_fees"],
        "outcomes_upload_answered_s": outcomes["seconds_to_answer"],
        "outcomes_ledgered_per_s": outcomes["lines_per_s_ledgered"],
        "target_per_s": 2000,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m socialrx_bench.bench_bulk", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--lines", type=int, default=20_000, help="lines per upload (default 20,000, the most one takes)"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for each step")
    parser.add_argument("--no-fsync", action="store_true", help="a PostgreSQL started here runs with fsync off")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="folder for the JSON")
    parser.add_argument("--name", help="file name of the results (default: bulk-<UTC timestamp>)")
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
        assert stack.platform is not None
        result["infrastructure"] = infra
        result.update(
            asyncio.run(
                measure(
                    {s: p.url for s, p in stack.platform.services.items()},
                    database_urls,
                    bootstrap,
                    secret,
                    args.lines,
                    args.timeout,
                )
            )
        )
    finally:
        print("stopping what the bench started ...", flush=True)
        stack.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.name or 'bulk-' + started_at.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps({k: result[k] for k in ("referrals", "acceptances", "outcomes", "referrals_resent")}, indent=2))
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
