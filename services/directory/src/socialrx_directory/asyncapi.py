"""The AsyncAPI document of the topics the directory publishes, built from the event contracts."""

from __future__ import annotations

import json
from typing import Any

from socialrx_shared.events import (
    ORGANISATION_REGISTERED,
    REFERRAL_ACCEPTED,
    REFERRAL_DECLINED,
    SERVICE_UPDATED,
    json_schemas,
)

PUBLISHED = (
    (REFERRAL_ACCEPTED, "A charity accepted a referral (key: referral_id)."),
    (
        REFERRAL_DECLINED,
        "A charity declined a referral, or it went unanswered for 14 days (reason no_response) (key: referral_id).",
    ),
    (
        SERVICE_UPDATED,
        "A service changed, or its referral gate flipped by itself (a safeguarding policy "
        "expired) (key: service_id; keep the highest `version`).",
    ),
    (ORGANISATION_REGISTERED, "An organisation was added to the directory (key: organisation_id)."),
)


def document(bootstrap_servers: str) -> dict[str, Any]:
    schemas = json_schemas()
    components: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    for spec, description in PUBLISHED:
        schema = schemas[spec.topic]
        components.update(schema.pop("$defs", {}))
        channels[spec.topic] = {
            "description": description,
            "subscribe": {
                "operationId": "receive_" + spec.name.replace(".", "_"),
                "summary": f"{spec.ce_type} events; dead letters of consumers go to {spec.dlq_topic}",
                "bindings": {"kafka": {"groupId": {"type": "string", "description": "your own consumer group"}}},
                "message": {
                    "name": spec.ce_type,
                    "contentType": "application/cloudevents+json",
                    "headers": {
                        "type": "object",
                        "properties": {
                            "traceparent": {"type": "string", "description": "W3C trace context"},
                            "ce_type": {"type": "string", "const": spec.ce_type},
                        },
                    },
                    "bindings": {"kafka": {"key": {"type": "string", "description": f"the {spec.key_field}"}}},
                    "payload": schema,
                },
            },
        }
    # Pydantic's "#/$defs/X" would point nowhere inside an AsyncAPI document: move them to components.
    text = json.dumps({"channels": channels, "schemas": components}).replace('"#/$defs/', '"#/components/schemas/')
    moved = json.loads(text)
    return {
        "asyncapi": "2.6.0",
        "info": {
            "title": "socialrx directory events",
            "version": "1.0.0",
            "description": "CloudEvents 1.0 structured JSON on Kafka, one topic per event type. Events carry "
            "no direct identifiers of a person. Filter by data.organisation_id: the topics hold "
            "every organisation's events (webhooks deliver only your own).",
        },
        "servers": {"kafka": {"url": bootstrap_servers, "protocol": "kafka"}},
        "defaultContentType": "application/cloudevents+json",
        "channels": moved["channels"],
        "components": {"schemas": moved["schemas"]},
    }
