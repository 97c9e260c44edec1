"""The orders behind an indicator's number (GET /v1/indicators/orders).

One row per measurement the indicator counts for a slice, with the row's own
contribution: a duration's seconds, a mean's or NPS's value, or whether a rate counts
it in its numerator (every listed row is in the denominator). The rows are selected by
the catalog's own `conditions`, so a rate's rows are exactly its denominator and a
distribution's exactly its `count`: nothing is defined twice.

A measurement is not always a whole order: ratings, complaints and unanswered
assignments are rows of their own (an order rated twice is listed twice), keyed by
the order id and the row's own id. The two counts "now" (`orders_open`,
`orders_unaccepted_overdue`) list the orders counted now; like the indicators
endpoint, they ignore the window and the `period` slice.

Rows come newest measurement first (the indicator's "at": the time that puts the
row in a window), keyset-paged by an opaque cursor naming the indicator, so a cursor
of another listing is refused rather than misread.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Final
from uuid import UUID

from sqlalchemy import (
    Boolean,
    ColumnElement,
    DateTime,
    Float,
    Select,
    Text,
    Uuid,
    and_,
    case,
    cast,
    false,
    func,
    literal,
    null,
    select,
    true,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from services.metrics.catalog import (
    Indicator,
    Kind,
    SliceFilter,
    conditions,
    deadline,
    unaccepted_overdue,
)
from services.metrics.domain import SlaTargets
from services.metrics.policy import IndicatorPolicy
from services.metrics.queries import UnknownIndicator, provenance, slice_filter
from services.metrics.schemas import DrilldownPage, DrilldownRow, Slice
from services.metrics.store import (
    complaint,
    order_fact,
    rating,
    unaccepted_assignment,
)
from shared.db.keyset import InvalidCursor

MAX_LIMIT: Final = 500
DEFAULT_LIMIT: Final = 50
# The counts "now" listed beside the catalog's indicators.
OPEN: Final = "orders_open"
OVERDUE: Final = "orders_unaccepted_overdue"


class OrderStage(StrEnum):
    """How far an order got, as metrics' facts tell (the lifecycle's own status is
    intake's: `GET /v1/orders/{id}`)."""

    WAITING = "waiting"  # no accept yet
    ACCEPTED = "accepted"
    ARRIVED = "arrived"
    DIAGNOSED = "diagnosed"
    COMPLETED = "completed"  # finally completed (and not reopened since)
    REOPENED = "reopened"  # open again after a final completion
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class Measurement:
    """One row behind a number."""

    order_id: UUID
    created_at: datetime
    at: datetime
    region: str
    category: str
    urgency: str
    channel: str | None
    technician_id: str | None
    status: OrderStage
    value: float | None
    in_numerator: bool | None
    in_denominator: bool | None


@dataclass(frozen=True, slots=True)
class MeasurementPage:
    kind: Kind
    items: Sequence[Measurement]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class _Position:
    """Where a page ends: the last row's "at", order and own id."""

    indicator: str
    at: datetime
    order_id: UUID
    row_key: str

    def encode(self) -> str:
        raw = json.dumps(
            [self.indicator, self.at.isoformat(), str(self.order_id), self.row_key]
        )
        return base64.urlsafe_b64encode(raw.encode()).decode()

    @classmethod
    def decode(cls, cursor: str, indicator: str) -> _Position:
        """Raises InvalidCursor for anything not issued for this indicator."""
        try:
            name, at, order_id, row_key = json.loads(
                base64.urlsafe_b64decode(cursor.encode())
            )
            position = cls(
                str(name), datetime.fromisoformat(at), UUID(order_id), str(row_key)
            )
        except (ValueError, TypeError, binascii.Error) as err:
            raise InvalidCursor("the cursor is not one this service issued") from err
        if position.indicator != indicator or position.at.tzinfo is None:
            raise InvalidCursor(f"the cursor is not one issued for {indicator}")
        return position


@dataclass(frozen=True)
class _Listing:
    at: Any
    row_key: Any
    source: Any
    slices: Any
    technician: Any
    contribution: list[ColumnElement[Any]]
    matching: list[ColumnElement[bool]]

    def query(self, *, after: _Position | None, limit: int) -> Select[Any]:
        """One page (and one row more), newest first, after `after`."""
        key = (self.at, order_fact.c.order_id, self.row_key)
        matching = list(self.matching)
        if after is not None:
            matching.append(
                tuple_(*key)
                < tuple_(
                    literal(after.at, DateTime(timezone=True)),
                    literal(after.order_id, Uuid),
                    literal(after.row_key, Text),
                )
            )
        return (
            select(
                order_fact.c.order_id,
                order_fact.c.created_at,
                self.at.label("at"),
                self.row_key.label("row_key"),
                self.slices.c.region,
                self.slices.c.category,
                self.slices.c.urgency,
                self.slices.c.channel,
                self.technician.label("technician_id"),
                _stage().label("status"),
                *self.contribution,
            )
            .select_from(self.source)
            .where(and_(*matching))
            .order_by(*(column.desc() for column in key))
            .limit(limit + 1)
        )


def _stage() -> ColumnElement[str]:
    f = order_fact.c
    return case(
        (f.cancelled_at.is_not(None), OrderStage.CANCELLED.value),
        (~f.open, OrderStage.COMPLETED.value),
        (f.first_final_at.is_not(None), OrderStage.REOPENED.value),
        (f.first_diagnosed_at.is_not(None), OrderStage.DIAGNOSED.value),
        (f.first_arrived_at.is_not(None), OrderStage.ARRIVED.value),
        (f.first_accepted_at.is_not(None), OrderStage.ACCEPTED.value),
        else_=OrderStage.WAITING.value,
    )


def _row_key(indicator: Indicator) -> ColumnElement[str]:
    """What tells apart two rows of one order at one instant."""
    table = indicator.table
    if table is rating or table is unaccepted_assignment:
        return cast(table.c.event_id, Text)
    if table is complaint:
        return complaint.c.complaint_id
    return literal("", Text)


def _contribution(indicator: Indicator) -> list[ColumnElement[Any]]:
    """value, in_numerator, in_denominator of a row, as `catalog.parts` counts it."""
    match indicator.kind:
        case Kind.RATE:
            return [
                null().label("value"),
                func.coalesce(cast(indicator.value, Boolean), false()).label(
                    "in_numerator"
                ),
                true().label("in_denominator"),
            ]
        case Kind.COUNT:
            return [
                null().label("value"),
                null().label("in_numerator"),
                null().label("in_denominator"),
            ]
    return [
        cast(indicator.value, Float).label("value"),
        null().label("in_numerator"),
        null().label("in_denominator"),
    ]


def _catalog_rows(indicator: Indicator, where: SliceFilter) -> _Listing:
    table = indicator.table
    matching = conditions(indicator, where)
    if indicator.kind is not Kind.RATE:
        # count(value), not count(*): a row without a value is not counted.
        matching.append(indicator.value.is_not(None))
    joined = (
        table
        if table is order_fact
        else table.join(order_fact, order_fact.c.order_id == table.c.order_id)
    )
    return _Listing(
        at=indicator.at_column(),
        row_key=_row_key(indicator),
        source=joined,
        slices=table,
        technician=indicator.technician_column(),
        contribution=_contribution(indicator),
        matching=matching,
    )


def _count_now_rows(
    name: str, where: SliceFilter, sla: SlaTargets, now: datetime
) -> _Listing:
    """orders_open (by the first accepter, as `open_order_count` keys it) or
    orders_unaccepted_overdue (by the holder at the accept target's instant)."""
    f = order_fact.c
    if name == OPEN:
        matching: list[ColumnElement[bool]] = [f.open]
        for slice_name in ("region", "category", "urgency", "channel"):
            value = getattr(where, slice_name)
            if value is not None:
                matching.append(f[slice_name] == value)
        if where.technician_id is not None:
            matching.append(f.accepted_technician_id == where.technician_id)
        at: ColumnElement[Any] = f.created_at
    else:
        matching = unaccepted_overdue(sla, where, now)
        at = deadline("first_accepted_at")
    return _Listing(
        at=at,
        row_key=literal("", Text),
        source=order_fact,
        slices=order_fact,
        technician=f.accepted_technician_id,
        contribution=[
            null().label("value"),
            null().label("in_numerator"),
            null().label("in_denominator"),
        ],
        matching=matching,
    )


def drillable(catalog: dict[str, Indicator]) -> list[str]:
    """Every indicator whose rows can be listed: the catalog's and the counts now."""
    return [*catalog, OPEN, OVERDUE]


def kind_of(name: str, catalog: dict[str, Indicator]) -> Kind:
    """The indicator's kind; UnknownIndicator if it has no rows to list."""
    if name in (OPEN, OVERDUE):
        return Kind.COUNT
    indicator = catalog.get(name)
    if indicator is None:
        raise UnknownIndicator(
            f"unknown indicator {name!r}; one of {', '.join(drillable(catalog))}"
        )
    return indicator.kind


async def list_measurements(
    conn: AsyncConnection,
    name: str,
    where: SliceFilter,
    *,
    catalog: dict[str, Indicator],
    sla: SlaTargets,
    now: datetime,
    cursor: str | None,
    limit: int,
) -> MeasurementPage:
    """One page of the rows behind `name` for a slice at `now`, newest first.

    Raises:
        UnknownIndicator: not a catalog indicator nor a count now.
        InvalidCursor: the cursor was not issued for this indicator.
    """
    kind = kind_of(name, catalog)
    after = None if cursor is None else _Position.decode(cursor, name)
    where = replace(where, now=now)
    listing = (
        _count_now_rows(name, where, sla, now)
        if name in (OPEN, OVERDUE)
        else _catalog_rows(catalog[name], where)
    )
    size = min(limit, MAX_LIMIT)
    rows = (await conn.execute(listing.query(after=after, limit=size))).all()
    page = rows[:size]
    next_cursor = None
    if len(rows) > size:
        last = page[-1]
        next_cursor = _Position(name, last.at, last.order_id, last.row_key).encode()
    return MeasurementPage(
        kind=kind,
        items=[
            Measurement(
                order_id=row.order_id,
                created_at=row.created_at,
                at=row.at,
                region=row.region,
                category=row.category,
                urgency=row.urgency,
                channel=row.channel,
                technician_id=row.technician_id,
                status=OrderStage(row.status),
                value=None if row.value is None else float(row.value),
                in_numerator=row.in_numerator,
                in_denominator=row.in_denominator,
            )
            for row in page
        ],
        next_cursor=next_cursor,
    )


async def get_drilldown(
    conn: AsyncConnection,
    name: str,
    slice_: Slice,
    *,
    policy: IndicatorPolicy,
    now: datetime,
    cursor: str | None,
    limit: int,
) -> DrilldownPage:
    """A page of the rows behind `name` for a slice, with its provenance, read in
    one snapshot (as `/v1/indicators` reads the number)."""
    kind_of(name, policy.catalog)  # refused before any database work
    async with conn.begin():
        await conn.exec_driver_sql(
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"
        )
        as_of = await provenance(conn, policy_version=policy.version)
        page = await list_measurements(
            conn,
            name,
            slice_filter(slice_, now, peak_hours=policy.peak_hours),
            catalog=policy.catalog,
            sla=policy.sla,
            now=now,
            cursor=cursor,
            limit=limit,
        )
    return DrilldownPage(
        indicator=name,
        kind=page.kind.value,
        slice=slice_,
        as_of=as_of,
        items=[DrilldownRow.model_validate(asdict(row)) for row in page.items],
        next_cursor=page.next_cursor,
    )
