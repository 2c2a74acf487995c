"""Prometheus metrics every service exposes at /metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "socialrx_http_requests_total", "HTTP requests handled", ["service", "method", "route", "status"]
)
HTTP_LATENCY_S = Histogram(
    "socialrx_http_request_duration_seconds", "HTTP request latency", ["service", "method", "route"]
)
CONSUMED = Counter("socialrx_messages_consumed_total", "Events handled (effect committed)", ["service", "topic"])
DUPLICATES = Counter("socialrx_messages_duplicate_total", "Events already handled, dropped", ["service", "topic"])
FAILED = Counter("socialrx_messages_failed_total", "Handling attempts that failed", ["service", "topic", "kind"])
DEAD_LETTERED = Counter("socialrx_messages_dead_lettered_total", "Messages sent to a DLQ", ["service", "topic"])
PUBLISHED = Counter("socialrx_messages_published_total", "Events published by the outbox relay", ["service", "topic"])
HANDLER_LATENCY_S = Histogram("socialrx_handler_duration_seconds", "Event handling latency", ["service", "topic"])
OUTBOX_BACKLOG = Gauge(
    "socialrx_outbox_backlog", "Unsent outbox rows seen at the last relay pass (capped at batch size)", ["service"]
)
OUTBOX_OLDEST_AGE_S = Gauge(
    "socialrx_outbox_oldest_unsent_age_seconds", "Age of the oldest unsent outbox row", ["service"]
)
CONSUMER_LAG = Gauge(
    "socialrx_consumer_lag", "Messages behind the end of each assigned partition", ["service", "topic", "partition"]
)


async def observe_consumer_lag(service: str, consumers: list[Any]) -> None:
    """Lag = the partition's high watermark (known from the last fetch) minus the consumer's position."""
    for consumer in consumers:
        if consumer is None:
            continue
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            try:
                position = await asyncio.wait_for(consumer.position(tp), timeout=1)
            except Exception:  # unassigned meanwhile, or the broker away: no figure rather than a wrong one
                continue
            if highwater is not None:
                CONSUMER_LAG.labels(service, tp.topic, str(tp.partition)).set(max(highwater - position, 0))
