"""Writes the Kubernetes manifests in this folder from the platform's own facts (services, ports,
topics), so they cannot drift from the code: `python deploy/k8s/generate.py`. A test checks that
the committed files equal what this script writes."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from socialrx_shared.events import ALL_DLQ_TOPICS, ALL_TOPICS

HERE = Path(__file__).parent
NAMESPACE = "socialrx"
SERVICES = {"referral-intake": 8001, "directory": 8002, "outcomes": 8003, "funding-ledger": 8004}
WEB, WEB_PORT = "web", 8000
IMAGE = "ghcr.io/socialrx/{service}:0.1.0"  # built from the one Dockerfile (--build-arg SERVICE, PORT); push to your registry


def _env_name(service: str) -> str:
    return service.upper().replace("-", "_") + "_DATABASE_URL"


def platform_docs() -> list[dict]:
    docs: list[dict] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "socialrx-config", "namespace": NAMESPACE},
            "data": {
                "KAFKA_BOOTSTRAP_SERVERS": "socialrx-kafka-bootstrap.kafka.svc:9092",
                "LOG_LEVEL": "INFO",
                # Your PCN's OpenID provider (README: connecting an identity provider); empty: HS256 only.
                "SOCIALRX_OIDC_ISSUER": "",
                "SOCIALRX_OIDC_AUDIENCE": "socialrx",
            },
        },
        # No Secret here: a shipped value would be a well-known key. The operator creates
        # `socialrx-secrets` (OPERATIONS.md: "Secrets"); pods wait in CreateContainerConfigError until then.
    ]
    for service, port in SERVICES.items():
        docs += [_deployment(service, port), _service(service, port)]
    docs += [_web_deployment(), _service(WEB, WEB_PORT)]
    return docs


def _web_deployment() -> dict:
    """The web app: no database, no Kafka; it calls the services' APIs with the signed-in person's
    token, and signs people in with the organisation's OpenID Connect provider (never the dev sign-in)."""
    deployment = _deployment(WEB, WEB_PORT)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["envFrom"] = []
    container["env"] = [
        {"name": "SOCIALRX_HTTP_HOST", "value": "0.0.0.0"},
        {"name": "SOCIALRX_HTTP_PORT", "value": str(WEB_PORT)},
        {"name": "LOG_LEVEL", "value": "INFO"},
        *(
            {"name": f"SOCIALRX_WEB_{s.upper().replace('-', '_')}_URL", "value": f"http://{s}:{p}"}
            for s, p in SERVICES.items()
        ),
        {"name": "SOCIALRX_OIDC_ISSUER", "value": "https://login.example.nhs.uk/realms/socialrx"},  # your provider
        {"name": "SOCIALRX_OIDC_CLIENT_ID", "value": "socialrx-web"},
        _secret_ref("SOCIALRX_OIDC_CLIENT_SECRET"),
        _secret_ref("SOCIALRX_WEB_SESSION_SECRET"),
    ]
    template = deployment["spec"]["template"]["metadata"]
    template["annotations"] = {}  # no /metrics of its own
    return deployment


def _secret_ref(name: str) -> dict:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": "socialrx-secrets", "key": name}}}


def _deployment(service: str, port: int) -> dict:
    env = [
        {"name": "SOCIALRX_HTTP_HOST", "value": "0.0.0.0"},
        {"name": "SOCIALRX_HTTP_PORT", "value": str(port)},
        _secret_ref("SOCIALRX_JWT_SECRET"),
        _secret_ref(_env_name(service)),
    ]
    if service == "referral-intake":
        env.append(_secret_ref("SOCIALRX_PERSON_REF_KEY"))  # the pseudonym key stays with referral-intake

    def probe(path: str, delay: int) -> dict:
        return {
            "httpGet": {"path": path, "port": port},
            "initialDelaySeconds": delay,
            "periodSeconds": 10,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        }

    labels = {"app.kubernetes.io/name": service, "app.kubernetes.io/part-of": "socialrx"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": service, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            # Replicas share one consumer group: Kafka spreads the partitions (3 per topic) among them.
            "replicas": 2,
            "selector": {"matchLabels": {"app.kubernetes.io/name": service}},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(port),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "terminationGracePeriodSeconds": 40,  # in-flight messages finish, the outbox drains
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
                    "containers": [
                        {
                            "name": service,
                            "image": IMAGE.format(service=service),
                            "ports": [{"containerPort": port, "name": "http"}],
                            "envFrom": [{"configMapRef": {"name": "socialrx-config"}}],
                            "env": env,
                            "livenessProbe": probe("/healthz", 10),
                            "readinessProbe": probe("/readyz", 5),
                            "resources": {
                                "requests": {"cpu": "100m", "memory": "256Mi"},
                                "limits": {"memory": "512Mi"},
                            },
                            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True},
                        }
                    ],
                },
            },
        },
    }


def _service(service: str, port: int) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": service, "namespace": NAMESPACE},
        "spec": {
            "selector": {"app.kubernetes.io/name": service},
            "ports": [{"name": "http", "port": port, "targetPort": port}],
        },
    }


def topic_docs() -> list[dict]:
    return [
        {
            "apiVersion": "kafka.strimzi.io/v1beta2",
            "kind": "KafkaTopic",
            "metadata": {
                "name": topic.replace(".", "-"),
                "namespace": "kafka",
                "labels": {"strimzi.io/cluster": "socialrx"},
            },
            "spec": {
                "topicName": topic,
                "partitions": 3,
                "replicas": 3,
                "config": {
                    "min.insync.replicas": "2",
                    "retention.ms": "-1" if not topic.endswith(".dlq") else "2592000000",
                },
            },
        }
        for topic in (*ALL_TOPICS, *ALL_DLQ_TOPICS)
    ]


def render(docs: list[dict]) -> str:
    header = "# Generated by deploy/k8s/generate.py: edit that script, not this file.\n"
    return header + yaml.safe_dump_all(docs, sort_keys=False)


FILES = {"socialrx.yaml": platform_docs, "kafka-topics.yaml": topic_docs}


def main() -> int:
    for name, make in FILES.items():
        (HERE / name).write_text(render(make()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
