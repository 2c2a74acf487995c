"""README's "Trying it" runs as pasted: its shell block, run by bash against the test platform.

Only what differs between a developer's `make up` and the harness is substituted: the services'
ports and the tokens file (written here as `make up` writes it). Everything else is the README's
text, so a walkthrough that stops working fails this test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from support import PCN, PRACTICE

from socialrx_shared.auth import mint_token as mint

ROOT = Path(__file__).resolve().parents[1]
PORTS = {"8001": "referral-intake", "8002": "directory", "8003": "outcomes", "8004": "funding-ledger"}


def walkthrough() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Trying it") :]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)


def test_the_walkthrough_is_a_block_to_paste_not_to_edit() -> None:
    script = walkthrough()
    assert "source .run/tokens.env" in script and "uuidgen" not in script
    # No id for the reader to type in: every one is captured into a variable.
    for placeholder in ('"ORG"', '"SVC"', "/REF/", "ADMIN=...", "Bearer ORG"):
        assert placeholder not in script, placeholder


def test_the_readme_walkthrough_runs_as_pasted(platform, jwt_secret, tmp_path) -> None:
    tokens = tmp_path / "tokens.env"
    tokens.write_text(
        f"export ADMIN={mint(jwt_secret, sub='admin-local', role='admin')} "
        f"LW={mint(jwt_secret, sub='link-worker-local', role='link_worker', pcn_id=PCN, practice_id=PRACTICE)} "
        f"FIN={mint(jwt_secret, sub='finance-local', role='finance', pcn_id=PCN)}\n"
    )
    script = walkthrough().replace("source .run/tokens.env", f"source {tokens}")
    for port, service in PORTS.items():
        script = script.replace(f"localhost:{port}", platform.url(service).removeprefix("http://"))
    env = {**os.environ, "SOCIALRX_JWT_SECRET": jwt_secret}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    referral = json.loads(done.stdout.strip().splitlines()[-1])
    assert referral["status"] in ("accepted", "outcome_recorded"), referral
    assert [entry["status"] for entry in referral["timeline"]][:2] == ["created", "accepted"]
