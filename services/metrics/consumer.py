"""The metrics service's Kafka handler: folds events into per-order facts.

Per batch: load the facts of the batch's orders, apply each event with the pure
`apply_event`, then upsert the facts rows (with the indicator columns the SQL reads),
the ratings and the complaints, and advance the provenance watermark, all in the
consumer's transaction (offsets are stored by the caller in the same one).

Every statement has a fixed text, whatever the batch size: rows travel as one array
per column (`INSERT .. SELECT * FROM unnest(..)`), so asyncpg prepares each statement
once per connection and no batch can hit PostgreSQL's 32,767-parameter limit (a
multi-row VALUES of 30 columns did at about 1,000 orders, which broke rebuilds).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any, Final, TypeAlias
from uuid import UUID

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from services.metrics.clocks import due_at
from services.metrics.domain import (
    COMPLAINT_ROLLUPS,
    DEFAULT_SLA,
    UNACCEPTED_ROLLUPS,
    Rolled,
    Row,
    SlaTargets,
    order_rollups,
    rating_deltas,
    rollup_deltas,
    sla_from_json,
)
from services.metrics.live import EVENTS_APPLIED, FUTURE_EVENTS, LATE_EVENTS
from services.metrics.store import (
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
    unaccepted_assignment,
)
from shared.db.engine import driver_of
from shared.db.event_store import load_versions_between
from shared.domain.indicators import (
    ComplaintFact,
    OrderFacts,
    RatingFact,
    UnacceptedFact,
    apply_event,
    complaint_facts,
    rating_fact,
    unaccepted_fact,
)
from shared.domain.lifecycle import OrderEvent
from shared.kafka.consumer import ConsumedEvent

# An event recorded this long after it happened came from an offline device.
LATE_AFTER: Final = timedelta(minutes=5)


def _arrays(table: Table) -> str:
    """One array parameter per column, in the table's column order."""
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]  # untyped ctor
    return ", ".join(
        f"${i}::{c.type.compile(dialect=dialect)}[]" for i, c in enumerate(table.c, 1)
    )


def _unnest_insert(table: Table, on_conflict: str) -> str:
    """INSERT of one array parameter per column, in the table's column order."""
    names = ", ".join(f'"{c.name}"' for c in table.c)
    arrays = _arrays(table)
    # Built once at import from our own table definitions, never from input.
    return (
        f"INSERT INTO {table.schema}.{table.name} ({names}) "  # noqa: S608
        f"SELECT * FROM unnest({arrays}) {on_conflict}"
    )


def _update_all_but(table: Table, keys: Sequence[str]) -> str:
    return ", ".join(
        f'"{c.name}" = EXCLUDED."{c.name}"' for c in table.c if c.name not in keys
    )


UPSERT_STATES: Final = _unnest_insert(
    order_state, "ON CONFLICT (order_id) DO UPDATE SET facts = EXCLUDED.facts"
)
UPSERT_FACTS: Final = _unnest_insert(
    order_fact,
    f"ON CONFLICT (order_id) DO UPDATE SET {_update_all_but(order_fact, ['order_id'])}",
)
# One rating per order; a redelivered `rated` changes nothing (and is not returned,
# so the rollups count each rating once).
INSERT_RATINGS: Final = _unnest_insert(
    rating, "ON CONFLICT DO NOTHING RETURNING event_id"
)
# A redelivered decline or expiry is not returned: counted once.
INSERT_UNACCEPTED: Final = _unnest_insert(
    unaccepted_assignment, "ON CONFLICT DO NOTHING RETURNING event_id"
)
UNACCEPTED_COLUMNS: Final = tuple(c.name for c in unaccepted_assignment.c)
SELECT_COMPLAINTS: Final = (
    "SELECT * FROM metrics.complaint WHERE order_id = ANY($1::uuid[])"
)


def _add_to(table: Table, keys: Sequence[str]) -> str:
    """An upsert that adds each counter to the stored row of the same key."""
    added = ", ".join(
        f'"{c.name}" = {table.schema}.{table.name}."{c.name}" + EXCLUDED."{c.name}"'
        for c in table.c
        if c.name not in keys
    )
    return _unnest_insert(
        table, f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {added}"
    )


# What replaces a change's UTC hour at each coarser level (None: all time).
_DAY_OF_HOUR: Final = "(hour AT TIME ZONE 'UTC')::date"
_WEEK_OF_HOUR: Final = "date_trunc('week', hour AT TIME ZONE 'UTC')::date"


def _add_to_every_level(
    hourly: Table, coarser: Sequence[tuple[Table, str | None]]
) -> str:
    """One statement adding hourly changes (one array per `hourly` column) to the
    hourly rollup and, summed per period, to each coarser one: one round trip per
    batch instead of one per level (and no Python regrouping).

    A period's changes that sum to nothing are not written: they would only leave
    a new row version behind.
    """
    keys = [c.name for c in hourly.c if c.primary_key]
    counters = [c.name for c in hourly.c if not c.primary_key]
    arrays = _arrays(hourly)
    names = ", ".join(c.name for c in hourly.c)

    def added(table: Table, conflict: list[str]) -> str:
        return f"ON CONFLICT ({', '.join(conflict)}) DO UPDATE SET " + ", ".join(
            f"{c} = {table.schema}.{table.name}.{c} + EXCLUDED.{c}" for c in counters
        )

    def insert(table: Table, rows: str) -> str:
        conflict = [c.name for c in table.c if c.primary_key]
        columns = ", ".join(c.name for c in table.c)
        return f"INSERT INTO {table.schema}.{table.name} ({columns}) {rows} " + added(
            table, conflict
        )

    sums = ", ".join(f"sum({c})" for c in counters)
    nonzero = " OR ".join(f"sum({c}) <> 0" for c in counters)
    levels = []
    for table, period in coarser:
        # The period stands where the hour stood (after the slice's two columns).
        grouped = [k for k in keys if k != "hour"]
        selected = list(grouped)
        if period is not None:
            selected.insert(2, f"{period} AS period")
            grouped.append("period")
        rows = (
            f"SELECT {', '.join(selected)}, {sums} FROM changes "  # noqa: S608
            f"GROUP BY {', '.join(grouped)} HAVING {nonzero}"
        )
        levels.append(insert(table, rows))
    # Built once at import from our own table definitions, never from input.
    ctes = [
        f"changes AS MATERIALIZED (SELECT * FROM unnest({arrays}) AS c({names}))",  # noqa: S608
        f"hourly AS ({insert(hourly, 'SELECT * FROM changes')})",  # noqa: S608
        *(f"level{i} AS ({statement})" for i, statement in enumerate(levels[:-1])),
    ]
    return f"WITH {', '.join(ctes)} {levels[-1]}"


ADD_INDICATOR_CHANGES: Final = _add_to_every_level(
    indicator_hour,
    [
        (indicator_day, _DAY_OF_HOUR),
        (indicator_week, _WEEK_OF_HOUR),
        (indicator_total, None),
    ],
)
ADD_RATING_CHANGES: Final = _add_to_every_level(
    rating_hour,
    [(rating_day, _DAY_OF_HOUR), (rating_week, _WEEK_OF_HOUR), (rating_total, None)],
)
SELECT_ROLLUP_SLA: Final = "SELECT sla FROM metrics.rollup_policy WHERE id = 1"
FACT_COLUMNS: Final = tuple(c.name for c in order_fact.c)
RATING_COLUMNS: Final = tuple(c.name for c in rating.c)
UPSERT_COMPLAINTS: Final = _unnest_insert(
    complaint,
    "ON CONFLICT (order_id, complaint_id) DO UPDATE SET "
    + _update_all_but(complaint, ["order_id", "complaint_id"]),
)
COUNT_OPEN_ORDERS: Final = _add_to(
    open_order_count, ("region", "category", "urgency", "technician_id", "channel")
)
# The document goes both ways as JSON text: pydantic's JSON parser and serializer
# are several times faster than going through Python dicts and asyncpg's codec.
SELECT_FACTS: Final = (
    "SELECT facts FROM metrics.order_state WHERE order_id = ANY($1::uuid[])"
)
# Computed fields are derived again on loading: dumping them cost 60% of the dump.
NOT_STORED: Final[set[str]] = set(OrderFacts.model_computed_fields)
ADVANCE_WATERMARK: Final = (
    "UPDATE metrics.applied_watermark SET last_recorded_at = "
    "greatest(coalesce(last_recorded_at, $1), $1) WHERE id = 1"
)


def fact_row(facts: OrderFacts, sla: SlaTargets = DEFAULT_SLA) -> tuple[Any, ...]:
    """The columns the indicator SQL reads of one order, in `order_fact`'s order;
    its SLA deadlines under `sla` (the recorded policy's targets and calendars)."""
    return (
        facts.order_id,
        facts.last_version,
        facts.region,
        facts.category,
        facts.urgency.value,
        facts.created_at,
        facts.cancelled_at,
        facts.first_accepted_at,
        facts.response_time_s,
        facts.accepted_technician_id,
        facts.first_arrived_at,
        facts.arrival_time_s,
        facts.arrived_technician_id,
        facts.first_diagnosed_at,
        facts.diagnosis_time_s,
        facts.first_final_at,
        facts.resolution_time_s,
        facts.first_final_technician_id,
        facts.first_time_fix,
        facts.resolved,
        facts.reopened,
        facts.complaint_filed,
        facts.approved_total_at_final,
        facts.price_deviation,
        facts.overrun,
        facts.requoted,
        facts.quoted_before_work,
        facts.free_warranty_completion,
        facts.is_open,
        None if facts.channel is None else facts.channel.value,
        assignments_json(facts),
        facts.eta_error_s,
        due_at(facts, sla, "accept"),
        due_at(facts, sla, "arrive"),
    )


def assignments_json(facts: OrderFacts) -> str:
    """`order_fact.assignments`: [[technician_id, since, until or null], ...]."""
    return json.dumps(
        [
            [
                span.technician_id,
                span.since.isoformat(),
                None if span.until is None else span.until.isoformat(),
            ]
            for span in facts.assignments
        ]
    )


def rating_row(rated: RatingFact) -> tuple[Any, ...]:
    """A rating in `rating`'s column order."""
    return (
        rated.event_id,
        rated.order_id,
        rated.rated_at,
        rated.score,
        rated.nps,
        rated.attitude,
        rated.professionalism,
        rated.communication,
        rated.punctuality,
        rated.price_fairness,
        rated.technician_id,
        rated.region,
        rated.category,
        rated.urgency.value,
        None if rated.channel is None else rated.channel.value,
    )


def complaint_row(filed: ComplaintFact) -> tuple[Any, ...]:
    """A complaint in `complaint`'s column order."""
    return (
        filed.order_id,
        filed.complaint_id,
        filed.filed_at,
        filed.resolved_at,
        filed.resolution_s,
        filed.technician_id,
        filed.region,
        filed.category,
        filed.urgency.value,
        None if filed.channel is None else filed.channel.value,
    )


def unaccepted_row(lapsed: UnacceptedFact) -> tuple[Any, ...]:
    """A decline or an expiry in `unaccepted_assignment`'s column order."""
    return (
        lapsed.event_id,
        lapsed.order_id,
        lapsed.technician_id,
        lapsed.kind,
        lapsed.at,
        lapsed.region,
        lapsed.category,
        lapsed.urgency.value,
        None if lapsed.channel is None else lapsed.channel.value,
    )


OpenSlice: TypeAlias = tuple[str, str, str, str, str]


def open_slice(facts: OrderFacts | None) -> OpenSlice | None:
    """The `open_order_count` row an order counts in, None when it is not open."""
    if facts is None or not facts.is_open:
        return None
    technician = facts.accepted_technician_id or ""
    channel = "" if facts.channel is None else facts.channel.value
    return (facts.region, facts.category, facts.urgency.value, technician, channel)


def open_count_changes(
    before: dict[UUID, OrderFacts], after: Iterable[OrderFacts]
) -> dict[OpenSlice, int]:
    """+1/-1 per slice for orders that opened, closed or changed slice."""
    changes: Counter[OpenSlice] = Counter()
    for facts in after:
        was, now = open_slice(before.get(facts.order_id)), open_slice(facts)
        if was != now:
            if was is not None:
                changes[was] -= 1
            if now is not None:
                changes[now] += 1
    return {key: delta for key, delta in changes.items() if delta}


def _columns(rows: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)]


async def _add_rollups(
    driver: Any, statement: str, changes: Mapping[tuple[Any, ...], Sequence[Any]]
) -> None:
    if changes:
        await driver.execute(
            statement, *_columns([(*key, *change) for key, change in changes.items()])
        )


def _add_deltas(
    deltas: dict[Any, list[float]], more: Mapping[Any, Sequence[float]]
) -> None:
    """Adds rollup changes to others of the same batch."""
    for key, change in more.items():
        found = deltas.setdefault(key, [0, 0, 0.0])
        for i, part in enumerate(change):
            found[i] += part


def _fact_mapping(facts: OrderFacts, sla: SlaTargets) -> Row:
    return dict(zip(FACT_COLUMNS, fact_row(facts, sla), strict=True))


class IndicatorProjector:
    """Keeps the facts the indicators are computed from, and their rollups."""

    def __init__(self, on_applied: Callable[[], None] | None = None) -> None:
        self._on_applied = on_applied
        self._rolled: tuple[str, SlaTargets, tuple[Rolled, ...]] | None = None

    async def _recorded(self, driver: Any) -> tuple[SlaTargets, tuple[Rolled, ...]]:
        """The SLA policy the rollups were counted and the deadlines computed with,
        and the rollup definitions under it."""
        stored = str(await driver.fetchval(SELECT_ROLLUP_SLA))
        if self._rolled is None or self._rolled[0] != stored:
            sla = sla_from_json(stored)
            self._rolled = (stored, sla, order_rollups(sla))
        return self._rolled[1], self._rolled[2]

    async def handle(
        self, events: Sequence[ConsumedEvent], conn: AsyncConnection
    ) -> None:
        await self.apply([c.event for c in events], conn)

    async def apply(self, events: Sequence[OrderEvent], conn: AsyncConnection) -> None:
        """Fold events (in order) into the stored facts: the live path and rebuilds."""
        if not events:
            return
        driver = await driver_of(conn)
        stored: dict[UUID, OrderFacts] = {}
        for row in await driver.fetch(SELECT_FACTS, list({e.order_id for e in events})):
            loaded = OrderFacts.model_validate_json(row[0])
            stored[loaded.order_id] = loaded
        facts = dict(stored)
        changed: set[UUID] = set()
        ratings: list[tuple[Any, ...]] = []
        complaints: dict[tuple[UUID, str], tuple[Any, ...]] = {}
        unaccepted: list[tuple[Any, ...]] = []

        def fold_in(event: OrderEvent) -> None:
            before = facts.get(event.order_id)
            if before is not None and event.version <= before.last_version:
                # Already folded: a redelivery, or a late record whose version was
                # taken from the event store above. Its side records (rating,
                # decline, expiry) are in this batch or stored already: none twice.
                return
            updated = apply_event(before, event)
            if updated is None:
                return  # an event of an order whose `created` was never seen
            facts[event.order_id] = updated
            changed.add(event.order_id)
            if (rated := rating_fact(updated, event)) is not None:
                ratings.append(rating_row(rated))
            if (lapsed := unaccepted_fact(updated, event)) is not None:
                unaccepted.append(unaccepted_row(lapsed))
            for filed in complaint_facts(before, updated, event):
                complaints[(filed.order_id, filed.complaint_id)] = complaint_row(filed)

        for event in events:
            if event.recorded_at - event.time > LATE_AFTER:
                LATE_EVENTS.inc()
            elif event.time > event.recorded_at:
                FUTURE_EVENTS.inc()
            known = facts.get(event.order_id)
            applied_up_to = 0 if known is None else known.last_version
            if event.version > applied_up_to + 1:
                # Versions are missing: an earlier event reached the topic after this
                # one (a failed send retried after a later one was accepted; there is
                # no idempotent producer). Folding on would skip it for good, since a
                # version at or below the last applied one counts as a redelivery:
                # take the missing ones from the event store, the truth, first.
                for missed in await load_versions_between(
                    driver, event.order_id, after=applied_up_to, before=event.version
                ):
                    fold_in(missed)
            fold_in(event)
        if changed:
            updated_facts = [facts[order_id] for order_id in changed]
            sla, rolled = await self._recorded(driver)
            await driver.execute(
                UPSERT_STATES,
                [f.order_id for f in updated_facts],
                [f.model_dump_json(exclude=NOT_STORED) for f in updated_facts],
            )
            rows = {f.order_id: _fact_mapping(f, sla) for f in updated_facts}
            await driver.execute(
                UPSERT_FACTS, *_columns([tuple(row.values()) for row in rows.values()])
            )
            before = [
                _fact_mapping(stored[f.order_id], sla)
                for f in updated_facts
                if f.order_id in stored
            ]
            deltas = rollup_deltas(before, list(rows.values()), rolled)
            if opened := open_count_changes(stored, updated_facts):
                await driver.execute(
                    COUNT_OPEN_ORDERS,
                    *_columns([(*key, delta) for key, delta in opened.items()]),
                )
        else:
            deltas = {}
        if ratings:
            inserted = {
                r[0] for r in await driver.fetch(INSERT_RATINGS, *_columns(ratings))
            }
            new_ratings = [
                dict(zip(RATING_COLUMNS, row, strict=True))
                for row in ratings
                if row[0] in inserted
            ]
            if added := rating_deltas(new_ratings):
                await _add_rollups(driver, ADD_RATING_CHANGES, added)
        if unaccepted:
            inserted_unaccepted = {
                row[0]
                for row in await driver.fetch(INSERT_UNACCEPTED, *_columns(unaccepted))
            }
            new_unaccepted = [
                dict(zip(UNACCEPTED_COLUMNS, row, strict=True))
                for row in unaccepted
                if row[0] in inserted_unaccepted
            ]
            _add_deltas(deltas, rollup_deltas([], new_unaccepted, UNACCEPTED_ROLLUPS))
        if complaints:
            old_complaints: list[Row] = [
                dict(row)
                for row in await driver.fetch(
                    SELECT_COMPLAINTS, list({key[0] for key in complaints})
                )
                if (row["order_id"], row["complaint_id"]) in complaints
            ]
            await driver.execute(
                UPSERT_COMPLAINTS, *_columns(list(complaints.values()))
            )
            names = tuple(c.name for c in complaint.c)
            _add_deltas(
                deltas,
                rollup_deltas(
                    old_complaints,
                    [dict(zip(names, row, strict=True)) for row in complaints.values()],
                    COMPLAINT_ROLLUPS,
                ),
            )
        if deltas:
            await _add_rollups(driver, ADD_INDICATOR_CHANGES, deltas)
        await driver.execute(ADVANCE_WATERMARK, max(e.recorded_at for e in events))
        EVENTS_APPLIED.inc(len(events))
        if self._on_applied is not None:
            self._on_applied()
