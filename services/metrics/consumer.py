"""The metrics service's Kafka handler: folds events into indicator facts."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.metrics.store import applied_watermark, order_fact
from shared.domain.events import Created
from shared.kafka.consumer import ConsumedEvent


class IndicatorProjector:
    """Keeps the per-order facts the indicators are computed from."""

    async def handle(
        self, events: Sequence[ConsumedEvent], conn: AsyncConnection
    ) -> None:
        created = [
            {
                "order_id": c.event.order_id,
                "created_at": c.event.time,
                "region": data.region,
                "category": data.category,
                "urgency": data.urgency.value,
            }
            for c in events
            if isinstance(data := c.event.data, Created)
        ]
        if created:
            await conn.execute(
                insert(order_fact).values(created).on_conflict_do_nothing()
            )
        latest = max(c.event.recorded_at for c in events)
        await conn.execute(
            update(applied_watermark)
            .where(applied_watermark.c.id == 1)
            .values(
                last_recorded_at=func.greatest(
                    func.coalesce(applied_watermark.c.last_recorded_at, latest), latest
                )
            )
        )
