"""The baseline: the least a FastAPI service can do per order, on the same PostgreSQL.

One endpoint, `POST /v1/orders`: read the JSON body, then in one transaction insert
one order row and one outbox row with raw asyncpg from a pool. No auth, no
validation, no SQLAlchemy, no domain model: what is left is uvicorn, FastAPI
routing, the JSON round trip and two INSERTs with a commit (fsync as configured on
the server). Tables live in their own schema, `bench_baseline`.

`python -m bench.ingest.baseline --port P --database-url URL` serves it like the
services are served (uvicorn, one worker, uvloop + httptools, no access log).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any, Final

import asyncpg
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

SCHEMA: Final = "bench_baseline"
# The services' database_pool_size. asyncpg's own pool, as a bare service has it:
# a released connection goes to whichever task asks first, not to the longest
# waiter, which widens this baseline's latency tail (p99 about 3x its p50 at 64
# connections); the order writer queues its callers in arrival order.
POOL_SIZE: Final = 10

_DDL: Final = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {SCHEMA}.order_row (
    order_id uuid PRIMARY KEY,
    event_id uuid NOT NULL UNIQUE,
    customer text NOT NULL,
    body jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.outbox (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic text NOT NULL,
    key text NOT NULL,
    value bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX IF NOT EXISTS ix_outbox_unpublished
    ON {SCHEMA}.outbox (id) WHERE published_at IS NULL;
"""
_INSERT_ORDER: Final = (
    f"INSERT INTO {SCHEMA}.order_row (order_id, event_id, customer, body) "
    "VALUES ($1, $2, $3, $4::jsonb)"
)
_INSERT_OUTBOX: Final = (
    f"INSERT INTO {SCHEMA}.outbox (topic, key, value) VALUES ($1, $2, $3)"
)


def create_app(database_url: str) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        pool = await asyncpg.create_pool(
            database_url, min_size=POOL_SIZE, max_size=POOL_SIZE
        )
        try:
            async with pool.acquire() as conn:
                await conn.execute(_DDL)
            yield {"pool": pool}
        finally:
            await pool.close()

    app = FastAPI(title="ingest baseline", lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/orders", status_code=201)
    async def create_order(request: Request) -> JSONResponse:
        raw = await request.body()
        body = json.loads(raw)
        order_id = uuid.uuid4()
        event_id = uuid.UUID(body["id"]) if "id" in body else uuid.uuid4()
        envelope = {"id": str(event_id), "subject": str(order_id), "data": body}
        value = json.dumps(envelope, ensure_ascii=False).encode()
        pool = request.state.pool
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                _INSERT_ORDER, order_id, event_id, "baseline", raw.decode()
            )
            await conn.execute(_INSERT_OUTBOX, "orders", str(order_id), value)
        return JSONResponse(
            {"order_id": str(order_id), "event_id": str(event_id)}, status_code=201
        )

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True)
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.database_url),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=30,
    )


if __name__ == "__main__":
    main()
