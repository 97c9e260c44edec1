"""Ledger test helpers: publish order events, wait for signed heads, read the tables.

Also the auditor's (and the forger's) own RFC 9162 2.1.1 Merkle tree hash and the
per-order chain hash, written from the specifications rather than imported from
`services.ledger.domain`, so tests compare the service against an outside opinion.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, Final
from uuid import UUID, uuid4

import httpx
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.ledger.app import create_app
from services.ledger.settings import LedgerSettings
from shared.domain.actors import Role
from shared.domain.lifecycle import OrderEvent
from shared.events.topics import ORDER_EVENTS
from shared.settings import CommonSettings
from tests.api.conftest import bearer
from tests.fixtures.stack import service_settings
from tests.integration.kafka_io import publish, record_value
from tests.integration.store_io import store_events

LEDGER_TABLES: Final = ("ledger_entry", "merkle_node", "tree_head")
LEDGER_ROLE: Final = "servicetrail_ledger"
SEED_DIGEST: Final = hashlib.sha256(b"x").digest()
GENESIS: Final = bytes(32)


def order_topic(settings: CommonSettings) -> str:
    """This test's order-events topic."""
    return settings.kafka_topic_prefix + ORDER_EVENTS


def ledger_app(settings: CommonSettings, **overrides: object) -> FastAPI:
    """The ledger service on this test's database and topics."""
    return create_app(service_settings(settings, LedgerSettings, **overrides))


def auditor_headers(settings: CommonSettings) -> dict[str, str]:
    return bearer(settings)(Role.AUDITOR, "auditor-1")


async def publish_events(
    settings: CommonSettings, events: Sequence[OrderEvent]
) -> list[bytes]:
    """Store `events` as the relay would have, then publish them in order, keyed by
    order id; returns the exact record values."""
    await store_events(settings, events)
    values = [record_value(e) for e in events]
    await publish(
        settings.kafka_bootstrap_servers,
        order_topic(settings),
        [(str(e.order_id), v) for e, v in zip(events, values, strict=True)],
    )
    return values


async def wait_for_size(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    size: int,
    *,
    timeout: float = 20.0,
) -> dict[str, Any]:
    """The checkpoint once the latest signed tree head covers `size` entries."""
    last: Any = None
    try:
        async with asyncio.timeout(timeout):
            while True:
                response = await client.get("/v1/ledger/checkpoint", headers=headers)
                last = response.json()
                if response.status_code == 200 and last["tree_size"] == size:
                    checkpoint: dict[str, Any] = last
                    return checkpoint
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"no signed tree head of size {size}: {last}") from None


async def append_events(
    settings: CommonSettings,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    events: Sequence[OrderEvent],
    *,
    size_after: int,
) -> tuple[list[bytes], dict[str, Any]]:
    """Publish `events` and wait until the ledger has signed `size_after` entries."""
    values = await publish_events(settings, events)
    return values, await wait_for_size(client, headers, size_after)


async def ledger_verdict(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> dict[str, Any]:
    """The `result` line of `GET /v1/ledger/verify` (NDJSON, result last)."""
    response = await client.get("/v1/ledger/verify", headers=headers)
    assert response.status_code == 200, response.text
    lines = [json.loads(line) for line in response.text.splitlines() if line.strip()]
    assert "result" in lines[-1], lines
    result: dict[str, Any] = lines[-1]["result"]
    return result


async def order_verdict(
    client: httpx.AsyncClient, headers: dict[str, str], order_id: UUID
) -> dict[str, Any]:
    response = await client.get(f"/v1/orders/{order_id}/verify", headers=headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def export_lines(
    client: httpx.AsyncClient, headers: dict[str, str], **params: int
) -> list[str]:
    """`GET /v1/ledger/export` as lines (`from`/`to` via `start`/`end`)."""
    query = {"from" if k == "start" else "to": v for k, v in params.items()}
    response = await client.get("/v1/ledger/export", params=query, headers=headers)
    assert response.status_code == 200, response.text
    return response.text.splitlines()


@dataclass(frozen=True, slots=True)
class Row:
    """One `ledger.ledger_entry` row (`appended_at` aside)."""

    position: int
    event_id: UUID
    order_id: UUID
    order_version: int
    event_type: str
    event_time: datetime
    recorded_at: datetime
    canonical: bytes
    chain_hash: bytes
    leaf_hash: bytes


ROW_COLUMNS: Final = ", ".join(Row.__dataclass_fields__)


async def ledger_rows(engine: AsyncEngine) -> list[Row]:
    """Every ledger entry in position order, read as the superuser."""
    async with engine.connect() as conn:
        result = await conn.execute(
            text(f"SELECT {ROW_COLUMNS} FROM ledger.ledger_entry ORDER BY position")
        )
        return [Row(**dict(r._mapping)) for r in result]


async def seed_one_row_each(engine: AsyncEngine) -> None:
    """One row in each ledger table (INSERT is allowed: the tables grow)."""
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO ledger.ledger_entry (position, event_id, order_id, "
                "order_version, event_type, event_time, recorded_at, canonical, "
                "chain_hash, leaf_hash) VALUES (0, :e, :o, 1, "
                "'servicetrail.order.created', :t, :t, '\\x7b7d'::bytea, :h, :h)"
            ),
            {"e": uuid4(), "o": uuid4(), "t": now, "h": SEED_DIGEST},
        )
        await conn.execute(
            text("INSERT INTO ledger.merkle_node VALUES (1, 0, :h)"), {"h": SEED_DIGEST}
        )
        await conn.execute(
            text(
                "INSERT INTO ledger.tree_head VALUES "
                "(1, :h, '2026-03-02T09:00:00Z', 'k', :h)"
            ),
            {"h": SEED_DIGEST},
        )


async def table_snapshot(engine: AsyncEngine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the three ledger tables, all columns, in key order."""
    order_by = {
        "ledger_entry": "position",
        "merkle_node": "level, index",
        "tree_head": "tree_size",
    }
    snapshot: dict[str, list[tuple[Any, ...]]] = {}
    async with engine.connect() as conn:
        for table, key in order_by.items():
            result = await conn.execute(
                text(f"SELECT * FROM ledger.{table} ORDER BY {key}")
            )
            snapshot[table] = [tuple(r) for r in result]
    return snapshot


@asynccontextmanager
async def triggers_disabled(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A superuser transaction in which the append-only triggers are off.

    `ALTER TABLE` is transactional: the triggers are re-enabled before the commit,
    so nobody else ever sees the tables unguarded, and a failure rolls back both.
    """
    async with engine.begin() as conn:
        for table in LEDGER_TABLES:
            await conn.execute(text(f"ALTER TABLE ledger.{table} DISABLE TRIGGER USER"))
        yield conn
        for table in LEDGER_TABLES:
            await conn.execute(text(f"ALTER TABLE ledger.{table} ENABLE TRIGGER USER"))


# --- RFC 9162 2.1.1 and the chain, from the specifications ------------------------


def rfc_leaf_hash(data: bytes) -> bytes:
    """MTH({d0}) = SHA-256(0x00 || d0)."""
    return hashlib.sha256(b"\x00" + data).digest()


def rfc_node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def merkle_tree_hash(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) over leaf *hashes*, by the recursive definition of RFC 9162 2.1.1."""
    return _mth(tuple(leaves))


@cache
def _mth(leaves: tuple[bytes, ...]) -> bytes:
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:  # the largest power of two smaller than n
        k *= 2
    return rfc_node_hash(_mth(leaves[:k]), _mth(leaves[k:]))


def perfect_subtrees(leaves: Sequence[bytes]) -> dict[tuple[int, int], bytes]:
    """Every complete subtree of level >= 1: what `ledger.merkle_node` must hold."""
    nodes: dict[tuple[int, int], bytes] = {}
    level, row = 0, list(leaves)
    while len(row) > 1:
        level += 1
        row = [rfc_node_hash(row[i], row[i + 1]) for i in range(0, len(row) - 1, 2)]
        nodes.update({(level, index): h for index, h in enumerate(row)})
    return nodes


def chain_link(previous: bytes, canonical: bytes) -> bytes:
    """h_n = SHA-256(h_{n-1} || canonical bytes of event n)."""
    return hashlib.sha256(previous + canonical).digest()
