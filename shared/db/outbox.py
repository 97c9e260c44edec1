"""The transactional outbox table, one per schema that publishes to Kafka.

Every writer that publishes (the event store, the metrics service's alerts) writes
its message into its own schema's `outbox_message`, in the same transaction as the
effect, and `shared.outbox.relay` publishes it. One definition keeps the tables
identical, so the relay and the backlog probe read any of them the same way.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    LargeBinary,
    Table,
    Text,
    func,
    text,
)

from shared.db.base import metadata


def outbox_table(schema: str) -> Table:
    """The `outbox_message` table of `schema` (define it once per schema, at import)."""
    return Table(
        "outbox_message",
        metadata,
        Column("id", BigInteger, Identity(), primary_key=True),
        Column("topic", Text, nullable=False),
        Column("key", Text, nullable=False),
        Column("value", LargeBinary, nullable=False),
        Column(
            "created_at",
            DateTime(timezone=True),
            nullable=False,
            server_default=func.now(),
        ),
        Column("published_at", DateTime(timezone=True), nullable=True),
        # The relay's scan: only unpublished rows, in id order.
        Index(
            "ix_outbox_message_unpublished",
            "id",
            postgresql_where=text("published_at IS NULL"),
        ),
        schema=schema,
    )
