"""`socialrx token` refuses, at once, tokens every endpoint would reject; `make up`'s tokens file."""

from __future__ import annotations

import stat
import subprocess

import pytest
from typer.testing import CliRunner

from socialrx_harness.up import write_tokens_file
from socialrx_ops.cli import app
from socialrx_shared.auth import decode_token
from socialrx_shared.settings import DEV_JWT_SECRET


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["finance"], "a finance token needs --pcn-id"),
        (["link_worker", "--practice-id", "B82005"], "a link_worker token needs --pcn-id"),
        (["charity"], "a charity token needs --organisation-id"),
        (["charity", "--organisation-id", "  "], "a charity token needs --organisation-id"),
        (["admin", "--pcn-id", ""], "--pcn-id may not be empty"),
        (["finance", "--pcn-id", "U12345", "--hours", "13"], "--hours must be between 1 and 12"),
        (["superuser"], "role must be one of"),
    ],
)
def test_token_refuses_what_every_endpoint_would_reject(monkeypatch, args: list[str], message: str) -> None:
    monkeypatch.delenv("SOCIALRX_JWT_SECRET", raising=False)
    result = CliRunner().invoke(app, ["token", *args])
    assert result.exit_code != 0
    assert message in result.output
    assert "eyJ" not in result.output  # no token printed


def test_token_mints_one_the_services_accept(monkeypatch) -> None:
    monkeypatch.delenv("SOCIALRX_JWT_SECRET", raising=False)
    result = CliRunner().invoke(app, ["token", "finance", "--pcn-id", "U12345"])
    assert result.exit_code == 0, result.output
    assert decode_token(result.output.strip(), DEV_JWT_SECRET).pcn_id == "U12345"


def test_tokens_file_is_private_and_sourceable(tmp_path) -> None:
    path = tmp_path / ".run" / "tokens.env"
    path.parent.mkdir()
    path.write_text("old")
    path.chmod(0o644)  # an older, too-open file is tightened
    cli = tmp_path / "fake-socialrx"
    cli.write_text('#!/bin/sh\necho "charity-token-for-$4"\n')
    cli.chmod(0o755)
    write_tokens_file(path, {"ADMIN": "a.b.c", "LW": "d.e.f", "FIN": "g.h.i"}, cli)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    out = subprocess.run(
        ["bash", "-c", f'source {path} && echo "$ADMIN $LW $FIN $(charity_token org-7)"'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == ["a.b.c", "d.e.f", "g.h.i", "charity-token-for-org-7"]


def test_the_operators_cli_knows_every_service_the_harness_runs() -> None:
    """`socialrx migration` lists the services itself (the images hold no harness): the same four."""
    from socialrx_harness.postgres import SERVICES
    from socialrx_ops import cli

    assert cli.SERVICES == SERVICES
