"""KAFKA_BOOTSTRAP_SERVERS naming several brokers (every production cluster) reaches the consumers
as several brokers: found by `make chaos`, whose three-broker cluster no service could join."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import MetaData, Table

from socialrx_shared.runtime import ServiceRuntime, bootstrap_list
from socialrx_shared.settings import ServiceSettings


def test_bootstrap_list_splits_on_commas() -> None:
    assert bootstrap_list("127.0.0.1:9092, 127.0.0.1:9093,127.0.0.1:9094") == [
        "127.0.0.1:9092",
        "127.0.0.1:9093",
        "127.0.0.1:9094",
    ]
    assert bootstrap_list("kafka:9092") == ["kafka:9092"]


def test_the_consumers_broker_is_given_every_bootstrap_server(monkeypatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094")
    settings = ServiceSettings(database_url="postgresql+asyncpg://postgres@127.0.0.1:1/none", jwt_secret="x" * 32)
    metadata = MetaData()
    runtime = ServiceRuntime("test", settings, metadata, Table("outbox", metadata), Table("inbox", metadata), Path("."))
    servers = runtime.broker._connection_kwargs["bootstrap_servers"]
    assert list(servers) == ["127.0.0.1:19092", "127.0.0.1:19093", "127.0.0.1:19094"]
