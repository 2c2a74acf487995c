"""Create the platform's topics (and their dead-letter topics) with chosen partitions/replication."""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from socialrx_shared.events import ALL_DLQ_TOPICS, ALL_TOPICS


async def ensure_topics(
    bootstrap_servers: str, partitions: int = 3, replication: int = 1, min_insync_replicas: int | None = None
) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="socialrx-topics")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        config = {"min.insync.replicas": str(min_insync_replicas)} if min_insync_replicas else {}
        wanted = [
            NewTopic(name, num_partitions=partitions, replication_factor=replication, topic_configs=config)
            for name in (*ALL_TOPICS, *ALL_DLQ_TOPICS)
            if name not in existing
        ]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):  # created by someone else meanwhile
                await admin.create_topics(wanted)
        return [topic.name for topic in wanted]
    finally:
        await admin.close()


def ensure_topics_sync(bootstrap_servers: str, partitions: int = 3, replication: int = 1) -> list[str]:
    return asyncio.run(ensure_topics(bootstrap_servers, partitions, replication))
