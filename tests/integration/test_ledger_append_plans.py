"""The appender's reads are index probes, with or without planner statistics.

A ledger filled in bulk has no statistics until autovacuum gets to it; a query
shape the planner can misjudge then scans the whole table per batch (seen: a chain
head lookup walking the primary key backwards for every order, 23 s a batch). The
plans are checked before and after ANALYZE, and the answers against the rows.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any, Final
from uuid import UUID, uuid4

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from services.ledger import store
from shared.db.engine import driver_of
from shared.settings import CommonSettings

ORDERS: Final = 4_000
VERSIONS: Final = 10  # 40,000 entries: big enough for the planner to go wrong


@pytest_asyncio.fixture(loop_scope="session")
async def ledger(database_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated database whose ledger was just filled in bulk (no ANALYZE)."""
    engine = create_async_engine(
        CommonSettings(database_url=database_url).sqlalchemy_url, poolclass=NullPool
    )
    async with engine.begin() as conn:
        driver = await driver_of(conn)
        # Orders interleaved as they arrive; each entry's hashes name it, so the
        # expected answers can be read off the rows.
        await driver.execute(
            """
            INSERT INTO ledger.ledger_entry (position, event_id, order_id,
                order_version, event_type, event_time, recorded_at, canonical,
                chain_hash, leaf_hash)
            SELECT p, gen_random_uuid(), o.id, p / $1 + 1, 'servicetrail.order.x',
                now(), now(), '\\x7b7d'::bytea,
                sha256(('chain ' || p)::bytea), sha256(('leaf ' || p)::bytea)
            FROM generate_series(0, $1::int * $2::int - 1) AS p
            JOIN (SELECT gen_random_uuid() AS id, n
                  FROM generate_series(0, $1 - 1) AS n) AS o ON o.n = p % $1
            """,
            ORDERS,
            VERSIONS,
        )
        await driver.execute(
            "INSERT INTO ledger.merkle_node (level, index, hash) "
            "SELECT 1, i, sha256(('node ' || i)::bytea) "
            "FROM generate_series(0, $1::int / 2 - 1) AS i",
            ORDERS * VERSIONS,
        )
    yield engine
    await engine.dispose()


async def plan(conn: AsyncConnection, sql: str, *args: Any) -> dict[str, Any]:
    driver = await driver_of(conn)
    explained = await driver.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args)
    # SQLAlchemy's dialect decodes json on its connections; plain asyncpg does not.
    if isinstance(explained, str):
        explained = json.loads(explained)
    plans: dict[str, Any] = explained[0]["Plan"]
    return plans


def scans(node: dict[str, Any]) -> Iterator[tuple[str, str | None]]:
    """(node type, index) of every scan of a ledger table in a plan."""
    if node.get("Relation Name") in ("ledger_entry", "merkle_node"):
        yield node["Node Type"], node.get("Index Name")
    for child in node.get("Plans", []):
        yield from scans(child)


async def analyse(engine: AsyncEngine, analysed: bool) -> None:
    if analysed:
        async with engine.begin() as conn:
            await conn.exec_driver_sql(
                "ANALYZE ledger.ledger_entry, ledger.merkle_node"
            )


@pytest.mark.parametrize("analysed", [False, True], ids=["fresh", "analysed"])
async def test_chain_heads_probe_the_order_index_and_answer_the_latest_link(
    ledger: AsyncEngine, analysed: bool
) -> None:
    await analyse(ledger, analysed)
    async with ledger.connect() as conn:
        driver = await driver_of(conn)
        known: list[UUID] = [
            r[0]
            for r in await driver.fetch(
                "SELECT order_id FROM ledger.ledger_entry "
                "WHERE position >= $1 ORDER BY position LIMIT 2000",
                ORDERS * (VERSIONS - 1),
            )
        ]
        unknown = uuid4()
        ids = [*known, unknown]
        assert set(scans(await plan(conn, store.CHAIN_HEADS, ids))) == {
            ("Index Scan", "uq_ledger_entry_order_id_order_version")
        }
        heads = await store.chain_heads(conn, ids)
        latest = {
            r[0]: r[1]
            for r in await driver.fetch(
                "SELECT DISTINCT ON (order_id) order_id, chain_hash "
                "FROM ledger.ledger_entry WHERE order_id = ANY($1::uuid[]) "
                "ORDER BY order_id, position DESC",
                known,
            )
        }
    assert heads == latest
    assert unknown not in heads


@pytest.mark.parametrize("analysed", [False, True], ids=["fresh", "analysed"])
async def test_frontier_nodes_are_primary_key_probes(
    ledger: AsyncEngine, analysed: bool
) -> None:
    await analyse(ledger, analysed)
    keys = [(0, 39_999), (1, 19_998), (1, 7), (0, 0), (3, 1)]  # (3, 1) is absent
    async with ledger.connect() as conn:
        found = set(
            scans(
                await plan(
                    conn,
                    store.FETCH_NODES,
                    [level for level, _ in keys],
                    [index for _, index in keys],
                )
            )
        )
        assert found == {
            ("Index Scan", "pk_ledger_entry"),
            ("Index Scan", "pk_merkle_node"),
        }
        nodes = await store.fetch_nodes(conn, keys)
        driver = await driver_of(conn)
        leaf = await driver.fetchval(
            "SELECT leaf_hash FROM ledger.ledger_entry WHERE position = 39999"
        )
        node = await driver.fetchval(
            "SELECT hash FROM ledger.merkle_node WHERE level = 1 AND index = 7"
        )
    assert set(nodes) == {(0, 39_999), (1, 19_998), (1, 7), (0, 0)}
    assert nodes[(0, 39_999)] == leaf
    assert nodes[(1, 7)] == node
