"""The bench's yardstick for one HTTP request: a minimal FastAPI endpoint doing one INSERT through the
same stack as the services (uvicorn, FastAPI + pydantic, SQLAlchemy's async engine over asyncpg, the
shared `make_engine`), with nothing else: no auth, no edge checks, no outbox, no events.

`POST /items {"name": "..."}` inserts one row and answers 201 with its id. Run as its own process:
`python -m socialrx_bench.bench_minimal DATABASE_URL PORT`. The bench drives it with the same
httpx client and worker count as `POST /referrals`, so the ratio of the two says what the platform's
own work per request costs beyond the framework's floor.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from pydantic import BaseModel, Field
from sqlalchemy import Column, MetaData, String, Table, Uuid, insert

from socialrx_shared.db import make_engine, make_sessionmaker

metadata = MetaData()
items = Table("bench_minimal_items", metadata, Column("id", Uuid, primary_key=True), Column("name", String(200)))


class NewItem(BaseModel):
    name: str = Field(min_length=1, max_length=200)


def build(database_url: str) -> FastAPI:
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        yield
        await engine.dispose()

    app = FastAPI(lifespan=lifespan)

    @app.post("/items", status_code=201)
    async def create(body: NewItem) -> dict[str, str]:
        item_id = uuid.uuid4()
        async with sessions() as session, session.begin():
            await session.execute(insert(items).values(id=item_id, name=body.name))
        return {"id": str(item_id)}

    return app


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    url, port = (argv if argv is not None else sys.argv[1:])[:2]
    uvicorn.run(build(url), host="127.0.0.1", port=int(port), log_config=None, access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
