"""PostgreSQL from Debian's packages, run as a local process in a directory of ours.

`make up` and the test harness both start one here when no `*_DATABASE_URL` is given. As root
(CI, this machine) the server runs as the `postgres` user, which PostgreSQL insists on.
"""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from . import procs

SERVICES = ("referral-intake", "directory", "outcomes", "funding-ledger")


def pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    if found:
        return found[-1]
    which = shutil.which(name)
    if which:
        return which
    raise RuntimeError(f"PostgreSQL's {name} not found: apt-get install -y postgresql")


def database_name(service: str) -> str:
    return "socialrx_" + service.replace("-", "_")


def _as_postgres_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


@dataclass
class LocalPostgres:
    data_dir: Path
    port: int
    durable: bool = True  # tests turn fsync off: faster, and they never outlive a power cut
    # `make up` keeps its database between runs; everything else (tests, bench, chaos) throws it away.
    keep_data: bool = False
    proc: subprocess.Popen | None = field(default=None, repr=False)
    moved_from: Path | None = field(default=None, repr=False)

    def admin_url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def url(self, service: str) -> str:
        return self.admin_url(database_name(service))

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(path, user.pw_uid, user.pw_gid)

    def _usable_by_postgres(self) -> Path:
        """As root, the server runs as `postgres`, which must reach the directory: a path under a
        private folder (/root, pytest's 0700 temp dirs) is swapped for one under postgres's home."""
        if os.geteuid() != 0:
            return self.data_dir
        self.data_dir.mkdir(parents=True, exist_ok=True)
        reachable = (
            subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(self.data_dir)]).returncode == 0
        )
        if reachable:
            return self.data_dir
        digest = hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:12]
        home = Path(pwd.getpwnam("postgres").pw_dir)
        self.moved_from = self.data_dir
        return home / "socialrx" / digest

    def start(self, timeout_s: float = 60.0) -> None:
        self.data_dir = self._usable_by_postgres()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._chown(self.data_dir)
        pgdata = self.data_dir / "pgdata"
        if not (pgdata / "PG_VERSION").exists():
            subprocess.run(
                _as_postgres_user(
                    [
                        pg_bin("initdb"),
                        "-D",
                        str(pgdata),
                        "-U",
                        "postgres",
                        "--auth=trust",
                        "--encoding=UTF8",
                        "--locale=C.UTF-8",
                    ]
                ),
                check=True,
                capture_output=True,
            )
        options = [
            "-c",
            "listen_addresses=127.0.0.1",
            "-p",
            str(self.port),
            "-k",
            str(self.data_dir),
            "-c",
            "max_connections=300",
        ]
        if not self.durable:
            options += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        log_path = self.data_dir / "postgres.log"
        log_path.touch()
        self._chown(log_path)
        self.proc = procs.start(_as_postgres_user([pg_bin("postgres"), "-D", str(pgdata), *options]), log_path=log_path)
        procs.wait_for_port(self.port, timeout_s, self.proc, what="PostgreSQL")
        self._wait_accepting(timeout_s)

    def _wait_accepting(self, timeout_s: float) -> None:
        import time

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.psql("SELECT 1", check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise TimeoutError("PostgreSQL did not accept connections")

    def psql(self, sql: str, database: str = "postgres", check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                pg_bin("psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-qAt",
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            check=check,
        )

    def create_database(self, name: str) -> None:
        exists = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'").stdout.strip()
        if not exists:
            self.psql(f'CREATE DATABASE "{name}"')

    def create_service_databases(self) -> dict[str, str]:
        for service in SERVICES:
            self.create_database(database_name(service))
        return {service: self.url(service) for service in SERVICES}

    def stop(self) -> None:
        # SIGINT is PostgreSQL's "fast" shutdown: disconnect clients, checkpoint, exit.
        import signal

        procs.stop(self.proc, timeout_s=30, sig=signal.SIGINT)

    def discard(self) -> None:
        """Stop for good and remove the data (not `make up`'s, which is kept): the folder given and
        the one swapped in for it under postgres's home (left behind, a developer's disk filled with
        a copy per test run: 34 GB seen)."""
        self.stop()
        if not self.keep_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            if self.moved_from is not None:
                shutil.rmtree(self.moved_from, ignore_errors=True)

    def kill(self) -> None:
        procs.kill(self.proc)
