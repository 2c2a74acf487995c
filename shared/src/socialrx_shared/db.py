"""Database wiring: one async SQLAlchemy engine per service, and the reliability tables.

Every service owns its database. Beside its own tables each has an `outbox` (events it will
publish, written in the same transaction as the change that caused them) and an `inbox` (ids of the
events it has handled, written in the same transaction as their effect).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    LargeBinary,
    MetaData,
    String,
    Table,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_metadata() -> MetaData:
    return MetaData(naming_convention=NAMING)


def reliability_tables(metadata: MetaData) -> tuple[Table, Table]:
    outbox = Table(
        "outbox",
        metadata,
        Column("id", BigInteger, primary_key=True, autoincrement=True),
        Column("event_id", Uuid, nullable=False, unique=True),
        Column("topic", String(200), nullable=False),
        Column("key", String(200), nullable=False),
        Column("value", LargeBinary, nullable=False),
        Column("headers", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("sent_at", DateTime(timezone=True)),
    )
    # The relay only ever scans unsent rows; the partial index keeps that scan small forever.
    Index("ix_outbox_unsent", outbox.c.id, postgresql_where=outbox.c.sent_at.is_(None))
    inbox = Table(
        "inbox",
        metadata,
        Column("event_id", Uuid, primary_key=True),
        Column("topic", String(200), nullable=False),
        Column("handled_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
    return outbox, inbox


def make_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    # No pool_pre_ping: with asyncpg it costs three round trips (BEGIN, a ping, ROLLBACK) on every
    # checkout, i.e. on every transaction: the largest single item of a lifecycle's CPU in the bench's
    # profile. A connection that died with its server (a restart) fails on first use instead; that error
    # is a disconnect, so SQLAlchemy invalidates the whole pool at once, consumers retry it as a
    # transient fault and an HTTP request answers 503 with Retry-After (route_errors), never a 500.
    return create_async_engine(url, pool_size=pool_size, max_overflow=5)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def run_migrations(migrations_dir: Path, url: str) -> None:
    """Upgrade the service's database to the newest Alembic revision (called at start-up)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    # Alembic's env.py runs its own event loop, so it gets a thread of its own.
    await asyncio.to_thread(command.upgrade, config, "head")
