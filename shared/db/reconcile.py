"""Re-publish what the ledger never received (a broker that lost its topics).

The event store is the durable truth. An event whose outbox row was marked published
but that the ledger does not hold after a grace period was lost in transit (the
embedded broker keeps topics in memory; a restart drops them). Reconciliation queues
those events again, each order's in version order; consumers ignore any copy they
already applied, so running it twice, or needlessly, does no harm.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

_MISSING: Final = text(
    """
    SELECT e.order_id, e.envelope::text AS envelope
    FROM event_store.order_event e
    WHERE e.recorded_at < now() - make_interval(secs => :grace)
      AND NOT EXISTS (SELECT 1 FROM ledger.ledger_entry l WHERE l.event_id = e.event_id)
      AND NOT EXISTS (
          SELECT 1 FROM event_store.outbox_message o
          WHERE o.published_at IS NULL AND o.key = e.order_id::text
      )
    ORDER BY e.order_id, e.version
    """
)
_REQUEUE: Final = text(
    "INSERT INTO event_store.outbox_message (topic, key, value) "
    "VALUES (:topic, :key, convert_to(:value, 'UTF8'))"
)


async def missing_from_ledger(
    conn: AsyncConnection, *, grace: timedelta = timedelta(minutes=1)
) -> list[tuple[str, str]]:
    """(order id, envelope JSON) of stored events the ledger lacks, oldest order first.

    Orders with messages still waiting in the outbox are skipped: the relay will
    deliver them, and re-queueing now could reorder that order's events.
    """
    rows = await conn.execute(_MISSING, {"grace": grace.total_seconds()})
    return [(str(row.order_id), row.envelope) for row in rows]


async def requeue_missing(
    conn: AsyncConnection, *, topic: str, grace: timedelta = timedelta(minutes=1)
) -> int:
    """Queue every missing event again (in the caller's transaction); returns how many."""
    missing = await missing_from_ledger(conn, grace=grace)
    if missing:
        await conn.execute(
            _REQUEUE,
            [{"topic": topic, "key": key, "value": value} for key, value in missing],
        )
    return len(missing)
