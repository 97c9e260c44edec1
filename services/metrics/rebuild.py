"""Recompute every indicator's facts from the ledger (`servicetrail metrics rebuild`).

Runs in one transaction: the old facts disappear and the rebuilt ones appear at
once, and the consumer (which locks its offset rows per batch) waits meanwhile.

`align_deadlines` (at the service's start) recomputes the stored SLA deadlines
when the policy's targets or calendars changed since they were computed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final
from uuid import UUID

from sqlalchemy import delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.metrics.cases import refold_cases
from services.metrics.clocks import due_at
from services.metrics.consumer import IndicatorProjector
from services.metrics.domain import SlaTargets, sla_json
from services.metrics.store import (
    applied_watermark,
    complaint,
    indicator_day,
    indicator_hour,
    indicator_total,
    indicator_week,
    open_order_count,
    order_fact,
    order_state,
    rating,
    rating_day,
    rating_hour,
    rating_total,
    rating_week,
    rollup_policy,
    tracking,
    unaccepted_assignment,
)
from shared.db.engine import driver_of
from shared.domain.indicators import OrderFacts
from shared.events.envelope import Envelope, to_order_event

CHUNK: Final = 5000


async def rebuild_from_ledger(
    conn: AsyncConnection,
    *,
    on_progress: Callable[[int, int], None] | None = None,
    sla: SlaTargets | None = None,
) -> int:
    """Replace the facts with a replay of the ledger; returns events applied.

    The rollups are rebuilt with the facts; with `sla`, their SLA hits are
    counted under those targets from now on (default: the ones they had).
    """
    await conn.execute(
        tracking.consumer_offset.select().with_for_update()
    )  # blocks the live consumer until we commit
    total = int(
        await conn.scalar(text("SELECT count(*) FROM ledger.ledger_entry")) or 0
    )
    tables = (
        *(order_state, order_fact, open_order_count, rating, complaint),
        unaccepted_assignment,
    )
    rollups = (
        *(indicator_week, indicator_day, indicator_hour, indicator_total),
        *(rating_week, rating_day, rating_hour, rating_total),
    )
    for table in (*tables, *rollups):
        await conn.execute(delete(table))
    await conn.execute(update(rollup_policy).values(complete=True))
    if sla is not None:
        await conn.execute(update(rollup_policy).values(sla=sla_json(sla)))
    await conn.execute(update(applied_watermark).values(last_recorded_at=None))
    projector = IndicatorProjector()
    driver = await driver_of(conn)
    applied, position = 0, 0
    while True:
        rows = await driver.fetch(
            "SELECT position, canonical FROM ledger.ledger_entry "
            "WHERE position >= $1 ORDER BY position LIMIT $2",
            position,
            CHUNK,
        )
        if not rows:
            break
        events = [
            to_order_event(Envelope.model_validate_json(r["canonical"])) for r in rows
        ]
        await projector.apply(events, conn)
        applied += len(events)
        position = rows[-1]["position"] + 1
        if on_progress is not None:
            on_progress(applied, total)
    # Events the consumer applied but the ledger does not hold yet were just dropped
    # from the facts: forget them as processed and rewind, so the consumer applies
    # them again from the topic.
    forgotten = await conn.execute(
        text(
            "DELETE FROM metrics.processed_event p WHERE NOT EXISTS "
            "(SELECT 1 FROM ledger.ledger_entry l WHERE l.event_id = p.event_id)"
        )
    )
    if forgotten.rowcount:
        await conn.execute(delete(tracking.consumer_offset))
    # The alert cases are not in the ledger: their steps stay, and their projection
    # is folded again from them (what a live step wrote must come out the same).
    await refold_cases(conn)
    return applied


SELECT_STATES: Final = (
    "SELECT facts FROM metrics.order_state WHERE order_id > $1 "
    "ORDER BY order_id LIMIT $2"
)
SET_DEADLINES: Final = (
    "UPDATE metrics.order_fact f SET accept_due_at = c.accept, "
    "arrive_due_at = c.arrive FROM unnest($1::uuid[], $2::timestamptz[], "
    "$3::timestamptz[]) AS c(order_id, accept, arrive) WHERE f.order_id = c.order_id"
)


async def align_deadlines(
    conn: AsyncConnection, sla: SlaTargets, *, chunk: int = CHUNK
) -> int:
    """Make the stored SLA deadlines the ones `sla` gives; returns orders recomputed.

    `rollup_policy.sla` records the policy the deadlines (and the rollups' SLA
    hits) were computed with. When the service starts with other targets,
    calendars or pause, every order's deadlines are recomputed from its facts, in
    chunks, and the record becomes `sla`; the rollups, counted under the old one,
    are marked incomplete (queries scan the facts) until `servicetrail metrics
    rebuild`. The consumer waits meanwhile (its offset rows are locked).
    """
    wanted = sla_json(sla)
    recorded = await conn.scalar(select(rollup_policy.c.sla).with_for_update())
    if recorded == wanted:
        return 0
    await conn.execute(tracking.consumer_offset.select().with_for_update())
    driver = await driver_of(conn)
    done, last = 0, UUID(int=0)
    while rows := await driver.fetch(SELECT_STATES, last, chunk):
        facts = [OrderFacts.model_validate_json(row[0]) for row in rows]
        await driver.execute(
            SET_DEADLINES,
            [f.order_id for f in facts],
            [due_at(f, sla, "accept") for f in facts],
            [due_at(f, sla, "arrive") for f in facts],
        )
        done += len(facts)
        last = facts[-1].order_id
    changes: dict[str, object] = {"sla": wanted}
    if done:
        changes["complete"] = False
    await conn.execute(update(rollup_policy).values(**changes))
    return done
