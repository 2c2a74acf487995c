"""`make up`: the whole platform on this machine, no Docker.

Starts (or reuses) Kafka on 127.0.0.1:9092 and PostgreSQL, creates the topics and the databases,
runs the four services on 8001-8004, waits until each answers /readyz, prints where they are and
a few tokens to try them with, and stops everything cleanly on Ctrl-C or SIGTERM. State (the
broker's log, the databases) lives in `.run/` and survives restarts.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import sys
import threading
from pathlib import Path

from socialrx_shared.auth import mint_token
from socialrx_shared.settings import DEV_JWT_SECRET

from . import procs
from .infra import given_database_urls
from .kafka import LocalKafka
from .platform import DEFAULT_PORTS, DEFAULT_WEB_PORT, DEV_PERSON_REF_KEY, WEB, Platform
from .postgres import SERVICES, LocalPostgres
from .topics import ensure_topics_sync

ROOT = Path(__file__).resolve().parents[4]
STATE = Path(os.environ.get("SOCIALRX_STATE_DIR", ROOT / ".run"))
PID_FILE = STATE / "up.pid"
TOKENS_FILE = STATE / "tokens.env"


def _already_running() -> int | None:
    try:
        pid = int(PID_FILE.read_text())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def _say(message: str) -> None:
    print(message, flush=True)


def _ports() -> dict[str, int]:
    """8001-8004 and the web app on 8000 unless SOCIALRX_HTTP_PORTS="a,b,c,d[,web]" says otherwise (tests
    run beside a real `make up`)."""
    given = os.environ.get("SOCIALRX_HTTP_PORTS")
    if not given:
        return {**DEFAULT_PORTS, WEB: DEFAULT_WEB_PORT}
    numbers = [int(p) for p in given.split(",")]
    return dict(zip((*SERVICES, WEB), numbers if len(numbers) == 5 else [*numbers, DEFAULT_WEB_PORT], strict=True))


def main() -> int:
    ports = _ports()
    kafka_port = int(os.environ.get("SOCIALRX_KAFKA_PORT", "9092"))
    running = _already_running()
    if running:
        _say(
            f"socialrx is already running (make up, pid {running}); stop it with Ctrl-C in its terminal "
            f"or `kill {running}`."
        )
        return 1
    busy = [f"{s} port {p}" for s, p in ports.items() if procs.port_open(p)]
    if busy:
        _say(f"cannot start: already in use: {', '.join(busy)}. Stop whatever holds them and try again.")
        return 1
    STATE.mkdir(parents=True, exist_ok=True)
    PID_FILE.write_text(str(os.getpid()))
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    kafka = postgres = platform = keycloak = None
    try:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            if procs.port_open(kafka_port):
                _say(f"Kafka answers on 127.0.0.1:{kafka_port}: using it.")
                bootstrap = f"127.0.0.1:{kafka_port}"
            else:
                _say(f"starting Apache Kafka (KRaft, single node) on 127.0.0.1:{kafka_port} ...")
                kafka = LocalKafka(
                    STATE / "kafka", kafka_port, int(os.environ.get("SOCIALRX_KAFKA_CONTROLLER_PORT", kafka_port + 1))
                )
                kafka.start()
                bootstrap = kafka.bootstrap_servers
        ensure_topics_sync(bootstrap, partitions=int(os.environ.get("SOCIALRX_TOPIC_PARTITIONS", "3")))
        urls = given_database_urls()
        if len(urls) < len(SERVICES):
            port = int(os.environ.get("SOCIALRX_PG_PORT", "5432"))
            if procs.port_open(port):
                port = 55432
            _say(f"starting PostgreSQL on 127.0.0.1:{port} ...")
            postgres = LocalPostgres(STATE / "postgres", port, keep_data=True)
            postgres.start()
            urls = {**postgres.create_service_databases(), **urls}
        jwt_secret = os.environ.get("SOCIALRX_JWT_SECRET", DEV_JWT_SECRET)
        if jwt_secret == DEV_JWT_SECRET:
            _say("warning: SOCIALRX_JWT_SECRET is not set; using the local development secret (never in production)")
        oidc_env: dict[str, str] = {}
        if os.environ.get("SOCIALRX_UP_OIDC") == "1":
            from .keycloak import AUDIENCE, LocalKeycloak

            oidc_port = int(os.environ.get("SOCIALRX_OIDC_PORT", "8080"))
            _say(f"starting Keycloak (realm socialrx) on 127.0.0.1:{oidc_port} ... (about a minute)")
            shutil.rmtree(STATE / "keycloak", ignore_errors=True)  # a fresh realm each run: test users only
            keycloak = LocalKeycloak(STATE / "keycloak", oidc_port)
            provider = keycloak.start()
            oidc_env = {"SOCIALRX_OIDC_ISSUER": provider.issuer, "SOCIALRX_OIDC_AUDIENCE": AUDIENCE}
            _say(
                f"  issuer {provider.issuer}, client {provider.client_id} / {provider.client_secret}; users "
                + ", ".join(f"{user} ({role})" for role, (user, _) in provider.users.items())
                + " - passwords in deploy/keycloak/socialrx-realm.json"
            )
        platform = Platform.build(
            kafka=bootstrap,
            database_urls=urls,
            ports={s: ports[s] for s in SERVICES},
            jwt_secret=jwt_secret,
            person_ref_key=os.environ.get("SOCIALRX_PERSON_REF_KEY", DEV_PERSON_REF_KEY),
            log_dir=STATE / "logs",
            web_port=ports[WEB],
            extra_env={service: oidc_env for service in SERVICES},
        )
        _say("starting the four services and the web app ...")
        platform.start()
        _print_ready(platform, jwt_secret)
        stopping.wait()
        _say("stopping ...")
        return 0
    except Exception as exc:  # say what failed, in one line a person can act on
        _say(f"make up failed: {exc}")
        return 1
    finally:
        if platform:
            platform.stop()
        if keycloak:
            keycloak.stop()
        if kafka:
            kafka.stop()
        if postgres:
            postgres.stop()
        PID_FILE.unlink(missing_ok=True)
        _say("stopped.")


def write_tokens_file(path: Path, tokens: dict[str, str], cli: Path) -> None:
    """`export ADMIN=... LW=... FIN=...` and a `charity_token ORG` helper, readable by this user only."""
    lines = ["# Written by `make up`: tokens for trying socialrx locally. Use: source " + str(path)]
    lines += [f"export {name}={shlex.quote(token)}" for name, token in tokens.items()]
    lines.append("# CHARITY=$(charity_token <organisation id from POST /organizations>)")
    lines.append(f'charity_token() {{ {shlex.quote(str(cli))} token charity --organisation-id "$1"; }}')
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created 0600 from the start (not chmod-ed after): tokens are credentials.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    os.chmod(path, 0o600)  # an older file keeps its mode through O_TRUNC


def _shown(path: Path) -> str:
    """`.run/tokens.env` when run from the repository (as `make up` is), the full path otherwise."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _print_ready(platform: Platform, jwt_secret: str) -> None:
    _say("\nsocialrx is running:")
    if platform.web:
        _say(f"  web app          {platform.web.url}   <- open this; sign in with the development sign-in")
    for service, process in platform.services.items():
        _say(f"  {service:16} {process.url}   (API docs: {process.url}/docs)")
    _say(f"  logs             {STATE / 'logs'}")
    tokens = {
        "ADMIN": mint_token(jwt_secret, sub="admin-local", role="admin"),
        "LW": mint_token(
            jwt_secret, sub="link-worker-local", role="link_worker", pcn_id="U12345", practice_id="B82005"
        ),
        "FIN": mint_token(jwt_secret, sub="finance-local", role="finance", pcn_id="U12345"),
    }
    write_tokens_file(TOKENS_FILE, tokens, Path(sys.executable).parent / "socialrx")
    _say(
        f"\nTokens (8 hours): admin $ADMIN, link_worker $LW (PCN U12345, practice B82005), finance $FIN "
        f"(PCN U12345), and charity_token ORG, are in {TOKENS_FILE}. In your shell:"
    )
    _say(f"  source {_shown(TOKENS_FILE)}")
    _say("\nPress Ctrl-C to stop.")


if __name__ == "__main__":
    sys.exit(main())
