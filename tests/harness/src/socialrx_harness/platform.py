"""Run the four services as separate processes, each with its own database: as in production;
and the web app in front of them (no database, no Kafka: it calls their HTTP APIs).

Used by `make up`, by the end-to-end tests and by `make bench`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from socialrx_shared.settings import database_url_env

from . import procs
from .postgres import SERVICES

WEB = "web"
MODULES = {service: "socialrx_" + service.replace("-", "_") for service in (*SERVICES, WEB)}
DEFAULT_PORTS = {"referral-intake": 8001, "directory": 8002, "outcomes": 8003, "funding-ledger": 8004}
DEFAULT_WEB_PORT = 8000
DEV_PERSON_REF_KEY = "socialrx-local-person-ref-key-change-me"


@dataclass
class ServiceProcess:
    service: str
    port: int
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = procs.start(
            [sys.executable, "-m", f"{MODULES[self.service]}.app"], log_path=self.log_path, env=self.env
        )

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.service} exited with code {self.proc.returncode}; see {self.log_path}")
            try:
                answer = httpx.get(f"{self.url}/readyz", timeout=3)
                if answer.status_code == 200:
                    return
                last = answer.text
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            time.sleep(0.3)
        raise TimeoutError(f"{self.service} not ready in {timeout_s:.0f}s: {last}; see {self.log_path}")

    def stop(self) -> None:
        procs.stop(self.proc, timeout_s=30)

    def kill(self) -> None:
        procs.kill(self.proc)


def service_env(
    service: str,
    *,
    port: int,
    kafka: str,
    database_url: str,
    jwt_secret: str,
    person_ref_key: str,
    group_prefix: str = "socialrx",
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_DATABASE_URL")}
    env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": kafka,
            database_url_env(service): database_url,
            "SOCIALRX_JWT_SECRET": jwt_secret,
            "SOCIALRX_HTTP_PORT": str(port),
            "SOCIALRX_CONSUMER_GROUP_PREFIX": group_prefix,
            "LOG_LEVEL": env.get("LOG_LEVEL", "INFO"),
            # Local runs only (make up, tests, bench): the development secret and http:// issuers allowed.
            "SOCIALRX_DEV_MODE": env.get("SOCIALRX_DEV_MODE", "1"),
        }
    )
    # The person_ref key is referral-intake's alone (rule 5): no other service is given it.
    if service == "referral-intake":
        env["SOCIALRX_PERSON_REF_KEY"] = person_ref_key
    else:
        env.pop("SOCIALRX_PERSON_REF_KEY", None)
    env.update(extra or {})
    return env


def web_env(
    *, port: int, service_urls: dict[str, str], jwt_secret: str, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """The web app: the services' URLs, the development sign-in on (this is a development platform)."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_DATABASE_URL") and k != "SOCIALRX_PERSON_REF_KEY"}
    env.update(
        {
            "SOCIALRX_HTTP_PORT": str(port),
            "SOCIALRX_JWT_SECRET": jwt_secret,
            "SOCIALRX_DEV_SIGNIN": "1",
            "LOG_LEVEL": env.get("LOG_LEVEL", "INFO"),
        }
    )
    env.update({f"SOCIALRX_WEB_{s.upper().replace('-', '_')}_URL": url for s, url in service_urls.items()})
    env.update(extra or {})
    return env


@dataclass
class Platform:
    services: dict[str, ServiceProcess]
    web: ServiceProcess | None = None

    @classmethod
    def build(
        cls,
        *,
        kafka: str,
        database_urls: dict[str, str],
        ports: dict[str, int],
        jwt_secret: str,
        person_ref_key: str,
        log_dir: Path,
        group_prefix: str = "socialrx",
        extra_env: dict[str, dict[str, str]] | None = None,
        web_port: int | None = None,
    ) -> Platform:
        services = {
            service: ServiceProcess(
                service,
                ports[service],
                service_env(
                    service,
                    port=ports[service],
                    kafka=kafka,
                    database_url=database_urls[service],
                    jwt_secret=jwt_secret,
                    person_ref_key=person_ref_key,
                    group_prefix=group_prefix,
                    extra=(extra_env or {}).get(service),
                ),
                log_dir / f"{service}.log",
            )
            for service in SERVICES
        }
        web = None
        if web_port is not None:
            web = ServiceProcess(
                WEB,
                web_port,
                web_env(
                    port=web_port,
                    service_urls={s: p.url for s, p in services.items()},
                    jwt_secret=jwt_secret,
                    extra=(extra_env or {}).get(WEB),
                ),
                log_dir / "web.log",
            )
        return cls(services, web)

    def start(self, timeout_s: float = 120.0) -> None:
        for process in self.services.values():
            process.start()
        if self.web:
            self.web.start()
        for process in self.services.values():
            process.wait_ready(timeout_s)
        if self.web:
            self.web.wait_ready(timeout_s)

    def stop(self) -> None:
        if self.web:
            self.web.stop()
        for process in self.services.values():
            process.stop()

    def url(self, service: str) -> str:
        return self.services[service].url
