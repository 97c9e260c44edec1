"""Indicator queries: the catalog's SQL over per-order facts, with provenance."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import ColumnElement, Table, and_, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.metrics.cases import alert_with_case, case_indicators
from services.metrics.catalog import (
    Indicator,
    SliceFilter,
    aggregates,
    conditions,
    result,
    table_query,
    unaccepted_overdue,
)
from services.metrics.domain import DEFAULT_SLA, SlaTargets
from services.metrics.policy import IndicatorPolicy
from services.metrics.rollup import rolled_indicators
from services.metrics.schemas import (
    AlertList,
    AlertOut,
    Bucket,
    Indicators,
    IndicatorsResponse,
    PartitionPosition,
    Provenance,
    Slice,
    TimeseriesPoint,
    TimeseriesResponse,
    Window,
)
from services.metrics.store import (
    alert,
    applied_watermark,
    open_order_count,
    order_fact,
    tracking,
)
from shared.db.keyset import Key, cut_page, newest_first
from shared.domain.errors import DomainError
from shared.domain.peak_hours import DEFAULT_PEAK_HOURS, PeakHours, Period
from shared.events.topics import METRICS_GROUP

WINDOW_LENGTH: Final = {
    Window.HOUR: timedelta(hours=1),
    Window.DAY: timedelta(hours=24),
    Window.WEEK: timedelta(days=7),
    Window.MONTH: timedelta(days=30),
}


class UnknownIndicator(DomainError):
    code = "unknown_indicator"


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
    channel: str | None = None,
    period: Period | None = None,
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
        channel=channel,
        period=period,
    )


def slice_filter(
    slice_: Slice,
    now: datetime | None = None,
    *,
    peak_hours: PeakHours = DEFAULT_PEAK_HOURS,
) -> SliceFilter:
    """The slice as the queries read it; `now` caps the censored SLA breaches,
    `peak_hours` says what its `period` means."""
    return SliceFilter(
        start=slice_.start,
        end=slice_.end,
        region=slice_.region,
        category=slice_.category,
        urgency=slice_.urgency,
        technician_id=slice_.technician_id,
        channel=slice_.channel,
        period=slice_.period,
        peak_hours=peak_hours,
        now=now,
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


async def compute_indicators(
    conn: AsyncConnection,
    where: SliceFilter,
    catalog: Mapping[str, Indicator],
    *,
    sla: SlaTargets | None = None,
) -> dict[str, Any]:
    """Every indicator for one slice.

    With the policy's `sla`, from the daily rollups where they serve the slice;
    otherwise (and without `sla`) by one scan of the facts per table. The counts
    "now" are at `where.now` (default: the server's clock); they have no "at" of
    their own, so a `period` slice leaves them as they are.
    """
    if where.now is None:
        where = replace(where, now=datetime.now(UTC))
    assert where.now is not None
    rolled = None
    if sla is not None:
        rolled = await rolled_indicators(conn, where, catalog, sla)
    values: dict[str, Any] = {}
    if rolled is not None:
        values.update(rolled)
    else:
        values.update(await scan_indicators(conn, where, catalog))
    counted = open_order_count.c
    open_now: list[ColumnElement[bool]] = []
    for name in ("region", "category", "urgency", "channel", "technician_id"):
        value = getattr(where, name)
        if value is not None:
            open_now.append(counted[name] == value)
    total = await conn.scalar(
        select(func.coalesce(func.sum(counted.orders), 0)).where(*open_now)
    )
    values["orders_open"] = {"value": int(total or 0)}
    overdue = await conn.scalar(
        select(func.count())
        .select_from(order_fact)
        .where(*unaccepted_overdue(sla or DEFAULT_SLA, where, where.now))
    )
    values["orders_unaccepted_overdue"] = {"value": int(overdue or 0)}
    values.update(await case_indicators(conn, where))
    return values


async def scan_indicators(
    conn: AsyncConnection, where: SliceFilter, catalog: Mapping[str, Indicator]
) -> dict[str, Any]:
    """Every catalog indicator for one slice from the facts: one scan per table."""
    by_table: dict[Table, list[Indicator]] = defaultdict(list)
    for indicator in catalog.values():
        by_table[indicator.table].append(indicator)
    values: dict[str, Any] = {}
    for table, indicators in by_table.items():
        row = dict(
            (await conn.execute(table_query(table, indicators, where))).one()._mapping
        )
        values.update({i.name: result(i, row) for i in indicators})
    return values


async def get_indicators(
    conn: AsyncConnection,
    slice_: Slice,
    *,
    policy: IndicatorPolicy,
    now: datetime | None = None,
) -> IndicatorsResponse:
    """Every indicator of indicators.md for one slice, with its provenance, at `now`
    (the server's clock by default; the window of `slice_` ends there)."""
    async with conn.begin():
        # One snapshot for the numbers and their provenance.
        await conn.exec_driver_sql(
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"
        )
        as_of = await provenance(conn, policy_version=policy.version)
        values = await compute_indicators(
            conn,
            slice_filter(slice_, now, peak_hours=policy.peak_hours),
            policy.catalog,
            sla=policy.sla,
        )
    return IndicatorsResponse(
        slice=slice_, as_of=as_of, indicators=Indicators.model_validate(values)
    )


async def get_timeseries(
    conn: AsyncConnection,
    name: str,
    slice_: Slice,
    bucket: Bucket,
    *,
    policy: IndicatorPolicy,
    now: datetime | None = None,
) -> TimeseriesResponse:
    """One indicator per hour or day bucket of its "at" time (censored SLA
    breaches up to `now`, the server's clock by default)."""
    indicator = policy.catalog.get(name)
    if indicator is None:
        raise UnknownIndicator(
            f"unknown indicator {name!r}; one of {', '.join(policy.catalog)}"
        )
    where = slice_filter(slice_, now or datetime.now(UTC), peak_hours=policy.peak_hours)
    at = indicator.at_column()
    # Buckets in UTC whatever the database session's time zone.
    start = func.date_trunc(bucket.value, at, "UTC").label("bucket_start")
    statement = (
        select(start, *aggregates(indicator, where))
        .select_from(indicator.table)
        .where(and_(*conditions(indicator, where)))
        .group_by(start)
        .order_by(start)
    )
    async with conn.begin():
        await conn.exec_driver_sql(
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"
        )
        as_of = await provenance(conn, policy_version=policy.version)
        rows = (await conn.execute(statement)).all()
    points = [
        TimeseriesPoint.model_validate(
            {
                "bucket_start": row.bucket_start,
                "value": result(indicator, dict(row._mapping)),
            }
        )
        for row in rows
    ]
    return TimeseriesResponse(
        indicator=name, bucket=bucket, slice=slice_, as_of=as_of, points=points
    )


async def list_alerts(
    conn: AsyncConnection, *, state: str | None, limit: int, cursor: str | None
) -> AlertList:
    """Quality alerts, newest raised first, one page."""
    query = alert_with_case()
    if state is not None:
        query = query.where(alert.c.state == state)
    rows = (
        await conn.execute(
            newest_first(
                query, alert.c.raised_at, alert.c.alert_id, cursor=cursor, limit=limit
            )
        )
    ).all()
    page, next_cursor = cut_page(
        rows, limit=limit, key=lambda row: Key(row.raised_at, row.alert_id)
    )
    return AlertList(
        items=[AlertOut.model_validate(dict(row._mapping)) for row in page],
        next_cursor=next_cursor,
    )
