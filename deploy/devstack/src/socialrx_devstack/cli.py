"""`socialrx`: the command line for local use.

    socialrx token link_worker --pcn-id U12345     mint a bearer token (local use)
    socialrx migration referral-intake -m "..."    autogenerate an Alembic revision
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from pathlib import Path

import typer

from socialrx_shared.auth import ROLES, mint_token
from socialrx_shared.settings import DEV_JWT_SECRET

from .postgres import SERVICES

app = typer.Typer(help="socialrx: local tools", no_args_is_help=True)


@app.command()
def token(
    role: str = typer.Argument(..., help=f"one of {', '.join(ROLES)}"),
    sub: str = typer.Option(None, help="subject (user id); defaults to '<role>-local'"),
    pcn_id: str = typer.Option(None, help="PCN ODS code (link_worker, finance)"),
    organisation_id: str = typer.Option(None, help="organisation id (charity)"),
    practice_id: str = typer.Option(None, help="GP practice ODS code (link_worker)"),
    hours: int = typer.Option(8, help="lifetime in hours"),
) -> None:
    """Mint an HS256 token with SOCIALRX_JWT_SECRET (the local default when unset)."""
    if role not in ROLES:
        raise typer.BadParameter(f"role must be one of {', '.join(ROLES)}")
    secret = os.environ.get("SOCIALRX_JWT_SECRET", DEV_JWT_SECRET)
    typer.echo(mint_token(secret, sub=sub or f"{role}-local", role=role, pcn_id=pcn_id,
                          organisation_id=organisation_id, practice_id=practice_id, ttl_s=hours * 3600))


@app.command()
def migration(service: str = typer.Argument(..., help=f"one of {', '.join(SERVICES)}"),
              message: str = typer.Option(..., "-m", help="what the revision changes")) -> None:
    """Autogenerate an Alembic revision against a throwaway local PostgreSQL."""
    from alembic import command
    from alembic.config import Config

    from . import procs
    from .postgres import LocalPostgres

    if service not in SERVICES:
        raise typer.BadParameter(f"service must be one of {', '.join(SERVICES)}")
    package = importlib.import_module("socialrx_" + service.replace("-", "_"))
    migrations = Path(package.__file__).parent / "migrations"
    data_dir = Path(tempfile.mkdtemp(prefix="socialrx-migration-"))
    server = LocalPostgres(data_dir, procs.free_port(), durable=False)
    server.start()
    try:
        server.create_database("scratch")
        config = Config()
        config.set_main_option("script_location", str(migrations))
        config.set_main_option("sqlalchemy.url", server.admin_url("scratch"))
        command.upgrade(config, "head")
        command.revision(config, message=message, autogenerate=True)
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    app()
