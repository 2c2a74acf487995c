"""The test harness: real Kafka and PostgreSQL for the whole session, started here (see infra.py).

Session-scoped, stopped at the end, so a test run leaves no process behind. Ports are free ones
picked at start, so a running `make up` (9092, 8001-8004) is never disturbed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .infra import KafkaServer, PostgresServer, start_kafka, start_postgres
from .platform import DEV_PERSON_REF_KEY, Platform
from .postgres import SERVICES
from .procs import free_port

TEST_JWT_SECRET = "socialrx-test-secret-" + uuid.uuid4().hex
REAL_INFRA_FIXTURES = {"kafka", "postgres", "platform"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the real broker or database, so `make test-fast` can leave them out."""
    for item in items:
        if REAL_INFRA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaServer]:
    server = start_kafka()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def jwt_secret() -> str:
    return TEST_JWT_SECRET


def start_platform(kafka: KafkaServer, postgres: PostgresServer, log_dir: Path, jwt_secret: str,
                   extra_env: dict[str, dict[str, str]] | None = None) -> Platform:
    platform = Platform.build(
        kafka=kafka.bootstrap_servers,
        database_urls={s: postgres.new_database(s) for s in SERVICES},
        ports={s: free_port() for s in SERVICES},
        jwt_secret=jwt_secret,
        person_ref_key=DEV_PERSON_REF_KEY,
        log_dir=log_dir,
        group_prefix="test-" + uuid.uuid4().hex[:8],
        extra_env=extra_env,
        web_port=free_port(),
    )
    try:
        platform.start()
    except BaseException:
        platform.stop()
        raise
    return platform


@pytest.fixture(scope="session")
def platform(kafka: KafkaServer, postgres: PostgresServer, jwt_secret: str,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """The four services as separate processes with separate databases, on the session's Kafka."""
    started = start_platform(kafka, postgres, tmp_path_factory.mktemp("platform-logs"), jwt_secret)
    try:
        yield started
    finally:
        started.stop()
