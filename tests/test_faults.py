"""Faults PCN IT teams will meet, with real processes on loopback, bounded in time.

- the Kafka broker stopped for 20 s mid-stream and restarted with its log on disk;
- a service's PostgreSQL stopped and restarted mid-stream;
- one broker of a three-node KRaft cluster (replication 3, min.insync.replicas 2) killed mid-stream.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from support import PERSON, eventually_status, make_world, referral_body

from socialrx_harness import procs
from socialrx_harness.kafka import LocalKafka, LocalKafkaCluster
from socialrx_harness.platform import DEV_PERSON_REF_KEY, Platform
from socialrx_harness.postgres import SERVICES, LocalPostgres
from socialrx_harness.testing import events_on_topic, wait_for
from socialrx_harness.topics import ensure_topics
from socialrx_shared import events as ev

NHS_NUMBERS = ["9434765919", "9999999999", "9000000009", "9876543210"]


@pytest.fixture(scope="module")
def fault_stack(postgres, jwt_secret, tmp_path_factory):
    """A platform of its own: its own broker (to stop) and its own PostgreSQL for the ledger (to stop)."""
    base = Path(tempfile.mkdtemp(prefix="socialrx-faults-"))
    broker = LocalKafka(base / "kafka", procs.free_port(), procs.free_port())
    ledger_pg = LocalPostgres(base / "ledger-pg", procs.free_port(), durable=False)
    platform = None
    try:
        broker.start()
        asyncio.run(ensure_topics(broker.bootstrap_servers))
        ledger_pg.start()
        ledger_pg.create_database("ledger")
        urls = {s: postgres.new_database("fault_" + s.replace("-", "_")) for s in SERVICES}
        urls["funding-ledger"] = ledger_pg.admin_url("ledger")
        platform = Platform.build(
            kafka=broker.bootstrap_servers,
            database_urls=urls,
            ports={s: procs.free_port() for s in SERVICES},
            jwt_secret=jwt_secret,
            person_ref_key=DEV_PERSON_REF_KEY,
            log_dir=tmp_path_factory.mktemp("fault-logs"),
            group_prefix="faults-" + uuid.uuid4().hex[:6],
        )
        platform.start()
        yield broker, ledger_pg, platform
    finally:
        if platform:
            platform.stop()
        broker.stop()
        ledger_pg.discard()
        shutil.rmtree(base, ignore_errors=True)


async def _watch_readiness(url: str, seen: list[int], stop: asyncio.Event) -> None:
    async with httpx.AsyncClient(timeout=3) as client:
        while not stop.is_set():
            try:
                seen.append((await client.get(url + "/readyz")).status_code)
            except httpx.HTTPError:
                seen.append(0)
            await asyncio.sleep(0.5)


async def _inbox_ids(client: httpx.AsyncClient, world) -> list[str]:
    answer = await client.get(world.url("directory", "/inbox?per_page=500"), headers=world.charity)
    return [item["referral_id"] for item in answer.json()["items"]]


async def test_broker_stopped_for_20s_mid_stream(fault_stack, jwt_secret) -> None:
    broker, _ledger_pg, platform = fault_stack
    world = make_world(platform, jwt_secret, capacity=1000)
    intake = platform.url("referral-intake")
    readiness: list[int] = []
    stop_watching = asyncio.Event()
    watcher = asyncio.create_task(_watch_readiness(intake, readiness, stop_watching))
    created: list[str] = []
    async with httpx.AsyncClient(timeout=15) as client:
        first = await eventually_status(
            client,
            ("POST", intake + "/referrals"),
            world.link_worker,
            201,
            referral_body(world.service_id),
            what="the service known to intake",
        )
        created.append(first.json()["id"])
        outage_at, outage_s = 30, 20.0
        for n in range(1, 90):
            if n == outage_at:
                await asyncio.to_thread(broker.stop)  # its log stays on disk
                down_since = time.monotonic()
            if n > outage_at and broker.proc.poll() is not None and time.monotonic() - down_since >= outage_s:
                await asyncio.to_thread(broker.start)
            person = dict(PERSON, nhs_number=NHS_NUMBERS[n % len(NHS_NUMBERS)])
            # While the broker is away a referral is still taken: it waits in the outbox.
            answer = await client.post(
                intake + "/referrals", headers=world.link_worker, json=referral_body(world.service_id, person=person)
            )
            assert answer.status_code == 201, answer.text
            created.append(answer.json()["id"])
            await asyncio.sleep(0.35)
        if broker.proc.poll() is not None:
            await asyncio.sleep(max(0.0, outage_s - (time.monotonic() - down_since)))
            await asyncio.to_thread(broker.start)

        async def all_in_inbox():
            return sorted(await _inbox_ids(client, world)) == sorted(created)

        await wait_for(all_in_inbox, timeout_s=180, interval_s=1, what="every referral in the charity's inbox")

        async def outbox_drained():
            metrics = (await client.get(intake + "/metrics")).text
            lines = [line for line in metrics.splitlines() if line.startswith("socialrx_outbox_backlog")]
            return lines and float(lines[0].split()[-1]) == 0

        await wait_for(outbox_drained, timeout_s=60, what="referral-intake's outbox drained")
        await wait_for(lambda: _status_is(client, intake, 200), timeout_s=60, what="ready after the outage")
    stop_watching.set()
    await watcher
    assert 503 in readiness, "readyz never said 503 while the broker was away"
    assert readiness[-1] == 200
    events = await events_on_topic(broker.bootstrap_servers, ev.REFERRAL_CREATED.topic, service_id=world.service_id)
    by_referral: dict[str, set] = {}
    for envelope in events:
        by_referral.setdefault(envelope.data["referral_id"], set()).add(envelope.id)
    assert sorted(by_referral) == sorted(created)
    assert all(len(ids) == 1 for ids in by_referral.values())  # one event per referral, however often sent


async def _status_is(client: httpx.AsyncClient, url: str, status: int) -> bool:
    try:
        return (await client.get(url + "/readyz")).status_code == status
    except httpx.HTTPError:
        return False


async def test_ledger_database_stopped_mid_stream(fault_stack, jwt_secret) -> None:
    _broker, ledger_pg, platform = fault_stack
    fee = 3100
    world = make_world(platform, jwt_secret, capacity=1000, per_referral_pence=fee)
    intake = platform.url("referral-intake")
    ids: list[str] = []
    async with httpx.AsyncClient(timeout=15) as client:
        for n in range(60):
            person = dict(PERSON, nhs_number=NHS_NUMBERS[n % len(NHS_NUMBERS)])
            answer = await eventually_status(
                client,
                ("POST", intake + "/referrals"),
                world.link_worker,
                201,
                referral_body(world.service_id, person=person),
            )
            ids.append(answer.json()["id"])
        await wait_for(lambda: _inbox_has(client, world, len(ids)), timeout_s=60, what="all referrals in the inbox")
        for n, rid in enumerate(ids):
            if n == 20:
                await asyncio.to_thread(ledger_pg.stop)
            if n == 45:
                await asyncio.to_thread(ledger_pg.start)
            accepted = await client.post(world.url("directory", f"/referrals/{rid}/accept"), headers=world.charity)
            assert accepted.status_code == 200, accepted.text
            await asyncio.sleep(0.1)
        if ledger_pg.proc.poll() is not None:
            await asyncio.to_thread(ledger_pg.start)
        ledger = platform.url("funding-ledger")
        payments_url = f"{ledger}/payments?organisation_id={world.organisation_id}&per_page=500"

        async def all_paid():
            answer = await client.get(payments_url, headers=world.finance)
            return answer.json() if answer.status_code == 200 and answer.json()["total"] >= len(ids) else None

        paid = await wait_for(all_paid, timeout_s=180, interval_s=1, what="every acceptance ledgered")
        await asyncio.sleep(2)
        paid = (await client.get(payments_url, headers=world.finance)).json()
        assert paid["total"] == len(ids)  # none skipped, none doubled
        assert sorted(p["referral_id"] for p in paid["items"]) == sorted(ids)
        balance = (await client.get(f"{ledger}/trial-balance", headers=world.finance)).json()
        assert balance["debits_pence"] == balance["credits_pence"]


async def _inbox_has(client, world, count: int) -> bool:
    return len(await _inbox_ids(client, world)) >= count


@pytest.fixture
def cluster():
    base = Path(tempfile.mkdtemp(prefix="socialrx-cluster-"))
    nodes = LocalKafkaCluster(base, size=3)
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()
        shutil.rmtree(base, ignore_errors=True)


async def test_one_broker_of_three_killed_mid_stream_loses_nothing(cluster) -> None:
    topic, total, kill_after = "fault.cluster.v1", 3000, 1000
    admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap_servers)
    await admin.start()
    await admin.create_topics(
        [NewTopic(topic, num_partitions=3, replication_factor=3, topic_configs={"min.insync.replicas": "2"})]
    )
    await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=cluster.bootstrap_servers, acks="all", enable_idempotence=True, request_timeout_ms=30000
    )
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=cluster.bootstrap_servers,
        group_id="fault-cluster",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await producer.start()
    await consumer.start()
    received: set[bytes] = set()

    async def consume() -> None:
        while len(received) < total:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                received.update(r.value for r in records)
            if batch:
                await consumer.commit()

    reader = asyncio.create_task(consume())
    try:
        for n in range(total):
            if n == kill_after:
                cluster.nodes[1].kill()  # SIGKILL one broker (and controller) mid-stream
            await producer.send_and_wait(topic, str(n).encode(), key=str(n % 50).encode())
        await asyncio.wait_for(reader, timeout=180)
    finally:
        reader.cancel()
        await producer.stop()
        await consumer.stop()
    assert received == {str(n).encode() for n in range(total)}
