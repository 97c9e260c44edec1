"""Ledger tables: entries in a gapless global position order, and tracking."""

from __future__ import annotations

from typing import Final

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    func,
)

from shared.db.base import LEDGER_SCHEMA, metadata
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
    Column(
        "appended_at",
        DateTime(timezone=True),
        nullable=False,
        server_default=func.now(),
    ),
    UniqueConstraint("order_id", "order_version"),
    schema=LEDGER_SCHEMA,
)

# One row: the next position. Locked by each append batch so positions stay gapless
# even with several ledger consumers (a sequence would leave gaps on rollback).
ledger_head: Final = Table(
    "ledger_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("next_position", BigInteger, nullable=False),
    CheckConstraint("id = 1", name="single_row"),
    schema=LEDGER_SCHEMA,
)

tracking: Final = tracking_tables(LEDGER_SCHEMA)
