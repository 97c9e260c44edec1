"""How far the outbox relay is behind: unpublished rows and the age of the oldest.

Read on each scrape and readiness probe, so both queries stay within the partial
index of unpublished rows, and the count stops at a cap: a backlog of millions
after a long broker outage must not make every scrape scan millions of entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

# Beyond this the exact figure no longer changes what anyone does.
BACKLOG_COUNT_CAP: Final = 100_000


@dataclass(frozen=True, slots=True)
class OutboxBacklog:
    """One outbox's rows waiting for the broker (`unpublished` stops at the cap)."""

    outbox: str
    unpublished: int
    oldest_age_seconds: float


async def measure_outbox(
    engine: AsyncEngine, *, schema: str, cap: int = BACKLOG_COUNT_CAP
) -> OutboxBacklog:
    """Count the unpublished rows of `schema`'s outbox (up to `cap`) and time the oldest."""
    # The lowest unpublished id is the oldest row the relay still owes: ids follow
    # insertion, and the relay publishes in id order.
    statement = text(
        "SELECT"  # noqa: S608 - the schema is one of ours, never input
        " (SELECT count(*) FROM (SELECT 1 FROM "
        f"{schema}.outbox_message WHERE published_at IS NULL LIMIT :cap) AS waiting),"
        " (SELECT extract(epoch FROM clock_timestamp() - created_at) FROM "
        f"{schema}.outbox_message WHERE published_at IS NULL ORDER BY id LIMIT 1)"
    )
    async with engine.connect() as conn:
        unpublished, oldest_age = (await conn.execute(statement, {"cap": cap})).one()
    return OutboxBacklog(
        outbox=schema,
        unpublished=int(unpublished),
        oldest_age_seconds=max(0.0, float(oldest_age or 0.0)),
    )
