"""The floor: a bare Starlette app doing one INSERT per request into the same kind of database.

It is what a POS webhook costs with nothing but HTTP, one durable write and a 200: no signature
check, no parsing, no validation. orderstream is measured against it (bench/run.py). Same server
(uvicorn, same options as `orderstream serve`), same driver, same durability (SQLite: WAL,
synchronous=FULL, one writer at a time; PostgreSQL: a committed transaction per request).

    python bench/floor_app.py --database-url sqlite:///tmp/floor.db --port 8100
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

metadata = sa.MetaData()
floor_orders = sa.Table(
    "floor_orders",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("partner", sa.String(64), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
)


def make_engine(url: str) -> sa.Engine:
    """An engine with the durability settings orderstream uses."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 10}, pool_size=20)

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return sa.create_engine(url, pool_size=20, max_overflow=20)


def create_app(url: str) -> Starlette:
    """The floor app: POST /pos/{partner_slug}/webhook stores the body and answers 200."""
    engine = make_engine(url)
    metadata.create_all(engine)
    insert = floor_orders.insert()
    # SQLite has one writer: queueing threads on a lock beats its busy handler (orderstream does the same)
    lock = threading.Lock() if engine.dialect.name == "sqlite" else None

    def store(partner: str, body: str) -> int:
        if lock is not None:
            with lock, engine.begin() as conn:
                return int(
                    conn.execute(insert.returning(floor_orders.c.id), {"partner": partner, "body": body}).scalar_one()
                )
        with engine.begin() as conn:
            return int(
                conn.execute(insert.returning(floor_orders.c.id), {"partner": partner, "body": body}).scalar_one()
            )

    async def webhook(request: Request) -> JSONResponse:
        body = await request.body()
        row_id = await run_in_threadpool(store, request.path_params["partner_slug"], body.decode("utf-8"))
        return JSONResponse({"accepted": True, "id": row_id})

    async def readyz(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "ready"})

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        engine.dispose()

    return Starlette(
        routes=[Route("/pos/{partner_slug}/webhook", webhook, methods=["POST"]), Route("/readyz", readyz)],
        lifespan=lifespan,
    )


def main() -> None:
    """Serve the floor app."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args()
    uvicorn.run(create_app(args.database_url), host=args.host, port=args.port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
