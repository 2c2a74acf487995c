"""`socialrx`: the operators' command line (in every service image, and in the workspace for local use).

socialrx token link_worker --pcn-id U12345     mint a bearer token (local use)
socialrx migration referral-intake -m "..."    autogenerate an Alembic revision (development: needs the
                                               harness, socialrx-harness, which the images do not hold)
socialrx dlq list | show TOPIC | redrive TOPIC  dead letters (KAFKA_BOOTSTRAP_SERVERS)
"""

from __future__ import annotations

import importlib
import os
import tempfile
from pathlib import Path
from typing import NoReturn

import typer

from socialrx_shared.auth import ROLES, SCOPE_CLAIM, mint_token
from socialrx_shared.settings import DEV_JWT_SECRET

# The services with a database of their own (the harness's `postgres.SERVICES`, which a test holds equal).
SERVICES = ("referral-intake", "directory", "outcomes", "funding-ledger")

app = typer.Typer(help="socialrx: operators' tools", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead letters: list, inspect, re-drive", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
BOOTSTRAP = typer.Option(None, envvar="KAFKA_BOOTSTRAP_SERVERS", help="Kafka bootstrap servers")


def _bootstrap(value: str | None) -> str:
    return value or "127.0.0.1:9092"


@dlq_app.command("list")
def dlq_list(
    bootstrap: str = BOOTSTRAP, topic: list[str] = typer.Option(None, help="a DLQ topic (default: all)")
) -> None:
    """How many dead letters each DLQ topic holds, by the consumer that failed them."""
    from rich.console import Console

    from . import dlq

    dlq.print_list(dlq.run(dlq.list_letters(_bootstrap(bootstrap), topic or dlq.default_topics())), Console())


@dlq_app.command("show")
def dlq_show(topic: str, bootstrap: str = BOOTSTRAP, limit: int = typer.Option(20, help="letters to show")) -> None:
    """The letters on one DLQ topic: where they failed, when, and why."""
    from rich.console import Console

    from . import dlq

    async def read() -> list:
        consumer, letters = await dlq.read_letters(_bootstrap(bootstrap), topic)
        await consumer.stop()
        return letters

    dlq.print_letters(dlq.run(read()), Console(), limit)


@dlq_app.command("redrive")
def dlq_redrive(
    topic: str,
    bootstrap: str = BOOTSTRAP,
    consumer: str = typer.Option(None, help="only letters failed by this service"),
    dry_run: bool = typer.Option(False, help="count, publish nothing, commit nothing"),
) -> None:
    """Publish the letters back to their topics (once each; resumable)."""

    from . import dlq

    sent = dlq.run(dlq.redrive(_bootstrap(bootstrap), topic, only_consumer=consumer, dry_run=dry_run))
    typer.echo(f"{'would re-drive' if dry_run else 're-drove'} {sent} letter(s) from {topic}")


@app.command()
def token(
    role: str = typer.Argument(..., help=f"one of {', '.join(ROLES)}"),
    sub: str = typer.Option(None, help="subject (user id); defaults to '<role>-local'"),
    pcn_id: str = typer.Option(None, help="PCN ODS code (link_worker, finance: required)"),
    organisation_id: str = typer.Option(None, help="organisation id (charity: required)"),
    practice_id: str = typer.Option(None, help="GP practice ODS code (link_worker)"),
    hours: int = typer.Option(8, help="lifetime in hours (at most SOCIALRX_JWT_MAX_LIFETIME_S, 12 h by default)"),
) -> None:
    """Mint an HS256 token with SOCIALRX_JWT_SECRET (the development secret when unset, local use only)."""
    if role not in ROLES:
        _refuse(f"role must be one of {', '.join(ROLES)}")
    # A token every endpoint would reject is refused here, at once, with what to add.
    needed = SCOPE_CLAIM.get(role)
    given = {"pcn_id": pcn_id, "organisation_id": organisation_id}
    if needed and not (given[needed] or "").strip():
        _refuse(
            f"a {role} token needs --{needed.replace('_', '-')} (its scope: "
            f"{'the PCN ODS code, e.g. U12345' if needed == 'pcn_id' else 'the id from POST /organizations'})"
        )
    for name, value in {**given, "practice_id": practice_id}.items():
        if value is not None and not value.strip():
            _refuse(f"--{name.replace('_', '-')} may not be empty")
    max_lifetime_s = int(os.environ.get("SOCIALRX_JWT_MAX_LIFETIME_S", 12 * 3600))
    if hours <= 0 or hours * 3600 > max_lifetime_s:
        _refuse(f"--hours must be between 1 and {max_lifetime_s // 3600}: the services refuse longer-lived tokens")
    secret = os.environ.get("SOCIALRX_JWT_SECRET", DEV_JWT_SECRET)
    typer.echo(
        mint_token(
            secret,
            sub=sub or f"{role}-local",
            role=role,
            pcn_id=pcn_id,
            organisation_id=organisation_id,
            practice_id=practice_id,
            ttl_s=hours * 3600,
            issuer=os.environ.get("SOCIALRX_JWT_ISSUER") or None,
            audience=os.environ.get("SOCIALRX_JWT_AUDIENCE") or None,
        )
    )


def _refuse(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


@app.command()
def migration(
    service: str = typer.Argument(..., help=f"one of {', '.join(SERVICES)}"),
    message: str = typer.Option(..., "-m", help="what the revision changes"),
) -> None:
    """Autogenerate an Alembic revision against a throwaway local PostgreSQL."""
    from alembic import command
    from alembic.config import Config

    # Development only: the throwaway PostgreSQL is the harness's (not in the service images).
    from socialrx_harness import procs
    from socialrx_harness.postgres import LocalPostgres

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
        server.discard()


if __name__ == "__main__":
    app()
