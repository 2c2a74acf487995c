"""Dead letters: list, inspect and re-drive them (`socialrx dlq ...`).

A dead letter keeps the original bytes and key, plus headers saying why and where it failed
(`dlq.error`, `dlq.topic`, `dlq.partition`, `dlq.offset`, `dlq.consumer`, `dlq.failed_at`).
Re-driving publishes the original bytes back to their topic (acks=all) and commits the DLQ offset
of each letter after its publish is acknowledged, under the consumer group `socialrx-dlq-redrive`:
a re-drive that stops half-way continues where it stopped, and no letter is re-driven twice.
Consumers drop anything they already handled (inbox), so a re-drive is always safe to run.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from socialrx_shared.events import ALL_DLQ_TOPICS

REDRIVE_GROUP = "socialrx-dlq-redrive"


@dataclass(frozen=True)
class Letter:
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, str]
    raw_headers: list[tuple[str, bytes]]

    @property
    def source_topic(self) -> str:
        return self.headers.get("dlq.topic", "")


def _letter(record: Any) -> Letter:
    raw = list(record.headers or [])
    return Letter(
        record.partition,
        record.offset,
        record.key,
        record.value or b"",
        {k: v.decode(errors="replace") for k, v in raw},
        raw,
    )


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    parts = consumer.partitions_for_topic(topic)
    if not parts:
        await consumer._client.force_metadata_update()
        parts = consumer.partitions_for_topic(topic) or set()
    return [TopicPartition(topic, p) for p in sorted(parts)]


async def read_letters(
    bootstrap: str, topic: str, *, group: str | None = None
) -> tuple[AIOKafkaConsumer, list[Letter]]:
    """Letters from the start (group None) or from the group's committed offsets; the consumer stays open."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    partitions = await _partitions(consumer, topic)
    if not partitions:
        return consumer, []
    consumer.assign(partitions)
    if group is None:
        await consumer.seek_to_beginning(*partitions)
    else:
        for tp in partitions:
            committed = await consumer.committed(tp)
            if committed is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, committed)
    end = await consumer.end_offsets(partitions)
    letters: list[Letter] = []
    while any([await consumer.position(tp) < end[tp] for tp in partitions]):
        batch = await consumer.getmany(timeout_ms=1000)
        for records in batch.values():
            letters.extend(_letter(r) for r in records if r.offset < end[TopicPartition(r.topic, r.partition)])
    return consumer, letters


async def list_letters(bootstrap: str, topics: list[str]) -> dict[str, Counter]:
    counts: dict[str, Counter] = {}
    for topic in topics:
        consumer, letters = await read_letters(bootstrap, topic)
        await consumer.stop()
        counts[topic] = Counter(letter.headers.get("dlq.consumer", "?") for letter in letters)
    return counts


async def redrive(
    bootstrap: str,
    topic: str,
    *,
    only_consumer: str | None = None,
    dry_run: bool = False,
    console: Console | None = None,
) -> int:
    console = console or Console()
    consumer, letters = await read_letters(bootstrap, topic, group=REDRIVE_GROUP)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    sent = 0
    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"re-driving {topic}", total=len(letters))
            for letter in letters:
                wanted = only_consumer is None or letter.headers.get("dlq.consumer") == only_consumer
                if wanted and letter.source_topic and dry_run:
                    sent += 1
                elif wanted and letter.source_topic:
                    headers = [(k, v) for k, v in letter.raw_headers if not k.startswith("dlq.")]
                    headers.append(("dlq.redriven_from", f"{topic}/{letter.partition}/{letter.offset}".encode()))
                    await producer.send_and_wait(letter.source_topic, letter.value, key=letter.key, headers=headers)
                    sent += 1
                if not dry_run:
                    # Committed after the publish was acknowledged: stopping here loses nothing.
                    await consumer.commit({TopicPartition(topic, letter.partition): letter.offset + 1})
                progress.advance(task)
    finally:
        await producer.stop()
        await consumer.stop()
    return sent


def print_list(counts: dict[str, Counter], console: Console) -> None:
    table = Table("dead-letter topic", "letters", "by consumer")
    for topic, counter in counts.items():
        table.add_row(topic, str(sum(counter.values())), ", ".join(f"{k}: {v}" for k, v in sorted(counter.items())))
    console.print(table)


def print_letters(letters: list[Letter], console: Console, limit: int) -> None:
    table = Table("partition/offset", "consumer", "failed at", "error", "bytes")
    for letter in letters[:limit]:
        table.add_row(
            f"{letter.partition}/{letter.offset}",
            letter.headers.get("dlq.consumer", "?"),
            letter.headers.get("dlq.failed_at", "?"),
            letter.headers.get("dlq.error", "?")[:120],
            str(len(letter.value)),
        )
    console.print(table)
    if len(letters) > limit:
        console.print(f"... and {len(letters) - limit} more (use --limit)")


def default_topics() -> list[str]:
    return list(ALL_DLQ_TOPICS)


def run(coro: Any) -> Any:
    return asyncio.run(coro)
