"""Appending domain events straight to the event store (below the order writer)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db.engine import driver_of
from shared.db.event_store import Appended, NotAppended, SummaryValues, append_event
from shared.domain.lifecycle import OrderEvent, evolve
from shared.events.envelope import to_cloudevent
from shared.events.topics import SOURCE_INTAKE


async def append_stored(
    conn: AsyncConnection, event: OrderEvent, *, digest: bytes = b"d"
) -> Appended | NotAppended:
    """Store `event` in the caller's transaction, its summary as if it were alone."""
    state = evolve(None, event)
    return await append_event(
        await driver_of(conn),
        event,
        envelope=to_cloudevent(event, source=SOURCE_INTAKE),
        request_digest=digest,
        summary=SummaryValues(
            customer_id=state.customer_id,
            technician_id=state.technician_id,
            status=state.status.value,
            created_at=state.created_at,
        ),
    )
