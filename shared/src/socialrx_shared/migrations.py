"""The body of every service's Alembic `env.py`: async migrations over asyncpg."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import MetaData, pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine


def run_env(metadata: MetaData) -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError(
            "alembic is run without sqlalchemy.url: run migrations with socialrx_shared.db.run_migrations"
        )
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    asyncio.run(_run_online(url, metadata))


# Two replicas starting together must not both migrate: a session-level advisory lock serialises them.
MIGRATION_LOCK_KEY = 0x50C1A1


def _do_run(connection: Connection, metadata: MetaData) -> None:
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})")
    context.configure(connection=connection, target_metadata=metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_online(url: str, metadata: MetaData) -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(_do_run, metadata)
        # The advisory lock began the transaction before Alembic did, so Alembic leaves the commit to us.
        await connection.commit()
    await engine.dispose()
