"""Where the test harness and `make up` get Kafka and PostgreSQL from, in this order:

1. `KAFKA_BOOTSTRAP_SERVERS` / `*_DATABASE_URL` from the environment, when given;
2. testcontainers (`apache/kafka`, `postgres`) when a Docker engine answers;
3. otherwise local processes started here (Kafka jars from Maven Central, Debian's PostgreSQL).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from socialrx_shared.settings import database_url_env

from . import procs
from .kafka import LocalKafka
from .postgres import SERVICES, LocalPostgres
from .topics import ensure_topics_sync


def docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (subprocess.TimeoutExpired, OSError):
        return False


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def _create_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(_asyncpg_dsn(admin_url))
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


@dataclass
class PostgresServer:
    """A PostgreSQL server the harness may create databases on."""

    admin_url: str  # a URL to an existing database on that server
    stop: Callable[[], None] = lambda: None
    local: LocalPostgres | None = None

    def url_for(self, database: str) -> str:
        base, _, _ = self.admin_url.rpartition("/")
        return f"{base}/{database}"

    def new_database(self, prefix: str) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}".replace("-", "_")
        # A thread of its own: callable from sync code and from inside a running event loop alike.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, _create_database(self.admin_url, name)).result()
        return self.url_for(name)


@dataclass
class KafkaServer:
    bootstrap_servers: str
    stop: Callable[[], None] = lambda: None
    local: LocalKafka | None = None
    _tmp: list[Path] = field(default_factory=list)


def start_kafka(partitions: int = 3) -> KafkaServer:
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if given:
        server = KafkaServer(given)
    elif docker_answers():
        container, bootstrap = _kafka_container()
        server = KafkaServer(bootstrap, stop=container.stop)
    else:
        data_dir = Path(tempfile.mkdtemp(prefix="socialrx-kafka-"))
        local = LocalKafka(data_dir, procs.free_port(), procs.free_port(), partitions=partitions)
        local.start()

        def stop() -> None:
            local.stop()
            shutil.rmtree(data_dir, ignore_errors=True)

        server = KafkaServer(local.bootstrap_servers, stop=stop, local=local)
    ensure_topics_sync(server.bootstrap_servers, partitions=partitions)
    return server


def _kafka_container():
    """The official apache/kafka image in KRaft mode, advertised on a host port chosen up front
    (untested on our CI machines, which have no Docker engine)."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    port = procs.free_port()
    container = (
        DockerContainer("apache/kafka:4.1.1")
        .with_bind_ports(9092, port)
        .with_env("KAFKA_NODE_ID", "1")
        .with_env("KAFKA_PROCESS_ROLES", "broker,controller")
        .with_env("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093")
        .with_env("KAFKA_LISTENERS", "PLAINTEXT://:9092,CONTROLLER://:9093")
        .with_env("KAFKA_ADVERTISED_LISTENERS", f"PLAINTEXT://127.0.0.1:{port}")
        .with_env("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
        .with_env("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT")
        .with_env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
    )
    container.start()
    wait_for_logs(container, "Kafka Server started", timeout=120)
    return container, f"127.0.0.1:{port}"


def given_database_urls() -> dict[str, str]:
    return {
        service: os.environ[database_url_env(service)]
        for service in SERVICES
        if os.environ.get(database_url_env(service))
    }


def start_postgres() -> PostgresServer:
    given = given_database_urls()
    if given:
        return PostgresServer(next(iter(given.values())))
    if docker_answers():
        from testcontainers.community.postgres import PostgresContainer

        container = PostgresContainer("postgres:16", driver="asyncpg")
        container.start()
        return PostgresServer(container.get_connection_url(), stop=container.stop)
    data_dir = Path(tempfile.mkdtemp(prefix="socialrx-pg-"))
    local = LocalPostgres(data_dir, procs.free_port(), durable=False)
    local.start()

    def stop() -> None:
        local.discard()

    return PostgresServer(local.admin_url(), stop=stop, local=local)
