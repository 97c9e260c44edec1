"""Appending domain events straight to the event store (below the order writer)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db.engine import create_engine, driver_of
from shared.db.event_store import Appended, NotAppended, append_event, load_state
from shared.domain.lifecycle import OrderEvent, evolve
from shared.events.envelope import to_cloudevent
from shared.events.topics import SOURCE_INTAKE
from shared.settings import CommonSettings


async def append_stored(
    conn: AsyncConnection, event: OrderEvent, *, digest: bytes = b"d"
) -> Appended | NotAppended:
    """Store `event` in the caller's transaction, after the order's stored events.

    The summary and state are the order's after it, as the order writer keeps them
    (events are expected in version order).
    """
    driver = await driver_of(conn)
    before = await load_state(driver, event.order_id)
    return await append_event(
        driver,
        event,
        envelope=to_cloudevent(event, source=SOURCE_INTAKE),
        request_digest=digest,
        state=evolve(before, event),
    )


async def store_events(settings: CommonSettings, events: Sequence[OrderEvent]) -> None:
    """Store `events` (one transaction; ids already stored are left as they are).

    Consumers that trust only the event store apply a record only if it is stored:
    tests that publish straight to the topic store what they publish first.
    """
    engine = create_engine(settings, pool_size=1)
    try:
        async with engine.begin() as conn:
            for event in events:
                await append_stored(conn, event)
    finally:
        await engine.dispose()
