"""`make chaos`: the platform as production runs it, under load, with faults that come together.

- Two replicas of every service (separate processes, the same consumer group, HTTP load spread over
  both), a three-broker KRaft cluster (replication 3, min.insync.replicas 2), PostgreSQL with fsync on.
- Load (chaos_load.py): N lifecycles at a fixed rate through the HTTP APIs, with a real client's retries.
- Faults (chaos_faults.py), from a seed the run prints: kill -9 / SIGTERM of a replica, a broker killed
  and restarted, PostgreSQL restarted, a replica frozen past the consumer session timeout, 1,000
  duplicates and 1,000 poison records published.
- Invariants every 10 s and at the end (`Checker`); figures to a JSON file and a table.

    python -m socialrx_harness.chaos [--n 10000] [--rate 10] [--seed 1] [--per-kind 2] [--out FILE]

Everything it starts is stopped at the end, also on Ctrl-C, SIGTERM or failure.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from socialrx_bench.bench_driver import (
    FEE_OUTCOME_PENCE,
    FEE_REFERRAL_PENCE,
    PERSON,
    World,
    agree_once_known,
    make_world,
)
from socialrx_shared import events as ev

from . import procs
from .chaos_faults import KINDS, RECOVER_AFTER_LAST_S, STORM_CAP_S, Fault, recovery_deadline, schedule
from .chaos_load import Balancer, Lifecycle, Load, LoadStats, Plan, nominal_fee_pence
from .kafka import LocalKafkaCluster
from .platform import DEV_PERSON_REF_KEY, ServiceProcess, service_env
from .postgres import SERVICES, LocalPostgres
from .testing import auth, read_topic
from .topics import ensure_topics

ROOT = Path(__file__).resolve().parents[4]
DEFAULT_SEED = 20261126
# Who consumes what (each service's handlers.py): a poison record is dead-lettered once per consumer.
CONSUMERS = {
    ev.REFERRAL_CREATED.topic: ("directory", "outcomes"),
    ev.REFERRAL_ACCEPTED.topic: ("referral-intake", "outcomes", "funding-ledger"),
    ev.REFERRAL_DECLINED.topic: ("referral-intake", "outcomes"),
    ev.OUTCOME_RECORDED.topic: ("referral-intake", "directory", "funding-ledger"),
    ev.SERVICE_UPDATED.topic: ("referral-intake", "funding-ledger"),
    ev.ORGANISATION_REGISTERED.topic: ("funding-ledger",),
    ev.REFERRAL_REFUSED.topic: ("directory",),
}
POISON_HEADER = "chaos.poison"
DUPLICATE_HEADER = "chaos.duplicate"
# The chaos run's webhook receiver is plain http on loopback (which production refuses: private
# networks are allowed here on purpose); retries quick so the run can wait for them.
WEBHOOK_ENV = {
    "DIRECTORY_WEBHOOK_ALLOW_HTTP": "true",
    "DIRECTORY_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
    "DIRECTORY_WEBHOOK_RETRY_BASE_S": "1",
    "DIRECTORY_WEBHOOK_RETRY_CAP_S": "5",
    "DIRECTORY_WEBHOOK_MAX_ATTEMPTS": "1000",
}
WEBHOOK_EVENTS = ["referral.accepted", "referral.declined"]
CAP_PENCE = 40 * FEE_REFERRAL_PENCE  # the capped organisation's yearly cap: reached during the run


def say(message: str = "") -> None:
    print(message, flush=True)


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))], 3)


@dataclass
class Config:
    n: int = 10_000
    rate: float = 10.0  # lifecycles/s offered: the platform's headroom on 2 cores (README: Reliability)
    seed: int = DEFAULT_SEED
    per_kind: int = 2
    records: int = 1000  # duplicates and poison records per fault
    replicas: int = 2
    organisations: int = 4  # uncapped, plus one capped
    check_every_s: float = 10.0
    settle_every_s: float = 5.0
    quiesce_timeout_s: float = 240.0
    out: Path | None = None

    @property
    def load_s(self) -> float:
        return self.n / self.rate


# --- the stack: three brokers, PostgreSQL, two replicas of each service --------------------------


class Stack:
    def __init__(self, cfg: Config, secret: str) -> None:
        self.cfg, self.secret = cfg, secret
        self.tmp = Path(tempfile.mkdtemp(prefix="socialrx-chaos-"))
        self.cluster: LocalKafkaCluster | None = None
        self.postgres: LocalPostgres | None = None
        self.replicas: dict[str, list[ServiceProcess]] = {}
        self.database_urls: dict[str, str] = {}
        self.frozen: set[int] = set()
        self.in_fault: set[tuple[str, int]] = set()  # replicas a fault is stopping/restarting right now
        self.restarts_after_exit: dict[str, int] = {}  # what the supervisor restarted, by replica
        self.group_prefix = "chaos-" + uuid.uuid4().hex[:8]

    @property
    def bootstrap(self) -> str:
        assert self.cluster is not None
        return self.cluster.bootstrap_servers

    def urls(self) -> dict[str, list[str]]:
        return {s: [r.url for r in rs] for s, rs in self.replicas.items()}

    def start(self) -> None:
        self.cluster = LocalKafkaCluster(self.tmp / "kafka", size=3, heap="384m")
        say(f"starting a 3-broker KRaft cluster on {self.cluster.bootstrap_servers} ...")
        self.cluster.start()
        asyncio.run(ensure_topics(self.bootstrap, partitions=3, replication=3, min_insync_replicas=2))
        self.postgres = LocalPostgres(self.tmp / "postgres", procs.free_port(), durable=True)
        say(f"starting PostgreSQL (fsync on) on 127.0.0.1:{self.postgres.port} ...")
        self.postgres.start()
        self.database_urls = self.postgres.create_service_databases()
        for service in SERVICES:
            self.replicas[service] = []
            for r in range(self.cfg.replicas):
                port = procs.free_port()
                env = service_env(
                    service,
                    port=port,
                    kafka=self.bootstrap,
                    database_url=self.database_urls[service],
                    jwt_secret=self.secret,
                    person_ref_key=DEV_PERSON_REF_KEY,
                    group_prefix=self.group_prefix,
                    extra=WEBHOOK_ENV if service == "directory" else None,
                )
                self.replicas[service].append(
                    ServiceProcess(service, port, env, self.tmp / "logs" / f"{service}-{r}.log")
                )
        say(
            f"starting {self.cfg.replicas} replicas of each of the four services on ports "
            f"{','.join(str(r.port) for rs in self.replicas.values() for r in rs)} ..."
        )
        # The first replica of each service migrates its database; the second starts on a migrated one.
        for wave in (slice(0, 1), slice(1, None)):
            for service in SERVICES:
                for replica in self.replicas[service][wave]:
                    replica.start()
            for service in SERVICES:
                for replica in self.replicas[service][wave]:
                    replica.wait_ready(240)

    async def supervise(self, stop: asyncio.Event) -> None:
        """Restart a replica that exited by itself, as Kubernetes or `restart: unless-stopped` would.

        A replica restarted while PostgreSQL is away exits at startup (its migration check cannot
        connect); production's orchestrator starts it again with a back-off, and so does this.
        """
        backoff_s: dict[str, float] = {}
        next_try: dict[str, float] = {}
        while not stop.is_set():
            for service, replicas in self.replicas.items():
                for index, replica in enumerate(replicas):
                    name = f"{service}#{index}"
                    exited = replica.proc is not None and replica.proc.poll() is not None
                    if not exited or (service, index) in self.in_fault or time.monotonic() < next_try.get(name, 0):
                        continue
                    say(f"    supervisor: {name} exited (code {replica.proc.returncode}); starting it again")
                    self.restarts_after_exit[name] = self.restarts_after_exit.get(name, 0) + 1
                    replica.start()
                    backoff_s[name] = min(backoff_s.get(name, 0.5) * 2, 10.0)
                    next_try[name] = time.monotonic() + backoff_s[name]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)

    def pids(self) -> list[int]:
        found = [r.proc.pid for rs in self.replicas.values() for r in rs if r.proc and r.proc.poll() is None]
        if self.cluster:
            found += [n.proc.pid for n in self.cluster.nodes if n.proc and n.proc.poll() is None]
        if self.postgres and self.postgres.proc and self.postgres.proc.poll() is None:
            found.append(self.postgres.proc.pid)
        return found

    def ports(self) -> list[int]:
        found = [r.port for rs in self.replicas.values() for r in rs]
        if self.cluster:
            found += [p for n in self.cluster.nodes for p in (n.port, n.controller_port)]
        if self.postgres:
            found.append(self.postgres.port)
        return found

    def left_running(self) -> list[str]:
        procs_ = [(f"{s}#{i}", r.proc) for s, rs in self.replicas.items() for i, r in enumerate(rs)]
        if self.cluster:
            procs_ += [(f"broker {n.node_id}", n.proc) for n in self.cluster.nodes]
        if self.postgres:
            procs_.append(("postgresql", self.postgres.proc))
        return [name for name, proc in procs_ if proc is not None and proc.poll() is None]

    def stop(self) -> None:
        """Everything started here, whatever state it is in (a frozen replica is woken first)."""
        for pid in list(self.frozen):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGCONT)
        self.frozen.clear()
        for replicas in self.replicas.values():
            for replica in replicas:
                try:
                    procs.stop(replica.proc, timeout_s=15)
                except Exception:
                    procs.kill(replica.proc)
        if self.cluster:
            for node in self.cluster.nodes:
                try:
                    procs.stop(node.proc, timeout_s=20)
                except Exception:
                    procs.kill(node.proc)
        if self.postgres:
            try:
                self.postgres.stop()
            except Exception:
                self.postgres.kill()
            shutil.rmtree(self.postgres.data_dir, ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


# --- the monitor: readiness and consumer lag, every second ---------------------------------------


ROUND_TIMEOUT_S = 30.0
LAG_TIMEOUT_S = 20.0
LAG_FAILURES_BEFORE_NEW_CLIENTS = 3


class Monitor:
    def __init__(self, stack: Stack, lag_ok: int) -> None:
        self.stack, self.lag_ok = stack, lag_ok
        self.ready: dict[str, bool] = {}
        self.lag: int | None = None
        self.lag_by_group: dict[str, int] = {}
        self.max_lag = 0
        self.samples: list[dict] = []
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def _clients(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None:
            self._admin = AIOKafkaAdminClient(bootstrap_servers=self.stack.bootstrap, request_timeout_ms=5000)
            await self._admin.start()
        if self._consumer is None:
            self._consumer = AIOKafkaConsumer(
                bootstrap_servers=self.stack.bootstrap, group_id=None, enable_auto_commit=False, request_timeout_ms=5000
            )
            await self._consumer.start()
        return self._admin, self._consumer

    async def close(self) -> None:
        admin, consumer, self._admin, self._consumer = self._admin, self._consumer, None, None
        for closing in ([admin.close()] if admin else []) + ([consumer.stop()] if consumer else []):
            try:  # bounded: a client stuck on a broker that is away must not stop the monitor
                await asyncio.wait_for(closing, timeout=5)
            except BaseException as exc:
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise

    async def lag_now(self) -> dict[str, int]:
        """Per consumer group: records on its topics not yet committed (end offset - committed)."""
        admin, consumer = await self._clients()
        partitions = [TopicPartition(t, p) for t in CONSUMERS for p in range(3)]
        end = await consumer.end_offsets(partitions)
        out: dict[str, int] = {}
        seen = self.__dict__.setdefault("committed_seen", {})
        for service in SERVICES:
            group = f"{self.stack.group_prefix}.{service}"
            committed = await admin.list_consumer_group_offsets(group)
            total = 0
            for tp in partitions:
                if service in CONSUMERS[tp.topic]:
                    meta = committed.get(tp)
                    # While a broker restarts, the group's coordinator moves and may answer without
                    # the offsets it holds: that is "not known", not "nothing consumed" (a full run
                    # once read a lag of 19,303 from it). Committed offsets never go back, so the last
                    # one seen stands in.
                    if meta is not None and meta.offset >= 0:
                        seen[(group, tp)] = max(meta.offset, seen.get((group, tp), 0))
                    total += max(0, end[tp] - seen.get((group, tp), 0))
            out[service] = total
        return out

    async def readiness(self, client: httpx.AsyncClient) -> dict[str, bool]:
        async def one(url: str) -> bool:
            try:
                return (await client.get(url + "/readyz", timeout=2)).status_code == 200
            except httpx.HTTPError:
                return False

        names = [f"{s}#{i}" for s, rs in self.stack.replicas.items() for i in range(len(rs))]
        urls = [r.url for rs in self.stack.replicas.values() for r in rs]
        return dict(zip(names, await asyncio.gather(*(one(u) for u in urls)), strict=False))

    def healthy(self, lag_before: int | None = None) -> bool:
        """Every replica ready and the consumers back where they were: lag at most `lag_ok`, or at most
        what it was when the fault struck (under a load near the platform's limit the lag is never
        small, and "recovered" means the fault's own backlog is worked off, not the load's)."""
        lag_ok = max(self.lag_ok, lag_before or 0)
        return bool(self.ready) and all(self.ready.values()) and self.lag is not None and self.lag <= lag_ok

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(self.round(), timeout=ROUND_TIMEOUT_S)
            except TimeoutError:
                self.lag = None
                self.ready = {name: False for name in self.ready}
                await self.close()
            except Exception as exc:
                say(f"  monitor: {type(exc).__name__}: {exc}")
                self.lag = None
            self.samples.append(
                {
                    "t": round(time.time(), 2),
                    "lag": self.lag,
                    "ready": sum(self.ready.values()),
                    "replicas": len(self.ready),
                }
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
        await self.close()

    async def round(self) -> None:
        # A fresh client each round: a replica frozen mid-request cannot hold this one's connections.
        async with httpx.AsyncClient() as client:
            self.ready = await self.readiness(client)
        try:
            self.lag_by_group = await asyncio.wait_for(self.lag_now(), timeout=LAG_TIMEOUT_S)
        except Exception:
            # Unknown until it answers again. The clients are replaced only after a few failures in a
            # row: one broken by a broker restart must go, but on a saturated machine a slow answer is
            # no reason to throw away connections that took seconds to make (a full run once never
            # read the lag again after a broker restart: each new client timed out while starting).
            self.lag = None
            self.lag_failures = getattr(self, "lag_failures", 0) + 1
            if self.lag_failures >= LAG_FAILURES_BEFORE_NEW_CLIENTS:
                self.lag_failures = 0
                await self.close()
            return
        self.lag_failures = 0
        self.lag = sum(self.lag_by_group.values())
        self.max_lag = max(self.max_lag, self.lag)


# --- the faults ----------------------------------------------------------------------------------


class Injector:
    def __init__(self, stack: Stack, monitor: Monitor, faults: list[Fault], seed: int) -> None:
        self.stack, self.monitor, self.faults = stack, monitor, faults
        # Waits for restarts block a thread for up to minutes: threads of their own, not the event
        # loop's default executor (which the clients of the run may need meanwhile).
        self.threads = ThreadPoolExecutor(max_workers=16, thread_name_prefix="chaos-fault")
        self.rng = random.Random(f"{seed}:records")
        self.poison_sent: dict[str, str] = {}  # poison id -> topic

    async def run(self, load_started: float) -> None:
        """Each fault at its offset, in a task of its own: faults overlap, as they do in production.
        Two faults on one target (a replica, the brokers, PostgreSQL) wait for each other, so at most
        one broker is away at a time (two would be below min.insync.replicas: a halt, not a fault)."""
        locks: dict[str, asyncio.Lock] = {}

        async def one(fault: Fault) -> None:
            wait = load_started + fault.at_s - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            target = {"broker_restart": "brokers", "postgres_restart": "postgresql"}.get(
                fault.kind, f"{fault.service}#{fault.replica}" if fault.service else fault.kind
            )
            async with locks.setdefault(target, asyncio.Lock()):
                say(f"  fault: {fault.describe()}")
                fault.injected_at = time.time()
                lag_before = self.monitor.lag
                fault.notes.append(f"consumer lag when injected: {lag_before}")
                try:
                    await self.inject(fault)
                except Exception as exc:
                    fault.notes.append(f"injection failed: {type(exc).__name__}: {exc}")
                    say(f"    injection failed: {exc}")
                fault.ended_at = time.time()
            await asyncio.sleep(1.0)  # let the monitor see the fault's effect, not the state before it
            # The deadline moves while further faults strike before this one is worked off (its storm).
            while time.time() < recovery_deadline(fault, self.faults) and not self.monitor.healthy(lag_before):
                await asyncio.sleep(0.5)
            if self.monitor.healthy(lag_before):
                fault.recovered_at = time.time()
                if fault.recovered_at > (fault.ended_at or fault.injected_at) + RECOVER_AFTER_LAST_S:
                    fault.notes.append("recovered only with its storm: other faults struck before it was worked off")
                say(f"    {fault.kind} {fault.service or ''}: recovered {fault.recovery_s:.1f}s after injection")
            else:
                waited_s = time.time() - (fault.injected_at or 0.0)
                fault.notes.append(
                    f"not recovered within {waited_s:.0f}s ({RECOVER_AFTER_LAST_S:.0f}s after its storm's last "
                    f"fault, at most {STORM_CAP_S:.0f}s): ready {self.monitor.ready}, lag {self.monitor.lag_by_group}"
                )
                say(f"    {fault.kind}: NOT recovered within {waited_s:.0f}s")

        try:
            await asyncio.gather(*(one(fault) for fault in self.faults))
        finally:
            self.threads.shutdown(wait=False)

    async def blocking(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.threads, fn, *args)

    async def inject(self, fault: Fault) -> None:
        if fault.kind in ("kill9", "sigterm", "freeze"):
            replica = self.stack.replicas[fault.service][fault.replica]
            if fault.kind == "freeze":
                pid = replica.proc.pid
                os.killpg(pid, signal.SIGSTOP)
                self.stack.frozen.add(pid)
                try:
                    await asyncio.sleep(fault.down_s)
                finally:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGCONT)
                    self.stack.frozen.discard(pid)
                return
            self.stack.in_fault.add((fault.service, fault.replica))
            try:
                if fault.kind == "kill9":
                    await self.blocking(replica.kill)
                else:
                    await self.blocking(procs.stop, replica.proc, 30.0)  # SIGTERM: graceful stop
                    fault.notes.append(f"exit code after SIGTERM: {replica.proc.returncode}")
                await asyncio.sleep(fault.down_s)
                replica.start()
            finally:  # from here on, if it exits (PostgreSQL away at its startup), the supervisor restarts it
                self.stack.in_fault.discard((fault.service, fault.replica))
        elif fault.kind == "broker_restart":
            node = self.stack.cluster.nodes[fault.broker]
            await self.blocking(node.kill)
            await asyncio.sleep(fault.down_s)
            await self.blocking(node.launch)
            await self.blocking(procs.wait_for_port, node.port, 120, node.proc, f"Kafka node {node.node_id}")
        elif fault.kind == "postgres_restart":
            pg = self.stack.postgres
            await self.blocking(pg.stop)
            await asyncio.sleep(fault.down_s)
            await self.blocking(pg.start)
        elif fault.kind == "duplicates":
            await self.duplicates(fault)
        elif fault.kind == "poison":
            await self.poison(fault)

    async def duplicates(self, fault: Fault) -> None:
        """Copies of records already on the topics (same key, value, headers): a redelivery storm."""
        records = []
        for topic in CONSUMERS:
            records += await read_topic(self.stack.bootstrap, topic, timeout_s=20)
        records = [r for r in records if not any(k == POISON_HEADER for k, _ in (r.headers or []))]
        if not records:
            fault.notes.append("no records to copy yet")
            return
        chosen = [self.rng.choice(records) for _ in range(fault.count)]
        producer = AIOKafkaProducer(bootstrap_servers=self.stack.bootstrap, acks="all", enable_idempotence=True)
        await producer.start()
        try:
            sends = [
                await producer.send(
                    r.topic, r.value, key=r.key, headers=[*list(r.headers or []), (DUPLICATE_HEADER, b"1")]
                )
                for r in chosen
            ]
            await asyncio.gather(*sends)
        finally:
            await producer.stop()
        fault.notes.append(f"copied {len(chosen)} of {len(records)} records")

    async def poison(self, fault: Fault) -> None:
        """Bad JSON, a type that does not belong on the topic, and failed validation, in turn."""
        topics = list(CONSUMERS)
        producer = AIOKafkaProducer(bootstrap_servers=self.stack.bootstrap, acks="all", enable_idempotence=True)
        await producer.start()
        try:
            sends = []
            for i in range(fault.count):
                pid = f"chaos-poison-{uuid.UUID(int=self.rng.getrandbits(128))}"
                topic = topics[i % len(topics)]
                other = topics[(i + 1) % len(topics)]
                envelope = {
                    "specversion": "1.0",
                    "id": str(uuid.UUID(int=self.rng.getrandbits(128))),
                    "source": pid,
                    "time": "2026-11-26T05:00:00Z",
                    "subject": pid,
                    "datacontenttype": "application/json",
                }
                style = i % 3
                if style == 0:
                    value = b"{not json " + pid.encode()
                elif style == 1:  # a well-formed envelope of another topic's type
                    value = json.dumps({**envelope, "type": f"socialrx.{other}", "data": {}}).encode()
                else:  # the right type, data that fails validation
                    value = json.dumps(
                        {**envelope, "type": f"socialrx.{topic}", "data": {"referral_id": 12345, "note": pid}}
                    ).encode()
                self.poison_sent[pid] = topic
                sends.append(
                    await producer.send(topic, value, key=pid.encode(), headers=[(POISON_HEADER, pid.encode())])
                )
            await asyncio.gather(*sends)
        finally:
            await producer.stop()


# --- the invariants ------------------------------------------------------------------------------


class Checker:
    def __init__(
        self,
        stack: Stack,
        load: Load,
        injector: Injector,
        world: World,
        capped_agreement: str,
        receiver: WebhookReceiver,
        subscription_id: str,
    ) -> None:
        self.stack, self.load, self.injector, self.world = stack, load, injector, world
        self.receiver, self.subscription_id = receiver, subscription_id
        self.capped_agreement = capped_agreement
        self.ticks: list[dict] = []
        self.conns: dict[str, asyncpg.Connection] = {}

    async def conn(self, service: str) -> asyncpg.Connection:
        c = self.conns.get(service)
        if c is None or c.is_closed():
            c = self.conns[service] = await asyncpg.connect(_dsn(self.stack.database_urls[service]), timeout=5)
        return c

    async def close(self) -> None:
        for c in self.conns.values():
            with contextlib.suppress(Exception):
                await c.close()

    # each returns (held, detail); the periodic ones must hold at every moment, also mid-fault

    async def trial_balance(self) -> tuple[bool, Any]:
        debit, credit = await (await self.conn("funding-ledger")).fetchrow(
            "SELECT coalesce(sum(debit_pence), 0), coalesce(sum(credit_pence), 0) FROM journal_lines"
        )
        return debit == credit, {"debits_pence": int(debit), "credits_pence": int(credit)}

    async def no_referral_twice(self) -> tuple[bool, Any]:
        rows = await (await self.conn("referral-intake")).fetch(
            "SELECT idempotency_key, count(*) AS n FROM referrals WHERE pcn_id = $1 GROUP BY 1", self.world.pcn_id
        )
        keys = {life.key for life in self.load.everything}
        twice = [r["idempotency_key"] for r in rows if r["n"] > 1]
        stray = [r["idempotency_key"] for r in rows if r["idempotency_key"] not in keys]
        return not twice and not stray, {"referrals": sum(r["n"] for r in rows), "twice": twice[:5], "stray": stray[:5]}

    async def no_fee_twice_or_unearned(self) -> tuple[bool, Any]:
        rows = await (await self.conn("funding-ledger")).fetch(
            "SELECT referral_id, basis, count(*) AS n FROM payments WHERE pcn_id = $1 GROUP BY 1, 2", self.world.pcn_id
        )
        lives = {life.referral_id: life for life in self.load.everything if life.referral_id}
        twice = [(r["referral_id"], r["basis"]) for r in rows if r["n"] > 1]
        unearned = []
        for r in rows:
            life = lives.get(r["referral_id"])
            if life is None:
                continue  # its create is still in flight
            if life.declined or (r["basis"] == "outcome_recorded" and life.plan.outcome_status != "completed"):
                unearned.append((r["referral_id"], r["basis"]))
        return not twice and not unearned, {
            "payments": sum(r["n"] for r in rows),
            "twice": twice[:5],
            "unearned": unearned[:5],
        }

    async def dlq_records(self) -> list[Any]:
        out = []
        for topic in CONSUMERS:
            out += await read_topic(self.stack.bootstrap, topic + ".dlq", timeout_s=20)
        return out

    async def dlq_only_poison(self) -> tuple[bool, Any]:
        records = await self.dlq_records()
        other = [r for r in records if not any(k == POISON_HEADER for k, _ in (r.headers or []))]
        return not other, {"dlq_records": len(records), "not_poison": [_dlq_summary(r) for r in other[:5]]}

    async def cap_held(self) -> tuple[bool, Any]:
        accrued = await (await self.conn("funding-ledger")).fetchval(
            "SELECT coalesce(sum(amount_pence), 0) FROM payments WHERE agreement_id = $1", self.capped_agreement
        )
        return accrued <= CAP_PENCE, {"accrued_pence": int(accrued), "cap_pence": CAP_PENCE}

    PERIODIC = ("trial_balance", "no_referral_twice", "no_fee_twice_or_unearned", "dlq_only_poison", "cap_held")

    async def tick(self) -> dict:
        result: dict[str, Any] = {"t": round(time.time(), 2)}
        for name in self.PERIODIC:
            try:
                held, detail = await asyncio.wait_for(getattr(self, name)(), timeout=30)
                result[name] = {"held": held, **({} if held else {"detail": detail})}
            except Exception as exc:
                result[name] = {"held": None, "unavailable": f"{type(exc).__name__}"}
                self.conns.clear()
        self.ticks.append(result)
        return result

    async def every(self, seconds: float, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=seconds)
            tick = await self.tick()
            broken = [k for k, v in tick.items() if k != "t" and v["held"] is False]
            if broken:
                say(f"  INVARIANT BROKEN: {broken}: {json.dumps({k: tick[k] for k in broken}, default=str)[:600]}")

    async def unsent(self) -> dict[str, int]:
        return {
            s: int(await (await self.conn(s)).fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL"))
            for s in SERVICES
        }

    async def quiesce(self, monitor: Monitor, timeout_s: float) -> dict:
        """Until every outbox is drained and every group's lag is zero (or the timeout)."""
        deadline = time.monotonic() + timeout_s
        started = time.monotonic()
        unsent: dict[str, int] = {}
        lag: dict[str, int] = {}
        while time.monotonic() < deadline:
            try:
                unsent = await self.unsent()
                lag = await asyncio.wait_for(monitor.lag_now(), timeout=10)
                if not any(unsent.values()) and not any(lag.values()):
                    break
            except Exception:
                self.conns.clear()
            await asyncio.sleep(1)
        return {
            "outbox_unsent": unsent,
            "consumer_lag": lag,
            "seconds": round(time.monotonic() - started, 1),
            "held": bool(unsent) and not any(unsent.values()) and bool(lag) and not any(lag.values()),
        }

    async def webhooks(self, timeout_s: float) -> dict:
        """Every delivery of the subscribed charity's events made (each event at least once, as the
        directory promises), none left pending; how many arrived more than once (claimed twice)."""
        deadline = time.monotonic() + timeout_s
        while True:
            rows = await (await self.conn("directory")).fetch(
                "SELECT event_id::text AS event_id, status FROM webhook_deliveries WHERE subscription_id = $1",
                self.subscription_id,
            )
            if all(r["status"] == "delivered" for r in rows) or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        org = self.world.organisations[1]
        expected = sum(
            1
            for life in self.load.everything
            if self.world.organisations[life.plan.organisation] == org and (life.accepted or life.declined)
        )
        got: dict[str, int] = {}
        for eid in self.receiver.received:
            got[eid] = got.get(eid, 0) + 1
        rows_by_event = {r["event_id"] for r in rows}
        missing = [e for e in rows_by_event if e not in got]
        pending = [r["event_id"] for r in rows if r["status"] != "delivered"]
        return {
            "decisions_of_the_organisation": expected,
            "deliveries": len(rows),
            "received": len(self.receiver.received),
            "distinct_received": len(got),
            "received_more_than_once": sum(n - 1 for n in got.values() if n > 1),
            "missing": len(missing),
            "pending": len(pending),
            "held": len(rows) == expected and not missing and not pending,
        }

    async def final(self, monitor: Monitor, timeout_s: float) -> dict:
        drained = await self.quiesce(monitor, timeout_s)
        await asyncio.sleep(2)  # handlers of the last records commit their effects before their offsets
        out: dict[str, Any] = {"outbox_drained_and_lag_zero": drained}
        for name in self.PERIODIC:
            held, detail = await getattr(self, name)()
            out[name] = {"held": held, "detail": detail}
        out.update(await self.exactly_once())
        for name, check in (
            ("dlq_exact", self.dlq_exact),
            ("settlements", self.settlements),
            ("capped_agreement", self.cap_exact),
            ("relay_resends", self.relay_resends),
            ("rebuild_equal", self.rebuild_equal),
            ("no_personal_identifier_on_topics", self.pii_scan),
            # A replica killed mid-delivery keeps its rows' lease (60 s) and, to keep order, holds back
            # that subscription's later events until it expires: allow the lease and the backlog.
            ("webhooks", lambda: self.webhooks(240)),
        ):
            try:
                out[name] = await check()
            except Exception as exc:
                out[name] = {"held": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
        return out

    async def exactly_once(self) -> dict:
        """Lost: an effect the run was acknowledged that is missing. Duplicated: an effect twice (or unearned)."""
        lives = [life for life in self.load.everything if life.referral_id]
        ids = [life.referral_id for life in lives]
        intake = dict(
            (r["id"], r["status"])
            for r in await (await self.conn("referral-intake")).fetch(
                "SELECT id, status FROM referrals WHERE pcn_id = $1", self.world.pcn_id
            )
        )
        by_key = {}
        for r in await (await self.conn("referral-intake")).fetch(
            "SELECT idempotency_key, count(*) AS n FROM referrals WHERE pcn_id = $1 GROUP BY 1", self.world.pcn_id
        ):
            by_key[r["idempotency_key"]] = r["n"]
        payments: dict[tuple[str, str], list[int]] = {}
        for r in await (await self.conn("funding-ledger")).fetch(
            "SELECT referral_id, basis, amount_pence, agreement_id FROM payments WHERE pcn_id = $1", self.world.pcn_id
        ):
            payments.setdefault((r["referral_id"], r["basis"]), []).append(int(r["amount_pence"]))
        outcomes: dict[str, int] = {}
        for r in await (await self.conn("outcomes")).fetch(
            "SELECT referral_id, count(*) AS n FROM outcomes WHERE referral_id = ANY($1::text[]) GROUP BY 1", ids
        ):
            outcomes[r["referral_id"]] = r["n"]
        inbox = dict(
            (r["referral_id"], r["status"])
            for r in await (await self.conn("directory")).fetch(
                "SELECT referral_id, status FROM referral_inbox WHERE referral_id = ANY($1::text[])", ids
            )
        )
        lost: list[str] = []
        duplicated: list[str] = []
        expected_fees = set()
        for life in lives:
            rid = life.referral_id
            if rid not in intake:
                lost.append(f"{rid}: referral")
                continue
            if by_key.get(life.key, 0) > 1:
                duplicated.append(f"{rid}: referral x{by_key[life.key]}")
            want = "declined" if life.declined else "outcome_recorded" if life.outcome_id else None
            if want and intake[rid] != want:
                lost.append(f"{rid}: intake status {intake[rid]}, expected {want}")
            # An outcome that ends the referral (completed, disengaged) gives its place back; engaged does not.
            want_inbox = (
                "declined"
                if life.declined
                else "accepted"
                if life.accepted and not life.outcome_id
                else "finished"
                if life.plan.outcome_status != "engaged"
                else "accepted"
            )
            if want_inbox and inbox.get(rid) != want_inbox:
                lost.append(f"{rid}: directory inbox {inbox.get(rid)}, expected {want_inbox}")
            if life.outcome_id and outcomes.get(rid, 0) == 0:
                lost.append(f"{rid}: outcome")
            if outcomes.get(rid, 0) > 1:
                duplicated.append(f"{rid}: outcome x{outcomes[rid]}")
            for basis in life.expected_fees:
                expected_fees.add((rid, basis))
                if not payments.get((rid, basis)):
                    lost.append(f"{rid}: {basis} fee")
        for key, amounts in payments.items():
            if len(amounts) > 1:
                duplicated.append(f"{key[0]}: {key[1]} fee x{len(amounts)}")
            if key not in expected_fees:
                duplicated.append(f"{key[0]}: {key[1]} fee not earned")
        capped_org = self.world.organisations[-1]
        capped = {life.referral_id for life in lives if self.world.organisations[life.plan.organisation] == capped_org}
        uncapped_wrong = [
            k
            for k, amounts in payments.items()
            if k in expected_fees and k[0] not in capped and amounts[0] != nominal_fee_pence(k[1])
        ]
        # Places: each accept took one, each ending outcome gave it back, on whichever replica it ran.
        places = {}
        for i, sid in enumerate(self.world.services):
            taken = sum(
                1
                for life in self.load.lifecycles
                if life.plan.organisation == i
                and life.accepted
                and not (life.outcome_id and life.plan.outcome_status != "engaged")
            )
            places[sid] = 100_000 - taken
        for r in await (await self.conn("directory")).fetch(
            "SELECT id, capacity FROM services WHERE id = ANY($1::text[])", list(places)
        ):
            if r["capacity"] != places[r["id"]]:
                (lost if r["capacity"] > places[r["id"]] else duplicated).append(
                    f"service {r['id']}: capacity {r['capacity']}, expected {places[r['id']]}"
                )
        unfinished = [life for life in self.load.lifecycles if life.finished is None]
        return {
            "lifecycles": {
                "started": len(self.load.lifecycles),
                "finished": len(self.load.lifecycles) - len(unfinished),
                "declined": sum(1 for life in lives if life.declined),
                "accepted": sum(1 for life in lives if life.accepted),
                "outcomes_qualifying": sum(1 for life in lives if "outcome_recorded" in life.expected_fees),
                "corrected": sum(1 for life in lives if life.corrected),
                "unfinished_by_the_client": [f"{life.index}: {life.error}" for life in unfinished[:10]],
            },
            "fees": {
                "expected": len(expected_fees),
                "ledgered": sum(len(a) for a in payments.values()),
                "amount_wrong": uncapped_wrong[:5],
            },
            "lost": len(lost),
            "lost_examples": lost[:10],
            "duplicated": len(duplicated),
            "duplicated_examples": duplicated[:10],
            "held": not lost and not duplicated and not unfinished and not uncapped_wrong,
        }

    async def cap_exact(self) -> dict:
        """Two ledger replicas accrue for the capped agreement from different partitions: the total is
        exactly min(cap, what the run earned), never more."""
        capped_org = self.world.organisations[-1]
        earned = sum(
            nominal_fee_pence(b)
            for life in self.load.lifecycles
            if self.world.organisations[life.plan.organisation] == capped_org
            for b in life.expected_fees
        )
        accrued, refused = await (await self.conn("funding-ledger")).fetchrow(
            "SELECT coalesce(sum(amount_pence), 0), coalesce(sum(refused_over_cap_pence), 0) FROM payments "
            "WHERE agreement_id = $1",
            self.capped_agreement,
        )
        return {
            "cap_pence": CAP_PENCE,
            "earned_pence": earned,
            "accrued_pence": int(accrued),
            "refused_pence": int(refused),
            "held": int(accrued) == min(CAP_PENCE, earned) and int(accrued) + int(refused) == earned,
        }

    async def settlements(self) -> dict:
        rows = await (await self.conn("funding-ledger")).fetch(
            "SELECT reference, amount_pence FROM settlements WHERE pcn_id = $1", self.world.pcn_id
        )
        posted: dict[str, list[int]] = {}
        for r in rows:
            posted.setdefault(r["reference"], []).append(int(r["amount_pence"]))
        acknowledged = {s.reference: s.amount_pence for s in self.load.settlements}
        missing = [ref for ref in acknowledged if ref not in posted]
        twice = [ref for ref, a in posted.items() if len(a) > 1]
        wrong = [ref for ref, a in posted.items() if ref in acknowledged and a[0] != acknowledged[ref]]
        return {
            "acknowledged": len(acknowledged),
            "posted": len(rows),
            "missing": missing[:5],
            "twice": twice[:5],
            "wrong_amount": wrong[:5],
            "held": not missing and not twice and not wrong,
        }

    async def dlq_exact(self) -> dict:
        """Every poison record dead-lettered by every consumer of its topic, and nothing else there."""
        expected = {
            (pid, consumer) for pid, topic in self.injector.poison_sent.items() for consumer in CONSUMERS[topic]
        }
        seen: dict[tuple[str, str], int] = {}
        other = []
        by_topic: dict[str, int] = {}
        for record in await self.dlq_records():
            headers = {k: v.decode(errors="replace") for k, v in (record.headers or [])}
            by_topic[record.topic] = by_topic.get(record.topic, 0) + 1
            if POISON_HEADER not in headers:
                other.append(_dlq_summary(record))
                continue
            key = (headers[POISON_HEADER], headers.get("dlq.consumer", "?"))
            seen[key] = seen.get(key, 0) + 1
        missing = expected - set(seen)
        unexpected = set(seen) - expected
        again = sum(n - 1 for n in seen.values() if n > 1)
        return {
            "poison_sent": len(self.injector.poison_sent),
            "expected_dead_letters": len(expected),
            "dead_letters": sum(by_topic.values()),
            "by_topic": by_topic,
            "missing": len(missing),
            "not_poison": other[:5],
            "unexpected": len(unexpected),
            "dead_lettered_again": again,  # at least once: a crash between DLQ publish and offset commit
            "held": not missing and not other and not unexpected,
        }

    async def relay_resends(self) -> dict:
        """Events published more than once by the outbox relays (copies we injected left out): two
        replicas share one relay lock, so only a crash between publish and mark-sent re-sends."""
        out = {}
        for topic in CONSUMERS:
            ids: dict[str, int] = {}
            for record in await read_topic(self.stack.bootstrap, topic, timeout_s=30):
                names = {k for k, _ in (record.headers or [])}
                if POISON_HEADER in names or DUPLICATE_HEADER in names:
                    continue
                try:
                    eid = json.loads(record.value)["id"]
                except (ValueError, KeyError, TypeError):
                    continue
                ids[eid] = ids.get(eid, 0) + 1
            out[topic] = {"events": len(ids), "published_again": sum(n - 1 for n in ids.values())}
        return out

    async def rebuild_equal(self) -> dict:
        from socialrx_funding_ledger.rebuild import rebuild

        target = self.stack.postgres.admin_url(f"chaos_rebuild_{uuid.uuid4().hex[:6]}")
        self.stack.postgres.create_database(target.rsplit("/", 1)[1])
        report = await rebuild(
            self.stack.bootstrap,
            target,
            source_url=self.stack.database_urls["funding-ledger"],
            pcn_id=self.world.pcn_id,
        )
        return {
            "held": bool(report.get("equal")),
            "replayed": report.get("replayed"),
            "differences": report.get("differences", [])[:5],
        }

    async def pii_scan(self) -> dict:
        needles = {
            PERSON["nhs_number"],
            PERSON["given_name"],
            PERSON["family_name"],
            PERSON["date_of_birth"],
            PERSON["postcode"],
        }
        scanned = 0
        found = []
        for topic in (*ev.ALL_TOPICS, *ev.ALL_DLQ_TOPICS):
            for record in await read_topic(self.stack.bootstrap, topic, timeout_s=30):
                scanned += 1
                text = (record.value or b"").decode(errors="replace") + " ".join(
                    v.decode(errors="replace") for _, v in (record.headers or [])
                )
                hits = [n for n in needles if n in text]
                if hits:
                    found.append(f"{topic}@{record.partition}:{record.offset}")
        return {"records_scanned": scanned, "found": found[:5], "held": not found}


def _dlq_summary(record: Any) -> dict:
    headers = {k: v.decode(errors="replace")[:200] for k, v in (record.headers or [])}
    return {"topic": record.topic, "error": headers.get("dlq.error"), "consumer": headers.get("dlq.consumer")}


# --- a charity's webhook receiver -----------------------------------------------------------------


class WebhookReceiver:
    """A charity's endpoint: answers 204 and notes each delivery's event id (both directory replicas
    run the delivery worker; a delivery claimed by both would arrive twice)."""

    def __init__(self) -> None:
        self.port = procs.free_port()
        self.received: list[str] = []
        self.server: asyncio.AbstractServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self.server:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = {}
                for line in head.decode(errors="replace").split("\r\n")[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                await reader.readexactly(int(headers.get("content-length", "0")))
                self.received.append(headers.get("x-socialrx-event-id", "?"))
                writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, asyncio.CancelledError):
            pass  # the sender hung up, or the run is over
        finally:
            writer.close()


# --- concurrency probes across replicas ----------------------------------------------------------


async def capacity_probe(client: httpx.AsyncClient, stack: Stack, world: World, load: Load) -> dict:
    """Concurrent accepts for one service on both directory replicas: each takes exactly one place
    (a lost update would leave more). Its referrals join the run's expectations (one referral fee each)."""
    urls = stack.urls()
    charity = world.charities[world.organisations[0]]
    capacity, accepts = 12, 8
    service = await client.post(
        urls["directory"][0] + "/services",
        headers=charity,
        json={
            "organization_id": world.organisations[0],
            "name": f"Chaos capacity probe {uuid.uuid4().hex[:6]}",
            "needs": ["loneliness"],
            "capacity": capacity,
            "postcode": "LS1 4AP",
            "safeguarding_policy_valid_until": "2099-01-01",
        },
    )
    service.raise_for_status()
    sid = service.json()["id"]
    lives = []
    for i in range(accepts):
        life = Lifecycle(-1 - i, Plan(0, False, "completed", False), f"probe-{uuid.uuid4()}", started=time.time())
        deadline = time.monotonic() + 60
        while life.referral_id is None and time.monotonic() < deadline:
            answer = await client.post(
                urls["referral-intake"][i % 2] + "/referrals",
                headers={**world.link_worker, "Idempotency-Key": life.key},
                json={
                    "service_id": sid,
                    "needs": ["loneliness"],
                    "person": PERSON,
                    "consent": {"given": True, "recorded_at": "2026-11-01T10:00:00Z"},
                },
            )
            if answer.status_code in (200, 201):
                life.referral_id = answer.json()["id"]
            else:
                await asyncio.sleep(0.2)  # the service's service.updated not at referral-intake yet
        lives.append(life)
    load.extra.extend(lives)
    ids = [life.referral_id for life in lives if life.referral_id]
    directory = await asyncpg.connect(_dsn(stack.database_urls["directory"]))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and await directory.fetchval(
            "SELECT count(*) FROM referral_inbox WHERE referral_id = ANY($1::text[])", ids
        ) < len(ids):
            await asyncio.sleep(0.3)
        answers = await asyncio.gather(
            *(
                client.post(urls["directory"][i % 2] + f"/referrals/{rid}/accept", headers=charity)
                for i, rid in enumerate(ids)
            )
        )
        for life, answer in zip(lives, answers, strict=False):
            life.accepted = answer.status_code == 200
            life.finished = time.time()
        left = await directory.fetchval("SELECT capacity FROM services WHERE id = $1", sid)
    finally:
        await directory.close()
    return {
        "service_capacity": capacity,
        "concurrent_accepts": accepts,
        "accepted": sum(1 for a in answers if a.status_code == 200),
        "capacity_left": left,
        "held": len(ids) == accepts and all(a.status_code == 200 for a in answers) and left == capacity - accepts,
    }


# --- the run ---------------------------------------------------------------------------------------


async def _capped_world(client: httpx.AsyncClient, urls: dict[str, str], world: World, secret: str) -> str:
    """One more organisation, whose agreement has a yearly cap the run will reach."""
    org = await client.post(
        urls["directory"] + "/organizations",
        headers=world.admin,
        json={"name": f"Chaos Capped Neighbours {world.pcn_id}"},
    )
    org.raise_for_status()
    org_id = org.json()["id"]
    charity = auth(secret, "charity", organisation_id=org_id)
    service = await client.post(
        urls["directory"] + "/services",
        headers=charity,
        json={
            "organization_id": org_id,
            "name": "Chaos capped walk and talk",
            "needs": ["loneliness"],
            "capacity": 100_000,
            "postcode": "LS1 4AP",
            "safeguarding_policy_valid_until": "2099-01-01",
        },
    )
    service.raise_for_status()
    agreement = await agree_once_known(
        client,
        urls["funding-ledger"],
        world.finance,
        {
            "organisation_id": org_id,
            "per_referral_pence": FEE_REFERRAL_PENCE,
            "per_outcome_pence": FEE_OUTCOME_PENCE,
            "period": "quarterly",
            "days_after_period_end": 30,
            "starts_on": "2020-04-01",
            "cap_pence_per_year": CAP_PENCE,
        },
    )
    world.organisations.append(org_id)
    world.services.append(service.json()["id"])
    world.charities[org_id] = charity
    return agreement.json()["id"]


async def drive(cfg: Config, stack: Stack, secret: str) -> dict:
    # SIGTERM (and Ctrl-C, which asyncio.run handles alike) cancels the run; run() then stops the stack.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
    urls = stack.urls()
    first = {s: u[0] for s, u in urls.items()}
    # No cap on connections: a replica frozen mid-request holds its connections until they time out,
    # and a capped pool would make every other request queue behind them.
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=200)
    async with httpx.AsyncClient(timeout=httpx.Timeout(5.0), limits=limits) as client:
        world = await make_world(client, first, secret, organisations=cfg.organisations)
        capped_agreement = await _capped_world(client, first, world, secret)
        stats = LoadStats()
        give_up_at = time.time() + cfg.load_s + 600
        load = Load(Balancer(client, urls, stats, give_up_at), world, cfg.seed)
        say("concurrency probe: concurrent accepts for one service on both directory replicas ...")
        probe = await capacity_probe(client, stack, world, load)
        say(
            f"  {probe['accepted']} of {probe['concurrent_accepts']} accepted, capacity "
            f"{probe['service_capacity']} -> {probe['capacity_left']}: {'held' if probe['held'] else 'BROKEN'}"
        )
        receiver = WebhookReceiver()
        await receiver.start()
        org = world.organisations[1]
        subscription = await client.post(
            first["directory"] + "/subscriptions",
            headers=world.charities[org],
            json={"url": receiver.url, "events": WEBHOOK_EVENTS},
        )
        subscription.raise_for_status()
        faults = schedule(
            cfg.seed, cfg.load_s, SERVICES, replicas=cfg.replicas, per_kind=cfg.per_kind, records=cfg.records
        )
        say(f"fault schedule (seed {cfg.seed}):")
        for fault in faults:
            say(f"  {fault.describe()}")
        monitor = Monitor(stack, lag_ok=int(max(30, 3 * cfg.rate)))
        injector = Injector(stack, monitor, faults, cfg.seed)
        checker = Checker(stack, load, injector, world, capped_agreement, receiver, subscription.json()["id"])
        stop, load_over = asyncio.Event(), asyncio.Event()
        monitoring = asyncio.create_task(monitor.run(stop))
        supervising = asyncio.create_task(stack.supervise(stop))
        checking = asyncio.create_task(checker.every(cfg.check_every_s, load_over))
        say(f"load: {cfg.n} lifecycles at {cfg.rate}/s (~{cfg.load_s:.0f}s) ...")
        started = time.time()
        injecting = asyncio.create_task(injector.run(started))
        progress = asyncio.create_task(_progress(load, monitor, cfg))
        try:
            await asyncio.gather(load.run(cfg.n, cfg.rate, settle_every_s=cfg.settle_every_s), injecting)
        finally:
            progress.cancel()
        load_done = time.time()
        # The periodic checks end with the load, before the final ones: both use the checker's
        # connections, and an asyncpg connection runs one query at a time (a run once failed at
        # its end with "another operation is in progress").
        load_over.set()
        await asyncio.gather(checking, return_exceptions=True)
        say("load done; waiting for outboxes to drain and consumer lag to reach zero ...")
        try:
            final = await checker.final(monitor, cfg.quiesce_timeout_s)
        finally:
            stop.set()
            await asyncio.gather(monitoring, checking, supervising, return_exceptions=True)
            await checker.close()
            await receiver.stop()
    return figures(cfg, started, load_done, load, stats, faults, monitor, checker, final, probe)


async def _progress(load: Load, monitor: Monitor, cfg: Config) -> None:
    while True:
        await asyncio.sleep(30)
        done = sum(1 for life in load.lifecycles if life.finished)
        say(
            f"  progress: {len(load.lifecycles)}/{cfg.n} started, {done} finished, lag {monitor.lag}, "
            f"ready {sum(monitor.ready.values())}/{len(monitor.ready)}; requests {load.stats.requests}, "
            f"in-transit retries {load.stats.retries_in_transit}, 5xx {load.stats.retries_5xx}; steps "
            f"{dict(collections.Counter(life.step for life in load.lifecycles if life.step != 'done'))}"
        )


def figures(
    cfg: Config,
    started: float,
    load_done: float,
    load: Load,
    stats: LoadStats,
    faults: list[Fault],
    monitor: Monitor,
    checker: Checker,
    final: dict,
    probe: dict,
) -> dict:
    windows = [(f.injected_at, f.recovered_at or f.ended_at or f.injected_at) for f in faults if f.injected_at]
    during, between = [], []
    for life in load.lifecycles:
        if life.finished is None:
            continue
        overlaps = any(life.started <= end and life.finished >= start for start, end in windows)
        (during if overlaps else between).append(life.finished - life.started)
    recovery: dict[str, dict] = {}
    for kind in KINDS:
        times = [f.recovery_s for f in faults if f.kind == kind and f.recovery_s is not None]
        recovery[kind] = {
            "injected": sum(1 for f in faults if f.kind == kind and f.injected_at),
            "recovered": len(times),
            "p50_s": pct(times, 50),
            "max_s": max(times) if times else None,
        }
    periodic = {
        name: {
            "checked": sum(1 for t in checker.ticks if t[name]["held"] is not None),
            "held": sum(1 for t in checker.ticks if t[name]["held"] is True),
            "broken": sum(1 for t in checker.ticks if t[name]["held"] is False),
            "unavailable": sum(1 for t in checker.ticks if t[name]["held"] is None),
        }
        for name in Checker.PERIODIC
    }
    held_keys = (
        "outbox_drained_and_lag_zero",
        "dlq_exact",
        "settlements",
        "capped_agreement",
        "rebuild_equal",
        "webhooks",
        "no_personal_identifier_on_topics",
        *Checker.PERIODIC,
    )
    invariants = {k: bool(final[k]["held"]) for k in held_keys}
    invariants["exactly_once"] = bool(final["held"])
    invariants["periodic_never_broken"] = all(v["broken"] == 0 for v in periodic.values())
    invariants["capacity_probe"] = bool(probe["held"])
    invariants["every_fault_recovered"] = all(f.recovered_at for f in faults)

    def lat(values: list[float]) -> dict:
        ms = [v * 1000 for v in values]
        return {
            "count": len(ms),
            "p50_ms": pct(ms, 50),
            "p95_ms": pct(ms, 95),
            "p99_ms": pct(ms, 99),
            "max_ms": round(max(ms), 1) if ms else None,
        }

    return {
        "seed": cfg.seed,
        "n": cfg.n,
        "rate_per_s": cfg.rate,
        "replicas": cfg.replicas,
        "brokers": 3,
        "replication": 3,
        "min_insync_replicas": 2,
        "postgres_fsync": True,
        "load_seconds": round(load_done - started, 1),
        "achieved_lifecycles_per_s": round(
            len(load.lifecycles)
            / max(1e-9, max((life.finished or started for life in load.lifecycles), default=started) - started),
            2,
        ),
        "faults": [f.to_json() for f in faults],
        "faults_by_kind": {k: recovery[k]["injected"] for k in KINDS},
        "recovery": recovery,
        "lifecycles": final["lifecycles"],
        "lost": final["lost"],
        "duplicated": final["duplicated"],
        "lost_examples": final["lost_examples"],
        "duplicated_examples": final["duplicated_examples"],
        "fees": final["fees"],
        "dlq": final["dlq_exact"],
        "largest_consumer_lag": monitor.max_lag,
        "restarts_after_exit": dict(checker.stack.restarts_after_exit),
        "latency_end_to_end": {
            "during_faults": lat(during),
            "between_faults": lat(between),
            "what": "POST /referrals sent -> last step of the lifecycle answered (client's view)",
        },
        "client": {
            "requests": stats.requests,
            "retries_in_transit": stats.retries_in_transit,
            "retries_5xx": stats.retries_5xx,
            "retries_not_yet_known": stats.retries_not_yet_known,
            "retry_found_already_done": stats.already_done,
            "given_up": stats.refusals,
        },
        "settlements": final["settlements"],
        "capped_agreement": final["capped_agreement"],
        "capacity_probe": probe,
        "relay_resends": final["relay_resends"],
        "rebuild": final["rebuild_equal"],
        "webhooks": final["webhooks"],
        "pii_scan": final["no_personal_identifier_on_topics"],
        "outbox_and_lag_at_end": final["outbox_drained_and_lag_zero"],
        "periodic_checks": periodic,
        "invariants": invariants,
        "ok": all(invariants.values()) and final["lost"] == 0 and final["duplicated"] == 0,
        "lag_samples": monitor.samples[::5],
    }


def table(r: dict) -> str:
    rows = [
        ("seed", str(r["seed"])),
        (
            "lifecycles",
            f"{r['lifecycles']['started']:,} started, "
            f"{r['lifecycles']['finished']:,} finished at {r['rate_per_s']}/s offered "
            f"({r['achieved_lifecycles_per_s']}/s achieved); {r['lifecycles']['declined']} declined, "
            f"{r['lifecycles']['corrected']} corrected",
        ),
        ("lost / duplicated", f"{r['lost']} / {r['duplicated']}"),
        ("fees", f"{r['fees']['expected']:,} expected, {r['fees']['ledgered']:,} ledgered"),
        ("faults injected", ", ".join(f"{k} {v}" for k, v in r["faults_by_kind"].items())),
        (
            "DLQ",
            f"{r['dlq']['poison_sent']} poison sent, {r['dlq']['dead_letters']} dead letters "
            f"(expected {r['dlq']['expected_dead_letters']}, {r['dlq']['missing']} missing, "
            f"{len(r['dlq']['not_poison'])} not poison, {r['dlq']['dead_lettered_again']} again)",
        ),
        ("largest consumer lag", f"{r['largest_consumer_lag']:,} records"),
        (
            "relay re-sends",
            f"{sum(t['published_again'] for t in r['relay_resends'].values())} events published "
            f"twice of {sum(t['events'] for t in r['relay_resends'].values()):,}",
        ),
        (
            "webhooks",
            f"{r['webhooks']['deliveries']} deliveries, {r['webhooks']['missing']} missing, "
            f"{r['webhooks']['received_more_than_once']} received twice",
        ),
        (
            "cap under 2 ledger replicas",
            f"accrued {r['capped_agreement']['accrued_pence']:,} p of cap "
            f"{r['capped_agreement']['cap_pence']:,} p (earned "
            f"{r['capped_agreement']['earned_pence']:,} p)",
        ),
        (
            "capacity probe",
            f"{r['capacity_probe']['concurrent_accepts']} concurrent accepts on both replicas: "
            f"capacity {r['capacity_probe']['service_capacity']} -> {r['capacity_probe']['capacity_left']}",
        ),
        (
            "client retries",
            f"{r['client']['retries_in_transit']} in transit, 5xx {r['client']['retries_5xx']}, "
            f"already done {r['client']['retry_found_already_done']}",
        ),
        ("restarted after exiting", ", ".join(f"{k} {v}" for k, v in r["restarts_after_exit"].items()) or "none"),
    ]
    for kind, rec in r["recovery"].items():
        rows.append(
            (f"recovery {kind}", f"p50 {rec['p50_s']} s, max {rec['max_s']} s ({rec['recovered']}/{rec['injected']})")
        )
    for name in ("during_faults", "between_faults"):
        lat = r["latency_end_to_end"][name]
        rows.append(
            (
                f"latency {name.replace('_', ' ')}",
                f"p50 {lat['p50_ms']} ms, p95 {lat['p95_ms']} ms, "
                f"p99 {lat['p99_ms']} ms, max {lat['max_ms']} ms (n={lat['count']})",
            )
        )
    for name, held in r["invariants"].items():
        rows.append((f"invariant {name}", "held" if held else "BROKEN"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def run(cfg: Config) -> dict:
    """Start everything, run, check, stop everything (also on failure or Ctrl-C)."""
    secret = "socialrx-chaos-" + uuid.uuid4().hex
    # The run's own Kafka clients complain at every broker it kills: expected, and not the figures.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    stack = Stack(cfg, secret)
    commit = _commit()  # at the start: what the replicas run
    say(f"socialrx chaos run: seed {cfg.seed} (replay with --seed {cfg.seed}), {cfg.n} lifecycles at {cfg.rate}/s")
    try:
        stack.start()
        report = asyncio.run(drive(cfg, stack, secret))
    finally:
        say("stopping everything the run started ...")
        stack.stop()
    report["left_running"] = stack.left_running()
    report["ports"] = stack.ports()
    report["machine"] = {"cores": os.cpu_count(), "load_average": os.getloadavg()}
    report["commit"] = commit
    if cfg.out:
        cfg.out.parent.mkdir(parents=True, exist_ok=True)
        cfg.out.write_text(json.dumps(report, indent=2, default=str))
    say(table(report))
    if cfg.out:
        say(f"written: {cfg.out}")
    return report


def _commit() -> str | None:
    """The commit the run's code came from (and whether files differed from it), for the results' provenance."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)", ":(top,exclude)bench/results"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="lifecycles (default 10,000)")
    parser.add_argument("--rate", type=float, default=10.0, help="lifecycles started per second (default 10)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"fault schedule seed (default {DEFAULT_SEED})")
    parser.add_argument("--per-kind", type=int, default=2, help="faults of each kind (default 2)")
    parser.add_argument("--records", type=int, default=1000, help="duplicates / poison records per fault")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default bench/results/chaos-<seed>.json)")
    args = parser.parse_args(argv)
    cfg = Config(
        n=args.n,
        rate=args.rate,
        seed=args.seed,
        per_kind=args.per_kind,
        records=args.records,
        out=args.out or ROOT / "bench" / "results" / f"chaos-{args.seed}.json",
    )

    def terminate(signum, frame):  # SIGTERM while starting or stopping: as Ctrl-C (drive() cancels itself)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    try:
        report = run(cfg)
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("interrupted; everything started was stopped")
        return 130
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
