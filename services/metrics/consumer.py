"""The metrics service's Kafka handler: folds events into per-order facts.

Per batch: load the facts of the batch's orders, apply each event with the pure
`apply_event`, then upsert the facts rows (with the indicator columns the SQL reads),
the ratings and the complaints, and advance the provenance watermark, all in the
consumer's transaction (offsets are stored by the caller in the same one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, Final
from uuid import UUID

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.metrics.live import EVENTS_APPLIED, FUTURE_EVENTS, LATE_EVENTS
from services.metrics.store import applied_watermark, complaint, order_fact, rating
from shared.domain.indicators import (
    OrderFacts,
    apply_event,
    complaint_fact,
    rating_fact,
)
from shared.domain.lifecycle import OrderEvent
from shared.kafka.consumer import ConsumedEvent

# An event recorded this long after it happened came from an offline device.
LATE_AFTER: Final = timedelta(minutes=5)


def fact_row(facts: OrderFacts) -> dict[str, Any]:
    """The stored row of one order: the facts document plus the columns SQL reads."""
    return {
        "order_id": facts.order_id,
        "facts": facts.model_dump(mode="json"),
        "last_version": facts.last_version,
        "region": facts.region,
        "category": facts.category,
        "urgency": facts.urgency.value,
        "created_at": facts.created_at,
        "cancelled_at": facts.cancelled_at,
        "first_accepted_at": facts.first_accepted_at,
        "response_time_s": facts.response_time_s,
        "accepted_technician_id": facts.accepted_technician_id,
        "first_arrived_at": facts.first_arrived_at,
        "arrival_time_s": facts.arrival_time_s,
        "arrived_technician_id": facts.arrived_technician_id,
        "first_diagnosed_at": facts.first_diagnosed_at,
        "diagnosis_time_s": facts.diagnosis_time_s,
        "first_final_at": facts.first_final_at,
        "resolution_time_s": facts.resolution_time_s,
        "first_final_technician_id": facts.first_final_technician_id,
        "first_time_fix": facts.first_time_fix,
        "resolved": facts.resolved,
        "reopened": facts.reopened,
        "complaint_filed": facts.complaint_filed,
        "approved_total": facts.approved_total_at_final,
        "price_deviation": facts.price_deviation,
        "overrun": facts.overrun,
        "requoted": facts.requoted,
        "quoted_before_work": facts.quoted_before_work,
        "free_warranty_completion": facts.free_warranty_completion,
        "open": facts.is_open,
    }


def _upsert(table: Any, rows: list[dict[str, Any]], keys: Sequence[str]) -> Any:
    statement = insert(table).values(rows)
    return statement.on_conflict_do_update(
        index_elements=list(keys),
        set_={k: statement.excluded[k] for k in rows[0] if k not in keys},
    )


class IndicatorProjector:
    """Keeps the facts the indicators are computed from."""

    def __init__(self, on_applied: Callable[[], None] | None = None) -> None:
        self._on_applied = on_applied

    async def handle(
        self, events: Sequence[ConsumedEvent], conn: AsyncConnection
    ) -> None:
        await self.apply([c.event for c in events], conn)

    async def apply(self, events: Sequence[OrderEvent], conn: AsyncConnection) -> None:
        """Fold events (in order) into the stored facts: the live path and rebuilds."""
        order_ids = {e.order_id for e in events}
        stored = await conn.execute(
            select(order_fact.c.order_id, order_fact.c.facts).where(
                order_fact.c.order_id.in_(order_ids)
            )
        )
        facts: dict[UUID, OrderFacts] = {
            row.order_id: OrderFacts.model_validate(row.facts) for row in stored
        }
        changed: set[UUID] = set()
        ratings: list[dict[str, Any]] = []
        complaints: dict[tuple[UUID, str], dict[str, Any]] = {}
        for event in events:
            if event.recorded_at - event.time > LATE_AFTER:
                LATE_EVENTS.inc()
            elif event.time > event.recorded_at:
                FUTURE_EVENTS.inc()
            updated = apply_event(facts.get(event.order_id), event)
            if updated is None:
                continue  # an event of an order whose `created` was never seen
            facts[event.order_id] = updated
            changed.add(event.order_id)
            if (rated := rating_fact(updated, event)) is not None:
                ratings.append(rated.model_dump(exclude={"attitude_value"}))
            if (filed := complaint_fact(updated, event)) is not None:
                complaints[(filed.order_id, filed.complaint_id)] = filed.model_dump(
                    exclude={"resolution_s"}
                ) | {"resolution_s": filed.resolution_s}
        if changed:
            await conn.execute(
                _upsert(order_fact, [fact_row(facts[o]) for o in changed], ["order_id"])
            )
        if ratings:
            await conn.execute(insert(rating).values(ratings).on_conflict_do_nothing())
        if complaints:
            await conn.execute(
                _upsert(
                    complaint, list(complaints.values()), ["order_id", "complaint_id"]
                )
            )
        latest = max(e.recorded_at for e in events)
        await conn.execute(
            update(applied_watermark)
            .where(applied_watermark.c.id == 1)
            .values(
                last_recorded_at=func.greatest(
                    func.coalesce(applied_watermark.c.last_recorded_at, latest), latest
                )
            )
        )
        EVENTS_APPLIED.inc(len(events))
        if self._on_applied is not None:
            self._on_applied()
