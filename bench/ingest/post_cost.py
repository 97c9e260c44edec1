"""Post cost against the order's length: one event on a 2-event order vs a 50-event one.

A write decides from the state stored beside its order, so its cost must not grow
with the order's stream (issue 12: long/short <= 1.2). Orders are built over HTTP
with events that may repeat in any status: a `created`, then `complaint_filed`
events (each with a new complaint id) up to the length. Then one more complaint is
posted to each order, short and long interleaved on one connection (no queueing,
and a busy neighbour slows both alike); the figure is the median of each.

Standalone: `python -m bench.ingest.post_cost` starts PostgreSQL, the broker and
intake (embedded, on free ports) and prints the figures as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final
from uuid import UUID, uuid4

import httpx

from bench.ingest.cluster import LOOPBACK, start_infrastructure
from bench.ingest.phases import customer_tokens
from services.stack import Stack
from services.stack.servers import free_port

SHORT: Final = 2
LONG: Final = 50


def _order_body() -> dict[str, Any]:
    return {
        "id": str(uuid4()),
        "category": "air_conditioner",
        "region": "shanghai-pudong",
        "urgency": "normal",
        "description": "the air conditioner blows warm air",
        "warranty": False,
        "channel": "app",
        "contact": {"name": "Wang", "phone": "+86 138 0000 0000", "address": "Pudong"},
    }


def _complaint_body() -> dict[str, Any]:
    return {
        "id": str(uuid4()),
        "type": "complaint_filed",
        "data": {
            "complaint_id": f"cmp-{uuid4()}",
            "category": "attitude",
            "text": "two hours late",
        },
    }


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _post_complaint(client: httpx.AsyncClient, order_id: UUID, token: str) -> int:
    response = await client.post(
        f"/v1/orders/{order_id}/events", json=_complaint_body(), headers=_auth(token)
    )
    response.raise_for_status()
    version: int = response.json()["orderversion"]
    return version


async def _build_order(client: httpx.AsyncClient, token: str, length: int) -> UUID:
    """An order of `length` events: created, then complaints."""
    response = await client.post("/v1/orders", json=_order_body(), headers=_auth(token))
    response.raise_for_status()
    order_id = UUID(response.json()["order_id"])
    for _ in range(length - 1):
        await _post_complaint(client, order_id, token)
    return order_id


async def _build(
    client: httpx.AsyncClient,
    tokens: Sequence[str],
    *,
    count: int,
    length: int,
    concurrency: int,
) -> list[tuple[UUID, str]]:
    gate = asyncio.Semaphore(concurrency)

    async def one(token: str) -> tuple[UUID, str]:
        async with gate:
            return await _build_order(client, token, length), token

    return await asyncio.gather(*(one(tokens[i % len(tokens)]) for i in range(count)))


async def _timed(
    client: httpx.AsyncClient, order: tuple[UUID, str], length: int
) -> float:
    order_id, token = order
    began = time.perf_counter()
    version = await _post_complaint(client, order_id, token)
    elapsed = (time.perf_counter() - began) * 1000
    assert version == length + 1, f"order {order_id} is at {version}"
    return elapsed


async def measure_post_cost(
    base_url: str,
    tokens: Sequence[str],
    *,
    orders: int = 60,
    short: int = SHORT,
    long: int = LONG,
    concurrency: int = 8,
) -> dict[str, float]:
    """Median time to post one event on an order of `short` vs `long` events.

    `tokens` are customers' bearer tokens for the intake at `base_url` (each order
    belongs to one of them). Returns `post_cost_short_ms`, `post_cost_long_ms` and
    their ratio `post_cost_long_vs_short`.
    """
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=base_url, timeout=30.0, limits=limits
    ) as client:
        shorts = await _build(
            client, tokens, count=orders, length=short, concurrency=concurrency
        )
        longs = await _build(
            client, tokens, count=orders, length=long, concurrency=concurrency
        )
        short_ms: list[float] = []
        long_ms: list[float] = []
        for short_order, long_order in zip(shorts, longs, strict=True):
            short_ms.append(await _timed(client, short_order, short))
            long_ms.append(await _timed(client, long_order, long))
    short_median = statistics.median(short_ms)
    long_median = statistics.median(long_ms)
    return {
        "post_cost_short_ms": round(short_median, 3),
        "post_cost_long_ms": round(long_median, 3),
        "post_cost_long_vs_short": round(long_median / short_median, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--orders", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3, help="measurements to run")
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="servicetrail-post-cost-"))
    stack = Stack.from_environment(home)
    try:
        start_infrastructure(stack)
        intake = stack.start_service("intake", free_port(LOOPBACK))
        stack.wait_until_healthy()
        tokens = customer_tokens(home, 16)
        for _ in range(args.rounds):
            figures = asyncio.run(
                measure_post_cost(intake.url, tokens, orders=args.orders)
            )
            print(json.dumps(figures), flush=True)
    finally:
        stack.stop()
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
