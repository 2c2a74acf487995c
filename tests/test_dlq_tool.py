"""`socialrx dlq`: list, show and re-drive dead letters, once each."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

from support import publish_raw

from socialrx_harness.testing import read_topic, wait_for


def _cli(kafka, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "socialrx_ops.cli", "dlq", *args], env=env, capture_output=True, text=True, timeout=120
    )


async def test_list_show_and_redrive_once(kafka) -> None:
    source = f"scratch-{uuid.uuid4().hex[:8]}.v1"
    dlq = source + ".dlq"
    for n, consumer in enumerate(["directory", "outcomes", "directory"]):
        await publish_raw(
            kafka.bootstrap_servers,
            dlq,
            f"letter-{n}".encode(),
            key=b"k",
            headers=[
                ("dlq.topic", source.encode()),
                ("dlq.consumer", consumer.encode()),
                ("dlq.error", b"handler error: ValueError('bug 42')"),
                ("dlq.failed_at", b"2026-11-24T03:00:00Z"),
            ],
        )

    listed = _cli(kafka, "list", "--topic", dlq)
    assert listed.returncode == 0, listed.stderr
    assert dlq in listed.stdout and "directory: 2" in listed.stdout and "outcomes: 1" in listed.stdout

    shown = _cli(kafka, "show", dlq)
    assert shown.returncode == 0 and "bug 42" in shown.stdout

    dry = _cli(kafka, "redrive", dlq, "--consumer", "directory", "--dry-run")
    assert "would re-drive 2" in dry.stdout
    assert await read_topic(kafka.bootstrap_servers, source) == []

    first = _cli(kafka, "redrive", dlq, "--consumer", "directory")
    assert first.returncode == 0 and "re-drove 2" in first.stdout, first.stdout + first.stderr
    records = await wait_for(lambda: read_topic(kafka.bootstrap_servers, source), what="re-driven letters")
    assert sorted(r.value for r in records) == [b"letter-0", b"letter-2"]
    assert all(not k.startswith("dlq.") or k == "dlq.redriven_from" for r in records for k, _ in r.headers)

    again = _cli(kafka, "redrive", dlq)
    assert "re-drove 0" in again.stdout  # each letter once: the first run committed its progress
    assert len(await read_topic(kafka.bootstrap_servers, source)) == 2
