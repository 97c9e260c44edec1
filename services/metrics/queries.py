"""Indicator queries over the per-order facts."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.metrics.schemas import (
    Indicators,
    IndicatorsResponse,
    PartitionPosition,
    Provenance,
    Slice,
    Window,
)
from services.metrics.store import applied_watermark, order_fact, tracking
from shared.events.topics import METRICS_GROUP

WINDOW_LENGTH: Final = {
    Window.HOUR: timedelta(hours=1),
    Window.DAY: timedelta(hours=24),
    Window.WEEK: timedelta(days=7),
    Window.MONTH: timedelta(days=30),
}


def resolve_slice(
    window: Window,
    *,
    start: datetime | None,
    end: datetime | None,
    now: datetime,
    region: str | None = None,
    category: str | None = None,
    urgency: str | None = None,
    technician_id: str | None = None,
) -> Slice:
    """Explicit bounds win; otherwise the window ends now (`all`: unbounded)."""
    if start is None and end is None and window is not Window.ALL:
        start, end = now - WINDOW_LENGTH[window], now
    return Slice(
        window=window,
        start=start,
        end=end,
        region=region,
        category=category,
        urgency=urgency,
        technician_id=technician_id,
    )


async def provenance(conn: AsyncConnection, *, policy_version: str) -> Provenance:
    last = await conn.scalar(
        select(applied_watermark.c.last_recorded_at).where(applied_watermark.c.id == 1)
    )
    offsets = tracking.consumer_offset
    rows = await conn.execute(
        select(offsets.c.topic, offsets.c.partition, offsets.c.offset)
        .where(offsets.c.group_id == METRICS_GROUP)
        .order_by(offsets.c.topic, offsets.c.partition)
    )
    return Provenance(
        last_recorded_at=last,
        positions=[
            PartitionPosition(topic=r.topic, partition=r.partition, offset=r.offset)
            for r in rows
        ],
        policy_version=policy_version,
    )


async def get_indicators(
    conn: AsyncConnection, slice_: Slice, *, policy_version: str
) -> IndicatorsResponse:
    """Every indicator for one slice, with its provenance."""
    created = select(func.count()).select_from(order_fact)
    if slice_.start is not None:
        created = created.where(order_fact.c.created_at >= slice_.start)
    if slice_.end is not None:
        created = created.where(order_fact.c.created_at < slice_.end)
    for column, value in (
        (order_fact.c.region, slice_.region),
        (order_fact.c.category, slice_.category),
        (order_fact.c.urgency, slice_.urgency),
    ):
        if value is not None:
            created = created.where(column == value)
    async with conn.begin():
        # One snapshot for the numbers and their provenance.
        await conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        as_of = await provenance(conn, policy_version=policy_version)
        orders_created = int(await conn.scalar(created) or 0)
    return IndicatorsResponse(
        slice=slice_, as_of=as_of, indicators=Indicators(orders_created=orders_created)
    )
