"""`make up` brings the four services and the web app to ready, refuses a second run, and stops without a trace."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time

import httpx

from socialrx_harness import procs


def _wait_for_line(proc: subprocess.Popen, text: str, timeout_s: float, seen: list[str]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        if text in line:
            return
    raise AssertionError(f"`make up` never printed {text!r}; it printed:\n{''.join(seen)}")


def _the_tokens_file_works(path, ports: list[int], printed: str) -> None:
    """`source .run/tokens.env` gives $ADMIN, $LW, $FIN and `charity_token ORG`, all accepted."""
    assert f"source {path}" in printed
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    script = f'source {path} && printf "%s\\n" "$ADMIN" "$LW" "$FIN" "$(charity_token org-1)"'
    admin, lw, fin, charity = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()
    referral_intake, directory, _outcomes, funding_ledger = ports[:4]  # the fifth is the web app
    for port, path_, token in (
        (funding_ledger, "/payments", fin),
        (referral_intake, "/referrals", lw),
        (directory, "/inbox", charity),
        (referral_intake, "/audit/contact-access", admin),
    ):
        answer = httpx.get(f"http://127.0.0.1:{port}{path_}", headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert answer.status_code == 200, (path_, answer.text)


def test_make_up_starts_everything_and_stops_cleanly(kafka, tmp_path) -> None:
    ports = [procs.free_port() for _ in range(5)]  # the four services, then the web app
    env = {
        **{k: v for k, v in os.environ.items() if not k.endswith("_DATABASE_URL")},
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,  # the session's broker: saves a JVM start
        "SOCIALRX_STATE_DIR": str(tmp_path / "state"),
        "SOCIALRX_HTTP_PORTS": ",".join(map(str, ports)),
        "SOCIALRX_PG_PORT": str(procs.free_port()),
    }
    up = subprocess.Popen(
        [sys.executable, "-u", "-m", "socialrx_harness.up"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    seen: list[str] = []
    try:
        _wait_for_line(up, "socialrx is running", 180, seen)
        for port in ports:
            assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
        _wait_for_line(up, "Press Ctrl-C", 30, seen)
        _the_tokens_file_works(tmp_path / "state" / "tokens.env", ports, "".join(seen))
        second = subprocess.run(
            [sys.executable, "-m", "socialrx_harness.up"], env=env, capture_output=True, text=True, timeout=60
        )
        assert second.returncode == 1
        assert "already running" in second.stdout
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=90) == 0
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            # Services started in sessions of their own would outlive the group, and go on consuming
            # the session's broker (dead-lettering other tests' poison): end them too.
            subprocess.run(["pkill", "-KILL", "-f", str(tmp_path)], check=False)
    for port in [*ports, int(env["SOCIALRX_PG_PORT"])]:
        assert not procs.port_open(port), f"port {port} still open after make up stopped"
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert leftovers == [], f"processes left behind: {leftovers}"
