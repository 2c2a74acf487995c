"""The test harness: real Kafka and PostgreSQL for the whole session, started here (see infra.py).

Session-scoped, stopped at the end, so a test run leaves no process behind. Ports are free ones
picked at start, so a running `make up` (9092, 8001-8004) is never disturbed.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .infra import KafkaServer, PostgresServer, start_kafka, start_postgres
from .keycloak import AUDIENCE, REALM, LocalKeycloak, OidcProvider
from .platform import DEV_PERSON_REF_KEY, Platform
from .postgres import SERVICES
from .procs import free_port

TEST_JWT_SECRET = "socialrx-test-secret-" + uuid.uuid4().hex
REAL_INFRA_FIXTURES = {"kafka", "postgres", "platform", "oidc_provider"}


def pytest_configure(config: pytest.Config) -> None:
    """Tests are development: services built in-process may use the development secret (tests of
    the refusal itself clear SOCIALRX_DEV_MODE)."""
    os.environ.setdefault("SOCIALRX_DEV_MODE", "1")


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


@pytest.fixture(scope="session")
def oidc_port() -> int:
    """Keycloak's port, chosen at session start so the platform can trust its issuer before (and
    whether or not) it runs: the services fetch its keys only when a provider's token arrives."""
    return free_port()


def oidc_env(port: int) -> dict[str, str]:
    return {"SOCIALRX_OIDC_ISSUER": f"http://127.0.0.1:{port}/realms/{REALM}", "SOCIALRX_OIDC_AUDIENCE": AUDIENCE}


@pytest.fixture(scope="session")
def oidc_provider(oidc_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    """A real OpenID provider (Keycloak, realm `socialrx`), started only for the tests that ask for it."""
    keycloak = LocalKeycloak(tmp_path_factory.mktemp("keycloak"), oidc_port)
    try:
        yield keycloak.start()
    finally:
        keycloak.stop()


def start_platform(
    kafka: KafkaServer,
    postgres: PostgresServer,
    log_dir: Path,
    jwt_secret: str,
    extra_env: dict[str, dict[str, str]] | None = None,
    oidc_port: int | None = None,
) -> Platform:
    if oidc_port is not None:
        extra_env = {s: {**oidc_env(oidc_port), **(extra_env or {}).get(s, {})} for s in SERVICES}
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
def platform(
    kafka: KafkaServer,
    postgres: PostgresServer,
    jwt_secret: str,
    oidc_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Platform]:
    """The four services as separate processes with separate databases, on the session's Kafka,
    trusting the session's OpenID provider (`oidc_provider`) beside HS256 tokens."""
    started = start_platform(kafka, postgres, tmp_path_factory.mktemp("platform-logs"), jwt_secret, oidc_port=oidc_port)
    try:
        yield started
    finally:
        started.stop()
