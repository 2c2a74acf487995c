"""A real OpenID provider for tests and local use: Keycloak, from Maven Central, run with Java 21+.

The distribution (`org.keycloak:keycloak-quarkus-dist`, a zip) is fetched once with Maven, as the
Kafka jars are, unpacked under ~/.cache/socialrx and reused. Each run starts it in development mode
on a free port with its own H2 file database and transaction log in a temporary directory, then
creates the `socialrx` realm from `deploy/keycloak/socialrx-realm.json` through the admin REST API.

Keycloak 26 needs Java 21 or newer; the machine's default Java may be 17 (Kafka's). We look for one
in SOCIALRX_KEYCLOAK_JAVA_HOME, JAVA_HOME, then /usr/lib/jvm/*; without one, starting Keycloak fails
with a message saying what to install; nothing else (Kafka, `make up`, other tests) needs it.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from . import procs
from .kafka import CACHE

KEYCLOAK_VERSION = "26.7.3"
REALM_FILE = Path(__file__).resolve().parents[4] / "deploy" / "keycloak" / "socialrx-realm.json"
REALM = "socialrx"
CLIENT_ID = "socialrx-web"
AUDIENCE = "socialrx"
# Which realm user plays each role (passwords are in the realm file: test-only).
ROLE_USERS = {"link_worker": "link.worker", "charity": "charity", "finance": "finance", "admin": "admin"}
# Build-time options: the same on every start, so Keycloak's one-off "augmentation" (~70 s) is reused.
BUILD_OPTIONS = ["--db=dev-file", "--health-enabled=true"]
# Creating the realm takes seconds on an idle machine, over 30 s on a loaded 2-core one.
ADMIN_TIMEOUT_S = 180.0


def _java_major(java_home: Path) -> int | None:
    java = java_home / "bin" / "java"
    if not java.exists():
        return None
    try:
        out = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)', out)
    return int(match.group(1)) if match else None


def find_java_home(minimum: int = 21) -> Path:
    candidates = [os.environ.get("SOCIALRX_KEYCLOAK_JAVA_HOME"), os.environ.get("JAVA_HOME")]
    jvm = Path("/usr/lib/jvm")
    if jvm.is_dir():
        candidates += [str(p) for p in sorted(jvm.iterdir(), reverse=True)]
    for candidate in candidates:
        if candidate and (_java_major(Path(candidate)) or 0) >= minimum:
            return Path(candidate)
    raise RuntimeError(
        f"Keycloak {KEYCLOAK_VERSION} needs Java {minimum} or newer and none was found (looked in "
        "SOCIALRX_KEYCLOAK_JAVA_HOME, JAVA_HOME, /usr/lib/jvm). Install one, e.g. `apt-get install "
        "openjdk-21-jre-headless` (Debian 13) or a Temurin 21+ JDK, or set SOCIALRX_KEYCLOAK_JAVA_HOME."
    )


def dist_dir() -> Path:
    return CACHE / f"keycloak-{KEYCLOAK_VERSION}"


def fetch_dist() -> Path:
    """Resolve and unpack the Keycloak distribution once; later calls reuse the cache."""
    target = dist_dir()
    if (target / "bin" / "kc.sh").exists():
        return target
    if shutil.which("mvn") is None:
        raise RuntimeError("Maven (mvn) is needed to fetch Keycloak: apt-get install -y maven")
    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="keycloak-fetch-", dir=CACHE))
    try:
        result = subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "dependency:copy",
                f"-Dartifact=org.keycloak:keycloak-quarkus-dist:{KEYCLOAK_VERSION}:zip",
                f"-DoutputDirectory={work}",
            ],
            capture_output=True,
            text=True,
            cwd=work,
        )
        archive = work / f"keycloak-quarkus-dist-{KEYCLOAK_VERSION}.zip"
        if result.returncode != 0 or not archive.exists():
            raise RuntimeError(
                f"could not fetch Keycloak from Maven Central:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(work / "unpacked")
        unpacked = work / "unpacked" / f"keycloak-{KEYCLOAK_VERSION}"
        try:
            unpacked.rename(target)  # atomic: a concurrent fetch either wins or finds it done
        except OSError:
            if not (target / "bin" / "kc.sh").exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


@dataclass
class OidcProvider:
    """What tests see of the provider (the interface the web app's tests code against)."""

    issuer: str
    client_id: str
    client_secret: str
    audience: str
    users: dict[str, tuple[str, str]]
    base_url: str = ""
    admin_user: str = "admin"
    admin_password: str = ""

    def _admin_token(self) -> str:
        answer = httpx.post(
            f"{self.base_url}/realms/master/protocol/openid-connect/token",
            timeout=ADMIN_TIMEOUT_S,
            data={
                "grant_type": "password",
                "client_id": "admin-cli",
                "username": self.admin_user,
                "password": self.admin_password,
            },
        )
        answer.raise_for_status()
        return answer.json()["access_token"]

    def _admin(self) -> httpx.Client:
        return httpx.Client(
            base_url=f"{self.base_url}/admin/realms",
            timeout=ADMIN_TIMEOUT_S,
            headers={"Authorization": f"Bearer {self._admin_token()}"},
        )

    def set_attribute(self, role: str, name: str, value: str) -> None:
        """Set a user attribute (e.g. `pcn_id`) through the admin REST API; the next token carries it."""
        username = self.users[role][0]
        with self._admin() as admin:
            found = admin.get(f"/{REALM}/users", params={"username": username, "exact": "true"})
            found.raise_for_status()
            user = found.json()[0]
            full = admin.get(f"/{REALM}/users/{user['id']}")
            full.raise_for_status()
            representation = full.json()
            attributes = representation.get("attributes") or {}
            attributes[name] = [value]
            representation["attributes"] = attributes
            admin.put(f"/{REALM}/users/{user['id']}", json=representation).raise_for_status()

    def allow_redirect(self, uri: str) -> None:
        """Let the web client return to `uri` after sign-in. Keycloak matches redirect URIs exactly or by
        a trailing `*` prefix, never a wildcard port, so a web app on a test's free port is added here."""
        with self._admin() as admin:
            found = admin.get(f"/{REALM}/clients", params={"clientId": self.client_id})
            found.raise_for_status()
            client = found.json()[0]
            client["redirectUris"] = sorted(set(client.get("redirectUris") or []) | {uri})
            admin.put(f"/{REALM}/clients/{client['id']}", json=client).raise_for_status()

    def password_grant(self, role: str) -> str:
        """An access token for that role's user (direct grant, enabled on the test client only for this)."""
        username, password = self.users[role]
        answer = httpx.post(
            f"{self.issuer}/protocol/openid-connect/token",
            timeout=ADMIN_TIMEOUT_S,
            data={
                "grant_type": "password",
                "client_id": self.client_id,
                "client_secret": self.client_secret,
                "username": username,
                "password": password,
                "scope": "openid",
            },
        )
        answer.raise_for_status()
        return answer.json()["access_token"]


@dataclass
class LocalKeycloak:
    data_dir: Path
    port: int
    management_port: int = 0
    heap: str = "768m"
    admin_password: str = field(default_factory=lambda: "admin-" + os.urandom(12).hex())
    proc: subprocess.Popen | None = field(default=None, repr=False)
    started_in_s: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def issuer(self) -> str:
        return f"{self.base_url}/realms/{REALM}"

    def launch(self) -> None:
        java_home = find_java_home()
        dist = fetch_dist()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.management_port = self.management_port or procs.free_port()
        env = {
            **os.environ,
            "JAVA_HOME": str(java_home),
            "PATH": f"{java_home / 'bin'}:{os.environ.get('PATH', '')}",
            "KC_BOOTSTRAP_ADMIN_USERNAME": "admin",
            "KC_BOOTSTRAP_ADMIN_PASSWORD": self.admin_password,
            "JAVA_OPTS_KC_HEAP": f"-Xms256m -Xmx{self.heap}",
            # Keep this run's state out of the shared distribution directory.
            "JAVA_OPTS_APPEND": f"-Dquarkus.transaction-manager.object-store.directory={self.data_dir / 'tx'} "
            f"-Djava.io.tmpdir={self.data_dir}",
        }
        env.pop("KC_DB", None)
        self.proc = procs.start(
            [
                "bash",
                str(dist / "bin" / "kc.sh"),
                "start-dev",
                *BUILD_OPTIONS,
                f"--http-port={self.port}",
                "--http-host=127.0.0.1",
                f"--http-management-port={self.management_port}",
                "--hostname-strict=false",
                f"--db-url=jdbc:h2:file:{self.data_dir / 'keycloakdb'};NON_KEYWORDS=VALUE",
            ],
            log_path=self.data_dir / "keycloak.log",
            env=env,
        )

    def start(self, timeout_s: float = 600.0) -> OidcProvider:
        """Start, wait until ready, create the realm. The first start on a machine also builds (~70 s)."""
        started = time.monotonic()
        # One start at a time per machine: the first one rewrites the shared distribution's build.
        CACHE.mkdir(parents=True, exist_ok=True)
        with open(CACHE / f"keycloak-{KEYCLOAK_VERSION}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.launch()
            self._wait_ready(started + timeout_s)
        provider = self._provider()
        self._import_realm(provider)
        self.started_in_s = time.monotonic() - started
        return provider

    def _wait_ready(self, deadline: float) -> None:
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                tail = (self.data_dir / "keycloak.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"Keycloak exited with code {self.proc.returncode}:\n{tail}")
            try:
                answer = httpx.get(f"http://127.0.0.1:{self.management_port}/health/ready", timeout=3)
                if answer.status_code == 200:
                    return
                last = answer.text[:200]
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            time.sleep(1)
        raise TimeoutError(f"Keycloak not ready in time: {last}; see {self.data_dir / 'keycloak.log'}")

    def _provider(self) -> OidcProvider:
        realm = json.loads(REALM_FILE.read_text())
        client = next(c for c in realm["clients"] if c["clientId"] == CLIENT_ID)
        passwords = {u["username"]: u["credentials"][0]["value"] for u in realm["users"]}
        return OidcProvider(
            issuer=self.issuer,
            client_id=CLIENT_ID,
            client_secret=client["secret"],
            audience=AUDIENCE,
            users={role: (user, passwords[user]) for role, user in ROLE_USERS.items()},
            base_url=self.base_url,
            admin_password=self.admin_password,
        )

    def _import_realm(self, provider: OidcProvider) -> None:
        realm = json.loads(REALM_FILE.read_text())
        for attempt in range(3):
            try:
                with provider._admin() as admin:
                    answer = admin.post("", json=realm)
            except httpx.TimeoutException:
                if attempt == 2:
                    raise
                continue  # it may have been created meanwhile: the retry then answers 409
            # 409: already there (a retry after a timeout, or a restart on the same database).
            if answer.status_code not in (201, 409):
                raise RuntimeError(f"Keycloak refused the realm: {answer.status_code} {answer.text[:500]}")
            return

    def stop(self) -> None:
        procs.stop(self.proc, timeout_s=30)
