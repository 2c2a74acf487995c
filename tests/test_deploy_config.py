"""docker-compose.yml, the Dockerfiles and the Kubernetes manifests agree with the services' real settings."""

from __future__ import annotations

import importlib
import importlib.util
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from socialrx_shared.events import ALL_DLQ_TOPICS, ALL_TOPICS

ROOT = Path(__file__).resolve().parents[1]
SERVICES = {"referral-intake": 8001, "directory": 8002, "outcomes": 8003, "funding-ledger": 8004}


def _settings(service: str):
    return importlib.import_module("socialrx_" + service.replace("-", "_") + ".app").Settings


def _aliases(settings_cls) -> tuple[set[str], set[str]]:
    """(every variable the service reads, those it cannot start without)."""
    every, required = set(), set()
    for field in settings_cls.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, str):
            every.add(alias)
            if field.is_required():
                required.add(alias)
    return every, required


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.mark.parametrize("service", SERVICES)
def test_compose_sets_what_each_service_reads(compose, service: str) -> None:
    every, required = _aliases(_settings(service))
    env = compose["services"][service]["environment"]
    assert required <= set(env), f"{service} cannot start without {required - set(env)}"
    assert set(env) <= every, f"{service} is given variables it never reads: {set(env) - every}"
    assert f"{service.upper().replace('-', '_')}_DATABASE_URL" in env
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:19092"


@pytest.mark.parametrize(("service", "port"), SERVICES.items())
def test_ports_match_the_services_defaults(compose, service: str, port: int) -> None:
    assert _settings(service).model_fields["http_port"].default == port
    spec = compose["services"][service]
    assert spec["environment"]["SOCIALRX_HTTP_PORT"] == str(port)
    assert spec["ports"] == [f"{port}:{port}"]


def _pyproject(service: str) -> dict:
    return tomllib.loads((ROOT / "services" / service / "pyproject.toml").read_text())


@pytest.mark.parametrize(("service", "port"), {**SERVICES, "web": 8000}.items())
def test_every_image_builds_from_the_one_dockerfile(compose, service: str, port: int) -> None:
    """One Dockerfile; compose names the service and its port; the image runs the service's console script."""
    build = compose["services"][service]["build"]
    assert build["dockerfile"] == "Dockerfile"
    assert build["args"] == {"SERVICE": service, "PORT": str(port)}
    dockerfile = ROOT / build["context"] / build["dockerfile"]
    text = dockerfile.read_text()
    assert "USER socialrx" in text and "HEALTHCHECK" in text and "uv sync --frozen" in text
    assert '--package "socialrx-$SERVICE"' in text and "SOCIALRX_HTTP_PORT=${PORT}" in text
    assert "--package socialrx-ops" in text  # the operators' CLI (`socialrx dlq ...`) in every image
    assert 'CMD ["socialrx-service"]' in text and 'ln -s "socialrx-$SERVICE" /app/.venv/bin/socialrx-service' in text
    project = _pyproject(service)["project"]
    assert project["name"] == f"socialrx-{service}"
    target = project["scripts"][f"socialrx-{service}"]
    module, _, function = target.partition(":")
    assert callable(getattr(importlib.import_module(module), function))
    for copied in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for path in copied.split():
            assert (ROOT / path).exists(), f"{dockerfile} copies missing {path}"


def test_no_service_keeps_a_dockerfile_of_its_own() -> None:
    assert not list((ROOT / "services").glob("*/Dockerfile"))


def test_services_wait_for_healthy_infrastructure(compose) -> None:
    assert compose["services"]["kafka"]["image"].startswith("apache/kafka:4.")
    assert compose["services"]["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for service in SERVICES:
        depends = compose["services"][service]["depends_on"]
        assert depends["kafka"]["condition"] == "service_healthy"
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["kafka-topics"]["condition"] == "service_completed_successfully"
        assert "/readyz" in str(compose["services"][service]["healthcheck"]["test"])


def test_topic_step_creates_every_topic_and_dead_letter_topic(compose) -> None:
    script = compose["services"]["kafka-topics"]["command"][0]
    listed = set(re.search(r"for topic in (.+?); do", script, re.S).group(1).replace("\\", " ").split())
    assert listed == set(ALL_TOPICS)
    assert '"$$topic.dlq"' in script


def test_every_service_database_is_created() -> None:
    sql = (ROOT / "deploy/postgres/init-databases.sql").read_text()
    for service in SERVICES:
        assert f"CREATE DATABASE socialrx_{service.replace('-', '_')};" in sql


def test_kubernetes_manifests_are_what_the_generator_writes() -> None:
    spec = importlib.util.spec_from_file_location("k8s_generate", ROOT / "deploy/k8s/generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    for name, make in generate.FILES.items():
        assert (ROOT / "deploy/k8s" / name).read_text() == generate.render(make()), (
            f"run deploy/k8s/generate.py ({name})"
        )


def test_kubernetes_topics_are_replicated_three_ways_with_two_in_sync() -> None:
    topics = list(yaml.safe_load_all((ROOT / "deploy/k8s/kafka-topics.yaml").read_text()))
    assert {t["spec"]["topicName"] for t in topics} == set(ALL_TOPICS) | set(ALL_DLQ_TOPICS)
    for topic in topics:
        assert topic["kind"] == "KafkaTopic"
        assert topic["spec"]["replicas"] == 3 and topic["spec"]["config"]["min.insync.replicas"] == "2"


def test_kubernetes_deployments_probe_and_configure_every_service() -> None:
    docs = list(yaml.safe_load_all((ROOT / "deploy/k8s/socialrx.yaml").read_text()))
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert set(deployments) == set(SERVICES) | {"web"}
    for service, deployment in ((s, d) for s, d in deployments.items() if s in SERVICES):
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        names = {e["name"] for e in container["env"]}
        _, required = _aliases(_settings(service))
        assert required <= names | {"KAFKA_BOOTSTRAP_SERVERS", "LOG_LEVEL"}
        assert ("SOCIALRX_PERSON_REF_KEY" in names) == (service == "referral-intake")


def test_the_web_app_is_deployed_with_only_what_it_needs(compose) -> None:
    """The web app reaches the four APIs by URL; it has no database, no Kafka, no pseudonym key."""
    from socialrx_web.settings import WebSettings

    every, _ = _aliases(WebSettings)
    web = compose["services"]["web"]
    assert web["ports"] == ["8000:8000"] and "/readyz" in str(web["healthcheck"]["test"])
    assert set(web["depends_on"]) == set(SERVICES)
    assert set(web["environment"]) <= every
    for service, port in SERVICES.items():
        assert web["environment"][f"SOCIALRX_WEB_{service.upper().replace('-', '_')}_URL"] == f"http://{service}:{port}"
    assert web["build"]["args"]["PORT"] == "8000"
    docs = list(yaml.safe_load_all((ROOT / "deploy/k8s/socialrx.yaml").read_text()))
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "web")
    names = {e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert names <= every
    assert {"SOCIALRX_WEB_SESSION_SECRET", "SOCIALRX_OIDC_ISSUER", "SOCIALRX_OIDC_CLIENT_SECRET"} <= names
    assert (
        not {"SOCIALRX_DEV_SIGNIN", "SOCIALRX_JWT_SECRET", "SOCIALRX_PERSON_REF_KEY", "KAFKA_BOOTSTRAP_SERVERS"} & names
    )
    assert not any(n.endswith("_DATABASE_URL") for n in names)


def test_no_manifest_ships_a_usable_secret(compose) -> None:
    """The operator creates the Secret; compose demands the key instead of defaulting it."""
    k8s = (ROOT / "deploy/k8s/socialrx.yaml").read_text()
    assert "change-me" not in k8s
    assert not [d for d in yaml.safe_load_all(k8s) if d["kind"] == "Secret"]
    for service in SERVICES:
        secret = compose["services"][service]["environment"]["SOCIALRX_JWT_SECRET"]
        assert secret.startswith("${SOCIALRX_JWT_SECRET:?"), secret


def test_the_oidc_settings_in_compose_and_the_configmap_mean_off_when_empty(compose) -> None:
    settings = _settings("directory")
    for service in SERVICES:
        env = compose["services"][service]["environment"]
        assert env["SOCIALRX_OIDC_ISSUER"] == "${SOCIALRX_OIDC_ISSUER:-}"
    config = next(
        d for d in yaml.safe_load_all((ROOT / "deploy/k8s/socialrx.yaml").read_text()) if d["kind"] == "ConfigMap"
    )["data"]
    made = settings(
        SOCIALRX_JWT_SECRET="k" * 32,
        SOCIALRX_OIDC_ISSUER=config["SOCIALRX_OIDC_ISSUER"],
        SOCIALRX_OIDC_AUDIENCE=config["SOCIALRX_OIDC_AUDIENCE"],
        SOCIALRX_DEV_MODE=False,
    )
    assert made.oidc_issuer is None and made.oidc_audience == "socialrx"


def test_every_long_running_container_is_started_again_when_it_exits(compose) -> None:
    """A service that exits (its database away at startup, a crash) must come back by itself, as it does
    under Kubernetes; `make chaos` found a replica that stayed down after exiting at startup."""
    one_shot = {"kafka-topics"}
    for name, spec in compose["services"].items():
        if name not in one_shot:
            assert spec.get("restart") == "unless-stopped", name
