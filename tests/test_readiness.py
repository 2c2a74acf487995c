"""/readyz really checks the database and the broker: 503 while either is away, 200 when both are up."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from socialrx_harness import procs
from socialrx_harness.kafka import LocalKafka
from socialrx_harness.testing import running_service, wait_for
from socialrx_referral_intake.app import Settings, build


@pytest.fixture
def own_kafka():
    data_dir = Path(tempfile.mkdtemp(prefix="socialrx-kafka-ready-"))
    server = LocalKafka(data_dir, procs.free_port(), procs.free_port())
    server.start()
    yield server
    server.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


async def _ready_status(client) -> tuple[int, dict]:
    answer = await client.get("/readyz")
    return answer.status_code, answer.json()["checks"]


async def test_readyz_follows_the_database_and_the_broker(own_postgres, own_kafka, jwt_secret) -> None:
    async with running_service(
        build,
        Settings,
        database_url=own_postgres.admin_url("own"),
        kafka=own_kafka.bootstrap_servers,
        jwt_secret=jwt_secret,
    ) as (_app, client):
        assert await _ready_status(client) == (200, {"database": "ok", "kafka": "ok"})
        assert (await client.get("/healthz")).status_code == 200

        own_postgres.stop()
        status, checks = await _ready_status(client)
        assert status == 503 and checks["database"].startswith("unavailable") and checks["kafka"] == "ok"
        assert (await client.get("/healthz")).status_code == 200  # alive, just not ready

        own_postgres.start()

        async def ready() -> bool:
            return (await _ready_status(client))[0] == 200

        await wait_for(ready, timeout_s=30, what="ready again after the database came back")

        own_kafka.stop()
        status, checks = await _ready_status(client)
        assert status == 503 and checks == {"database": "ok", "kafka": "unavailable"}

        own_kafka.start()
        await wait_for(ready, timeout_s=60, what="ready again after the broker came back")
