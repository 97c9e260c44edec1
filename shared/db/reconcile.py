"""Re-publish what the consumers never received (a broker that lost its records).

The event store is the durable truth and every consumer records the ids it applied
(`<schema>.processed_event`, written with the effect). An event some consumer lacks
although its outbox row was marked published was lost in transit: the embedded broker
keeps topics in memory, so a restart drops them; on Kafka a deleted and recreated
topic, or an unclean leader election, does the same.

Two ways back, both safe to repeat because consumers ignore ids they applied:
- `heal_lost_log`, run by the relay leader as soon as it sees its acknowledged
  records vanish: re-queue everything any consumer lacks, and rewind the consumers'
  stored offsets of that topic so they read the new log from its beginning.
- `requeue_missing` (`servicetrail reconcile`), an operator's repair, which leaves
  recent events and orders still waiting in the outbox to the relay.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Final

from aiokafka.structs import TopicPartition
from sqlalchemy import BigInteger, Column, Integer, Table, Text, func, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db.base import (
    DISPATCH_SCHEMA,
    EVENT_STORE_SCHEMA,
    LEDGER_SCHEMA,
    METRICS_SCHEMA,
    metadata,
)
from shared.events.topics import ORDER_EVENTS

# An offset the broker acknowledged to the relay (the first of its latest batch), per
# Kafka topic partition (prefixed names): a log ending at or below it lost records.
relay_position: Final = Table(
    "relay_position",
    metadata,
    Column("topic", Text, primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("offset", BigInteger, nullable=False),
    schema=EVENT_STORE_SCHEMA,
)

# Every consumer of the order events keeps its tracking tables in its own schema;
# the ledger first (see `active_consumers`).
CONSUMER_SCHEMAS: Final = (LEDGER_SCHEMA, METRICS_SCHEMA, DISPATCH_SCHEMA)

_PENDING_OF_ORDER: Final = f"""
    EXISTS (
        SELECT 1 FROM {EVENT_STORE_SCHEMA}.outbox_message o
        WHERE o.published_at IS NULL AND o.key = e.order_id::text
    )"""  # noqa: S608 - constants only


# Set-returning, run as the schemas' owner (migration 0008): the relay's role may not
# read other services' tracking tables. The ledger counts always; metrics and dispatch
# once they applied anything (one that never ran starts from whatever log it finds,
# and metrics can be rebuilt from the ledger).
_UNAPPLIED: Final = (
    f"JOIN {EVENT_STORE_SCHEMA}.unapplied_event_ids() AS lacking(event_id) "
    "USING (event_id)"
)


async def missing_from_consumers(
    conn: AsyncConnection, *, grace: timedelta = timedelta(minutes=1)
) -> list[tuple[str, str]]:
    """(order id, envelope JSON) of stored events some consumer lacks, oldest first.

    Orders with messages still waiting in the outbox are skipped: the relay will
    deliver them, and re-queueing now could reorder that order's events.
    """
    rows = await conn.execute(
        text(
            "SELECT e.order_id, e.envelope::text AS envelope "  # noqa: S608
            f"FROM {EVENT_STORE_SCHEMA}.order_event e {_UNAPPLIED} "
            "WHERE e.recorded_at < now() - make_interval(secs => :grace) "
            f"AND NOT {_PENDING_OF_ORDER} "
            "ORDER BY e.position"
        ),
        {"grace": grace.total_seconds()},
    )
    return [(str(row.order_id), row.envelope) for row in rows]


async def _queue(
    conn: AsyncConnection, events: list[tuple[str, str]], *, topic: str
) -> None:
    if events:
        await conn.execute(
            text(
                f"INSERT INTO {EVENT_STORE_SCHEMA}.outbox_message (topic, key, value) "  # noqa: S608
                "VALUES (:topic, :key, convert_to(:value, 'UTF8'))"
            ),
            [{"topic": topic, "key": key, "value": value} for key, value in events],
        )


async def requeue_missing(
    conn: AsyncConnection, *, topic: str, grace: timedelta = timedelta(minutes=1)
) -> int:
    """Queue every missing event again (in the caller's transaction); returns how many."""
    missing = await missing_from_consumers(conn, grace=grace)
    await _queue(conn, missing, topic=topic)
    return len(missing)


async def relay_positions(conn: AsyncConnection) -> dict[TopicPartition, int]:
    """The last offset the broker acknowledged to the relay, per topic partition."""
    rows = await conn.execute(relay_position.select())
    return {TopicPartition(r.topic, r.partition): r.offset for r in rows}


async def record_relay_positions(
    conn: AsyncConnection, acknowledged: Mapping[TopicPartition, int]
) -> None:
    """Remember acknowledged offsets, never going back (in the mark-published transaction)."""
    if not acknowledged:
        return
    statement = insert(relay_position).values(
        [
            {"topic": tp.topic, "partition": tp.partition, "offset": offset}
            for tp, offset in acknowledged.items()
        ]
    )
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=["topic", "partition"],
            set_={
                "offset": func.greatest(
                    relay_position.c.offset, statement.excluded.offset
                )
            },
        )
    )


async def heal_lost_log(
    conn: AsyncConnection, *, kafka_topics: Iterable[str], topic: str = ORDER_EVENTS
) -> int:
    """After the broker lost `kafka_topics`: re-queue what any consumer lacks, rewind.

    Only the relay leader calls this, between batches, so no one is sending the
    outbox rows it supersedes. Returns how many events were queued again.

    Each order's events must reach the new log in version order, so for every order
    with something missing, its still-unsent rows are superseded and all its missing
    events queued again after them, oldest first. The outbox is locked against
    writers meanwhile (eventsourcing's LOCK TABLE reasoning): a writer's outbox id is
    taken before it commits, so an event committing during the repair could
    otherwise get an id below the copies of its order's older events.
    """
    lost = sorted(set(kafka_topics))
    await conn.execute(
        text(f"LOCK TABLE {EVENT_STORE_SCHEMA}.outbox_message IN EXCLUSIVE MODE")
    )
    rows = await conn.execute(
        text(
            "SELECT e.order_id, e.envelope::text AS envelope "  # noqa: S608
            f"FROM {EVENT_STORE_SCHEMA}.order_event e {_UNAPPLIED} "
            "ORDER BY e.position"
        )
    )
    missing = [(str(row.order_id), row.envelope) for row in rows]
    await conn.execute(
        text(
            f"UPDATE {EVENT_STORE_SCHEMA}.outbox_message SET published_at = now() "  # noqa: S608
            "WHERE published_at IS NULL AND topic = :topic AND key = ANY(:keys)"
        ),
        {"topic": topic, "keys": sorted({key for key, _ in missing})},
    )
    await _queue(conn, missing, topic=topic)
    await conn.execute(relay_position.delete().where(relay_position.c.topic.in_(lost)))
    # The stored offsets point into a log that no longer exists; without them every
    # consumer starts the new log from its beginning (it notices the rewind even
    # while running). Offsets of a recreated log would skip unapplied records. Run
    # as the owner (migration 0008): the relay may not write consumers' tables.
    await conn.execute(
        text(f"SELECT {EVENT_STORE_SCHEMA}.rewind_consumer_offsets(:topics)"),
        {"topics": lost},
    )
    return len(missing)
