"""Ledger tables: entries at gapless positions, Merkle nodes, signed tree heads.

All three are append-only: database triggers refuse UPDATE, DELETE and TRUNCATE,
and the ledger logs in as a role that may only INSERT and SELECT them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Final, TypeAlias
from uuid import UUID

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from services.ledger.domain import NodeKey, TreeHead
from shared.db.base import LEDGER_SCHEMA, metadata
from shared.db.engine import driver_of
from shared.db.tracking import tracking_tables

ledger_entry: Final = Table(
    "ledger_entry",
    metadata,
    Column("position", BigInteger, primary_key=True, autoincrement=False),
    Column("event_id", Uuid, nullable=False, unique=True),
    Column("order_id", Uuid, nullable=False),
    Column("order_version", Integer, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("event_time", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    # The exact RFC 8785 bytes that were hashed: jsonb would normalise them and make
    # the chain unverifiable from the table.
    Column("canonical", LargeBinary, nullable=False),
    Column("chain_hash", LargeBinary, nullable=False),
    Column("leaf_hash", LargeBinary, nullable=False),
    Column(
        "appended_at",
        DateTime(timezone=True),
        nullable=False,
        server_default=func.now(),
    ),
    UniqueConstraint("order_id", "order_version"),
    schema=LEDGER_SCHEMA,
)

# Every completed perfect subtree of level >= 1 (leaves are ledger_entry.leaf_hash).
merkle_node: Final = Table(
    "merkle_node",
    metadata,
    Column("level", SmallInteger, primary_key=True, autoincrement=False),
    Column("index", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary, nullable=False),
    schema=LEDGER_SCHEMA,
)

tree_head: Final = Table(
    "tree_head",
    metadata,
    Column("tree_size", BigInteger, primary_key=True, autoincrement=False),
    Column("root_hash", LargeBinary, nullable=False),
    Column("timestamp", Text, nullable=False),
    Column("key_id", Text, nullable=False),
    Column("signature", LargeBinary, nullable=False),
    schema=LEDGER_SCHEMA,
)

tracking: Final = tracking_tables(LEDGER_SCHEMA)

APPEND_ONLY_TABLES: Final = ("ledger_entry", "merkle_node", "tree_head")


# Serialises appenders for one transaction; readers are not blocked. An advisory
# lock, because the ledger's role may not take table locks (it can only insert).
APPEND_LOCK_KEY: Final = 0x1ED6E5_A99E


async def lock_for_append(conn: AsyncConnection) -> int:
    """Serialise appenders (readers go on) and return the next position."""
    await conn.execute(
        text("SELECT pg_advisory_xact_lock(:key)"), {"key": APPEND_LOCK_KEY}
    )
    last = await conn.scalar(select(func.max(ledger_entry.c.position)))
    return 0 if last is None else int(last) + 1


# The appender's columns, in COPY order: all but appended_at, which takes its default.
ENTRY_COLUMNS: Final = tuple(
    column.name for column in ledger_entry.columns if column.name != "appended_at"
)
EntryRow: TypeAlias = tuple[
    int, UUID, UUID, int, str, datetime, datetime, bytes, bytes, bytes
]
"""One ledger entry as `append_entries` takes it, in `ENTRY_COLUMNS` order."""

# One statement for every kind of node. Each key is looked up on its own (LATERAL
# with LIMIT 1 is never turned into a join), so every lookup is a primary-key probe
# whatever the planner's statistics say about the freshly filled tables.
FETCH_NODES: Final = """
    SELECT k.level, k.index, n.hash
    FROM unnest($1::smallint[], $2::bigint[]) AS k(level, index)
    CROSS JOIN LATERAL (
        SELECT e.leaf_hash AS hash FROM ledger.ledger_entry AS e
        WHERE k.level = 0 AND e.position = k.index
        UNION ALL
        SELECT m.hash FROM ledger.merkle_node AS m
        WHERE k.level > 0 AND m.level = k.level AND m.index = k.index
        LIMIT 1
    ) AS n
"""


async def fetch_nodes(
    conn: AsyncConnection, keys: Iterable[NodeKey]
) -> dict[NodeKey, bytes]:
    """Stored hashes of perfect subtrees (level 0 from the entries), one query."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    driver = await driver_of(conn)
    rows = await driver.fetch(
        FETCH_NODES, [level for level, _ in wanted], [index for _, index in wanted]
    )
    return {(row[0], row[1]): row[2] for row in rows}


async def append_entries(conn: AsyncConnection, rows: Sequence[EntryRow]) -> None:
    """COPY the entries in (the ledger's role may INSERT, which is all COPY needs)."""
    driver = await driver_of(conn)
    await driver.copy_records_to_table(
        "ledger_entry", schema_name=LEDGER_SCHEMA, columns=ENTRY_COLUMNS, records=rows
    )


# The completed Merkle nodes and the batch's signed head in one round trip (a
# data-modifying WITH runs whether or not it is referenced).
_INSERT_NODES_AND_HEAD: Final = """
    WITH nodes AS (
        INSERT INTO ledger.merkle_node (level, index, hash)
        SELECT * FROM unnest($1::smallint[], $2::bigint[], $3::bytea[])
    )
    INSERT INTO ledger.tree_head (tree_size, root_hash, timestamp, key_id, signature)
    VALUES ($4, $5, $6, $7, $8)
"""


async def insert_nodes_and_head(
    conn: AsyncConnection,
    nodes: Sequence[tuple[NodeKey, bytes]],
    head: TreeHead,
    signature: bytes,
) -> None:
    """Store completed perfect subtrees and a signed tree head, in one statement."""
    driver = await driver_of(conn)
    await driver.execute(
        _INSERT_NODES_AND_HEAD,
        [level for (level, _), _ in nodes],
        [index for (_, index), _ in nodes],
        [digest for _, digest in nodes],
        head.tree_size,
        head.root_hash,
        head.timestamp,
        head.key_id,
        signature,
    )


async def latest_tree_head(conn: AsyncConnection) -> tuple[TreeHead, bytes] | None:
    row = (
        await conn.execute(
            select(tree_head).order_by(tree_head.c.tree_size.desc()).limit(1)
        )
    ).one_or_none()
    if row is None:
        return None
    head = TreeHead(
        tree_size=row.tree_size,
        root_hash=bytes(row.root_hash),
        timestamp=row.timestamp,
        key_id=row.key_id,
    )
    return head, bytes(row.signature)


# Per order id, one backward probe of the (order_id, order_version) unique index:
# the order's highest version is its latest entry, since an order's events reach
# the ledger in version order (the auditor flags any entry whose version does not
# follow its order's previous one). Ordering by position instead lets the planner
# walk the whole primary key backwards looking for the order, which it does on a
# freshly loaded table without statistics (measured: 23 s per batch).
CHAIN_HEADS: Final = """
    SELECT o.id, h.chain_hash
    FROM unnest($1::uuid[]) AS o(id)
    CROSS JOIN LATERAL (
        SELECT chain_hash FROM ledger.ledger_entry
        WHERE order_id = o.id ORDER BY order_version DESC LIMIT 1
    ) AS h
"""


async def chain_heads(
    conn: AsyncConnection, order_ids: Iterable[UUID]
) -> dict[UUID, bytes]:
    """The latest chain hash of each order (absent: the order has no entry yet)."""
    driver = await driver_of(conn)
    rows = await driver.fetch(CHAIN_HEADS, list(order_ids))
    return {row[0]: row[1] for row in rows}
