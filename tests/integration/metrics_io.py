"""Helpers for the metrics tests: publish histories, wait for the consumer, and a
brute-force reference of every indicator computed literally from indicators.md.

The reference deliberately shares no code with the service (not `apply_event`, not
`OrderFacts`): it walks each order's events and computes every indicator from its
definition, with nearest-rank percentiles in exact integer arithmetic.

Attribution for a `technician_id` slice follows indicators.md ("the technician who
performed the measured step"; outcome and price rates, ratings and complaints belong
to the technician of the first final completion). The spec names no technician for
`orders_created`, `cancellation_rate` and `orders_open`; for those the reference uses
the technician who first accepted the order, as the service documents.

Censoring (indicators.md v2): an SLA measurement is met when the order was accepted
(arrived) at or before created_at + target, at that time, by who did it; otherwise
it is a breach at created_at + target unless cancelled at or before that instant,
and counts only once that instant is at or before now. The spec names no technician
for a censored breach; the reference (as the service) charges the technician
holding the order at the breach instant: assigned at or before it and not
unassigned (declined, expired, cancelled, reopened) before it, an unassignment at
the very instant still holding; the earliest such assignment. An `assignment_expired`
at the target therefore counts against the expired technician as that breach; every
expiry is also counted in `assignments_expired` (at its time, for the expired
technician). `orders_unaccepted_overdue` slices technicians the same way.

Business calendars (indicators.md v2): under `RefClocks`, the deadline is found by
walking forward from created_at in steps of at most a minute (cut at each pause's
edges), counting a step when its start is inside the urgency's working hours (local
weekday and wall time, not a holiday) and outside the waits on the customer; the
deadline is where the target runs out inside a counted step (so a target used up
exactly as work ends is due when work resumes). A wait runs from a quote issued
before the first arrival until it is approved, rejected, or dropped by a cancel or
a reopen; it is cut at the clock's stop. A clock held by an open wait is not due.
A `period` slice (indicators.md v2) keeps the measurements whose `at` falls, in
Shanghai wall time, in 18:00-08:00 or on a Saturday or Sunday (`peak`) or not
(`offpeak`); the counts "now" (`orders_open`, `orders_unaccepted_overdue`) have no
`at` of their own and ignore it.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import httpx
import uvicorn
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI

from services.metrics.app import create_app
from services.metrics.domain import SliceFilter
from services.metrics.settings import MetricsSettings
from services.stack.broker import create_topics
from services.stack.servers import free_port
from shared.domain import events
from shared.domain.actors import Actor, Role
from shared.domain.events import Channel, OrderPayload, Outcome, Urgency
from shared.domain.lifecycle import AUTO_DISPATCH, OrderEvent, OrderStatus
from shared.events.envelope import KAFKA_HEADERS
from shared.events.topics import DEFAULT_PARTITIONS, ORDER_EVENTS
from shared.settings import CommonSettings
from tests.api.conftest import bearer, running
from tests.builders import (
    Story,
    make_accepted,
    make_arrived,
    make_assigned,
    make_assignment_expired,
    make_cancelled,
    make_complaint_filed,
    make_complaint_resolved,
    make_completed,
    make_created,
    make_declined,
    make_diagnosed,
    make_priced,
    make_quote_approved,
    make_quote_rejected,
    make_reopened,
)
from tests.fixtures.stack import TEST_JWT_SECRET, service_settings
from tests.integration.kafka_io import record_value
from tests.integration.store_io import store_events

JsonDict = dict[str, Any]

# indicators.md defaults, in minutes.
ACCEPT_TARGET_MIN: Final[Mapping[str, int]] = {
    "emergency": 15,
    "urgent": 60,
    "normal": 240,
}
ARRIVE_TARGET_MIN: Final[Mapping[str, int]] = {
    "emergency": 120,
    "urgent": 480,
    "normal": 2880,
}
# indicators.md v2 "ETA": an arrival at most this late keeps the ETA.
ETA_KEPT_S: Final = 900

DISTRIBUTIONS: Final = (
    "response_time_s",
    "arrival_time_s",
    "diagnosis_time_s",
    "resolution_time_s",
    "complaint_resolution_s",
    "eta_error_s",
)
ALL_INDICATORS: Final = (
    *DISTRIBUTIONS,
    "first_time_fix_rate",
    "resolution_rate",
    "rework_rate",
    "complaint_rate",
    "cancellation_rate",
    "price_deviation_mean",
    "overrun_rate",
    "requote_rate",
    "quoted_before_work_rate",
    "rating_mean",
    "csat",
    "nps",
    "ratings_count",
    "sla_accept_rate",
    "sla_arrival_rate",
    "eta_kept_rate",
    "orders_created",
    "orders_completed",
    "orders_open",
    "orders_unaccepted_overdue",
    "assignments_declined",
    "assignments_expired",
    "alert_ack_time_s",
    "alert_close_time_s",
)


# --- Kafka and HTTP plumbing --------------------------------------------------------


def order_topic(settings: CommonSettings) -> str:
    return settings.kafka_topic_prefix + ORDER_EVENTS


async def publish_events(
    settings: CommonSettings, order_events: Sequence[OrderEvent]
) -> int:
    """Store events, then publish them keyed by order (one order, one partition).

    Stored first, as the write path does: the ledger (and dispatch) apply only
    records the event store holds. Sends are pipelined and awaited together;
    aiokafka keeps one batch in flight per partition, so the order within a
    partition is the order of the calls.
    """
    await store_events(settings, order_events)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", linger_ms=5
    )
    await producer.start()
    try:
        pending = [
            await producer.send(
                order_topic(settings),
                value=record_value(event),
                key=str(event.order_id).encode(),
                headers=KAFKA_HEADERS,
            )
            for event in order_events
        ]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return len(order_events)


def metrics_settings(settings: CommonSettings, **overrides: object) -> MetricsSettings:
    """The metrics app on the test's database and topics.

    The background alert evaluation (real clock, default rules) runs once at start-up
    and then not again during a test, so tests call `alerts.evaluate` themselves.
    """
    return service_settings(
        settings,
        MetricsSettings,
        **({"alert_interval_seconds": 3600.0} | overrides),
    )


@asynccontextmanager
async def metrics_client(
    settings: CommonSettings, **overrides: object
) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(metrics_settings(settings, **overrides))) as client:
        yield client


def dispatcher(settings: CommonSettings) -> dict[str, str]:
    return bearer(settings)(Role.DISPATCHER, "dispatcher-metrics-tests")


def consumed(payload: JsonDict) -> int:
    """Records applied so far, from the provenance's per-partition offsets."""
    return sum(int(p["offset"]) + 1 for p in payload["as_of"]["positions"])


async def get_indicators(
    client: httpx.AsyncClient, headers: dict[str, str], **params: str
) -> JsonDict:
    response = await client.get("/v1/indicators", params=params, headers=headers)
    assert response.status_code == 200, response.text
    payload: JsonDict = response.json()
    return payload


async def wait_caught_up(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    records: int,
    *,
    timeout: float = 30.0,
) -> JsonDict:
    """Poll GET /v1/indicators until the consumer has applied `records` records."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        payload = await get_indicators(client, headers, window="all")
        if consumed(payload) >= records:
            assert consumed(payload) == records, payload["as_of"]
            return payload
        if loop.time() > deadline:
            raise AssertionError(
                f"metrics applied {consumed(payload)} of {records} records: "
                f"{payload['as_of']}"
            )
        await asyncio.sleep(0.1)


async def publish_and_catch_up(
    client: httpx.AsyncClient,
    settings: CommonSettings,
    order_events: Sequence[OrderEvent],
) -> JsonDict:
    """Publish events to a fresh topic and wait until `client`'s app applied them."""
    published = await publish_events(settings, order_events)
    return await wait_caught_up(client, dispatcher(settings), published)


async def fresh_topics(bootstrap: str) -> str:
    """A new topic prefix with every topic created (as the `topic_prefix` fixture)."""
    # uuid4, not `random`: hypothesis seeds the global `random` for each example.
    prefix = f"t{uuid4().hex[:10]}."
    await create_topics(
        bootstrap, {prefix + name: n for name, n in DEFAULT_PARTITIONS.items()}
    )
    return prefix


def settings_for(database_url: str, bootstrap: str, prefix: str) -> CommonSettings:
    """Settings like the `settings` fixture, for a database and prefix made here."""
    return CommonSettings(
        database_url=database_url,
        kafka_bootstrap_servers=bootstrap,
        kafka_topic_prefix=prefix,
        kafka_session_timeout_ms=2000,
        kafka_heartbeat_interval_ms=500,
        jwt_secret=TEST_JWT_SECRET,
    )


@asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[str]:
    """Serve `app` with uvicorn on a loopback port (for streaming responses, which
    httpx's ASGI transport buffers whole); yields the base URL."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(30):
            while not server.started:
                if task.done():
                    task.result()
                    raise AssertionError("uvicorn stopped before it started")
                await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def without_provenance(payload: JsonDict) -> JsonDict:
    return {k: v for k, v in payload.items() if k != "as_of"}


# --- comparing ----------------------------------------------------------------------


def differences(actual: Any, expected: Any, path: str = "") -> list[str]:
    """Where two JSON values differ (floats compared to 1e-9 relative)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        found: list[str] = []
        for key in sorted(set(expected) | set(actual)):
            if key not in actual or key not in expected:
                found.append(f"{path}.{key}: missing on one side")
                continue
            found += differences(actual[key], expected[key], f"{path}.{key}")
        return found
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{path}: {len(actual)} items, expected {len(expected)}"]
        return [
            d
            for n, (a, e) in enumerate(zip(actual, expected, strict=True))
            for d in differences(a, e, f"{path}[{n}]")
        ]
    numbers = (int, float)
    if (
        isinstance(actual, numbers)
        and isinstance(expected, numbers)
        and not isinstance(actual, bool)
        and not isinstance(expected, bool)
    ):
        if math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-9):
            return []
        return [f"{path}: {actual!r} != expected {expected!r}"]
    return (
        [] if actual == expected else [f"{path}: {actual!r} != expected {expected!r}"]
    )


def assert_indicators(actual: JsonDict, expected: JsonDict, context: str = "") -> None:
    found = differences(actual, expected)
    assert not found, f"{context}\n" + "\n".join(found)


# --- the brute-force reference ------------------------------------------------------


@dataclass(frozen=True)
class Where:
    """A window [start, end) and slices, as the query parameters say."""

    start: datetime | None = None
    end: datetime | None = None
    region: str | None = None
    category: str | None = None
    urgency: str | None = None
    technician_id: str | None = None
    channel: str | None = None
    period: str | None = None  # "peak" or "offpeak" (see `is_peak`)

    def slice_filter(self, now: datetime | None = None) -> SliceFilter:
        """The same window and slices for the service's queries, at `now`."""
        return SliceFilter(**asdict(self), now=now)

    def params(self) -> dict[str, str]:
        found: dict[str, str] = {"window": "all"}
        if self.start is not None:
            found["from"] = self.start.isoformat()
        if self.end is not None:
            found["to"] = self.end.isoformat()
        for name in (
            "region",
            "category",
            "urgency",
            "technician_id",
            "channel",
            "period",
        ):
            value = getattr(self, name)
            if value is not None:
                found[name] = value
        return found


@dataclass
class _Complaint:
    filed_at: datetime
    resolved_at: datetime | None = None


@dataclass
class _Rating:
    at: datetime
    score: int
    nps: int | None


@dataclass
class _Order:
    """One order as indicators.md describes it, walked from its events."""

    region: str
    category: str
    urgency: str
    warranty: bool
    created_at: datetime
    channel: str
    # Every assignment: [technician, since, until (None: still held)].
    held: list[list[Any]] = field(default_factory=list)
    cancelled_at: datetime | None = None
    # Each `declined` and `assignment_expired`: (time, that technician).
    declines: list[tuple[datetime, str]] = field(default_factory=list)
    expiries: list[tuple[datetime, str]] = field(default_factory=list)
    accepted: tuple[datetime, str] | None = None
    # The first accept's time + its eta_minutes.
    promised_arrival: datetime | None = None
    arrived: tuple[datetime, str] | None = None
    diagnosed: tuple[datetime, str | None] | None = None
    diagnosed_after_visit: bool = False
    visits: int = 0
    priced: int = 0
    quotes: dict[UUID, int] = field(default_factory=dict)
    approved_total: int | None = None
    # final_total of the follow-up completions before the first final one.
    charged: int = 0
    # (time, outcome, performer, final_total summed over the visits)
    final: tuple[datetime, Outcome, str | None, int] | None = None
    approved_at_final: int | None = None
    reopened: bool = False
    cancelled: bool = False
    awaiting: bool = True
    rating: _Rating | None = None
    complaints: dict[str, _Complaint] = field(default_factory=dict)
    # The quote out and not yet decided, and the waits on the customer: [since,
    # until (None: still)], opened only before the first arrival.
    pending_quote: UUID | None = None
    waits: list[list[Any]] = field(default_factory=list)


def _walk(order_events: Iterable[OrderEvent]) -> dict[UUID, _Order]:
    """Each order's definitions from its events (in version order, once each)."""
    by_order: dict[UUID, list[OrderEvent]] = {}
    seen: set[UUID] = set()
    for event in order_events:
        if event.event_id in seen:
            continue
        seen.add(event.event_id)
        by_order.setdefault(event.order_id, []).append(event)
    orders: dict[UUID, _Order] = {}
    for order_id, stream in by_order.items():
        stream.sort(key=lambda e: e.version)
        first = stream[0]
        assert isinstance(first.data, events.Created), "a history starts with created"
        created = first.data
        order = _Order(
            region=created.region,
            category=created.category,
            urgency=created.urgency.value,
            warranty=created.warranty,
            created_at=first.time,
            channel=created.channel.value,
        )
        for event in stream[1:]:
            _step(order, event)
        orders[order_id] = order
    return orders


def _stop_waiting(order: _Order, time: datetime) -> None:
    order.pending_quote = None
    if order.waits and order.waits[-1][1] is None:
        order.waits[-1][1] = time


def _track_waits(order: _Order, event: OrderEvent) -> None:
    data, time = event.data, event.time
    match data:
        case events.Priced():
            if order.pending_quote is None and order.arrived is None:
                order.waits.append([time, None])
            order.pending_quote = event.event_id
        case (
            events.QuoteApproved(quote_event_id=quote)
            | events.QuoteRejected(quote_event_id=quote)
        ) if quote == order.pending_quote:
            _stop_waiting(order, time)
        case events.Cancelled() | events.Reopened():
            _stop_waiting(order, time)
        case _:
            pass


def _step(order: _Order, event: OrderEvent) -> None:
    _track_waits(order, event)
    data, time = event.data, event.time
    before_final = order.final is None
    performer = event.actor.id if event.actor.role is Role.TECHNICIAN else None
    match data:
        case events.Assigned() | events.Declined() | events.AssignmentExpired():
            _unassign(order, time)
        case events.Cancelled() | events.Reopened():
            _unassign(order, time)
        case _:
            pass
    match data:
        case events.Assigned(technician_id=technician):
            order.held.append([technician, time, None])
        case events.Declined(technician_id=technician):
            order.declines.append((time, technician))
        case events.AssignmentExpired(technician_id=technician):
            order.expiries.append((time, technician))
        case events.Accepted(technician_id=technician, eta_minutes=eta) if (
            order.accepted is None
        ):
            order.accepted = (time, technician)
            order.promised_arrival = time + timedelta(minutes=eta)
        case events.Arrived(technician_id=technician):
            if before_final:
                order.visits += 1
            if order.arrived is None:
                order.arrived = (time, technician)
        case events.Diagnosed() if order.diagnosed is None:
            order.diagnosed = (time, performer)
            order.diagnosed_after_visit = order.arrived is not None
        case events.Priced(total=total):
            order.quotes[event.event_id] = total
            if before_final:
                order.priced += 1
        case events.QuoteApproved(quote_event_id=quote):
            order.approved_total = order.quotes[quote]
        case events.Completed(outcome=outcome, final_total=total) if outcome.is_final:
            if before_final:
                order.final = (time, outcome, performer, order.charged + total)
                order.approved_at_final = order.approved_total
            order.awaiting = False
        case events.Completed(final_total=total) if before_final:
            order.charged += total  # a follow-up visit's charge
        case events.Reopened():
            order.reopened = True
            order.awaiting = True
            order.approved_total = None
        case events.Cancelled():
            order.cancelled = True
            if order.cancelled_at is None:
                order.cancelled_at = time
        case events.Rated(score=score, nps=nps) if order.rating is None:
            order.rating = _Rating(time, score, nps)
        case events.ComplaintFiled(complaint_id=cid) if cid not in order.complaints:
            order.complaints[cid] = _Complaint(filed_at=time)
        case events.ComplaintResolved(complaint_id=cid):
            complaint = order.complaints.get(cid)
            if complaint is not None and complaint.resolved_at is None:
                complaint.resolved_at = time
        case _:
            pass


def _unassign(order: _Order, time: datetime) -> None:
    for span in order.held:
        if span[2] is None:
            span[2] = time


def _holder(order: _Order, instant: datetime) -> str | None:
    for technician, since, until in order.held:
        if since <= instant and (until is None or instant <= until):
            return str(technician)
    return None


@dataclass(frozen=True)
class RefCalendar:
    """A business calendar as the reference reads it: weekday (Monday 0) ->
    [("09:00", "18:00"), ...] local wall time ("24:00" ends a day), holidays."""

    time_zone: str
    hours: Mapping[int, Sequence[tuple[str, str]]]
    holidays: frozenset[date] = frozenset()

    def working(self, instant: datetime) -> bool:
        local = instant.astimezone(ZoneInfo(self.time_zone))
        if local.date() in self.holidays:
            return False
        minute = local.hour * 60 + local.minute + local.second / 60
        return any(
            _minutes(start) <= minute < _minutes(end)
            for start, end in self.hours.get(local.weekday(), ())
        )


def _minutes(wall: str) -> int:
    hours, minutes = wall.split(":")
    return int(hours) * 60 + int(minutes)


@dataclass(frozen=True)
class RefClocks:
    """Calendars per urgency (left out: 24x7) and whether quotes pause the clocks."""

    calendars: Mapping[str, RefCalendar] = field(default_factory=dict)
    pause_while_quoted: bool = False


def reference_due(
    order: _Order,
    target_minutes: float,
    stop: datetime | None,
    clocks: RefClocks,
) -> datetime | None:
    """The deadline by brute force (see the module docstring); None: not due."""
    calendar = clocks.calendars.get(order.urgency)
    waits = tuple(tuple(w) for w in order.waits) if clocks.pause_while_quoted else ()
    if calendar is None and not waits:
        return order.created_at + timedelta(minutes=target_minutes)
    # The walk is slow: the same clock asked again (every slice of a test asks
    # for every order) is looked up.
    key = (order.created_at, target_minutes, stop, repr(calendar), waits)
    if key not in _WALKED:
        _WALKED[key] = _walk_due(order, target_minutes, stop, calendar, waits)
    return _WALKED[key]


_WALKED: dict[tuple[Any, ...], datetime | None] = {}


def _walk_due(
    order: _Order,
    target_minutes: float,
    stop: datetime | None,
    calendar: RefCalendar | None,
    waits: tuple[tuple[Any, ...], ...],
) -> datetime | None:
    left = timedelta(minutes=target_minutes)
    pauses = []
    for since, until in waits:
        if stop is not None and since >= stop:
            continue
        if stop is not None and (until is None or until > stop):
            until = stop
        pauses.append((since, until))
    t = order.created_at
    while t - order.created_at < timedelta(days=400):
        step_end = t.replace(second=0, microsecond=0) + timedelta(minutes=1)
        paused = False
        for since, until in pauses:
            for edge in (since, until):
                if edge is not None and t < edge < step_end:
                    step_end = edge
            if since <= t and until is None:
                return None  # held by an open wait before the target ran out
            paused = paused or (since <= t and (until is None or t < until))
        if not paused and (calendar is None or calendar.working(t)):
            if step_end - t > left:
                return t + left
            left -= step_end - t
        t = step_end
    return None


def _sla(
    order: _Order,
    reached: tuple[datetime, str] | None,
    due: datetime | None,
    *,
    visit: bool = False,
) -> tuple[datetime, bool, str | None] | None:
    """(at, met, technician) of an SLA measurement, None when left out.

    On the arrive clock (`visit`), an order diagnosed remotely before any visit by
    the deadline is left out: nobody was due on site (see the README's deviations).
    """
    if due is None:
        return None
    if reached is not None and reached[0] <= due:
        return reached[0], True, reached[1]
    if order.cancelled_at is not None and order.cancelled_at <= due:
        return None
    remote = order.diagnosed is not None and not order.diagnosed_after_visit
    if visit and remote and order.diagnosed is not None and order.diagnosed[0] <= due:
        return None
    return due, False, _holder(order, due)


def _rank(percent: int, n: int) -> int:
    """Nearest rank: ceil(percent / 100 x n), exactly."""
    return -(-percent * n // 100)


def distribution(values: Sequence[float]) -> JsonDict:
    if not values:
        return {
            "count": 0,
            "mean": None,
            "p50": None,
            "p90": None,
            "p95": None,
            "max": None,
        }
    ordered = sorted(values)
    n = len(ordered)
    return {
        "count": n,
        "mean": sum(ordered) / n,
        "p50": ordered[_rank(50, n) - 1],
        "p90": ordered[_rank(90, n) - 1],
        "p95": ordered[_rank(95, n) - 1],
        "max": ordered[-1],
    }


def rate(flags: Sequence[bool]) -> JsonDict:
    numerator, denominator = sum(flags), len(flags)
    return {
        "value": numerator / denominator if denominator else None,
        "numerator": numerator,
        "denominator": denominator,
    }


def mean(values: Sequence[float]) -> JsonDict:
    return {
        "value": sum(values) / len(values) if values else None,
        "count": len(values),
    }


SHANGHAI: Final = ZoneInfo("Asia/Shanghai")


def is_peak(at: datetime) -> bool:
    """indicators.md v2's default peak: 18:00-08:00 Shanghai time, and all of
    Saturday and Sunday (the measurement's `at`, local)."""
    local = at.astimezone(SHANGHAI)
    return local.weekday() >= 5 or local.hour >= 18 or local.hour < 8


def reference_indicators(
    order_events: Iterable[OrderEvent],
    where: Where = Where(),
    now: datetime | None = None,
    clocks: RefClocks = RefClocks(),
) -> JsonDict:
    """Every indicator of indicators.md for one slice, computed by brute force, at
    `now` (default: the clock), the SLA clocks under `clocks` (default: 24x7)."""
    orders = list(_walk(order_events).values())
    now = datetime.now(UTC) if now is None else now

    def inside(at: datetime | None) -> bool:
        return (
            at is not None
            and (where.start is None or at >= where.start)
            and (where.end is None or at < where.end)
            and (where.period is None or (where.period == "peak") == is_peak(at))
        )

    def sliced(order: _Order, technician: str | None) -> bool:
        return (
            (where.region is None or order.region == where.region)
            and (where.category is None or order.category == where.category)
            and (where.urgency is None or order.urgency == where.urgency)
            and (where.channel is None or order.channel == where.channel)
            and (where.technician_id is None or technician == where.technician_id)
        )

    def accepted_by(order: _Order) -> str | None:
        return None if order.accepted is None else order.accepted[1]

    def finisher(order: _Order) -> str | None:
        return None if order.final is None else order.final[2]

    response: list[float] = []
    sla_accept: list[bool] = []
    arrival: list[float] = []
    sla_arrival: list[bool] = []
    eta_errors: list[float] = []
    diagnosis: list[float] = []
    resolution: list[float] = []
    complaint_times: list[float] = []
    ftf: list[bool] = []
    resolved: list[bool] = []
    rework: list[bool] = []
    complained: list[bool] = []
    cancelled: list[bool] = []
    deviation: list[float] = []
    overrun: list[bool] = []
    requote: list[bool] = []
    quoted_first: list[bool] = []
    scores: list[float] = []
    npses: list[int] = []
    created = completed = open_now = overdue = declined = expired = 0

    for o in orders:
        if sliced(o, accepted_by(o)):
            open_now += int(not o.cancelled and o.awaiting)
            if inside(o.created_at):
                created += 1
                cancelled.append(o.cancelled)
        if o.accepted is not None:
            at, technician = o.accepted
            if inside(at) and sliced(o, technician):
                response.append((at - o.created_at).total_seconds())
        if o.arrived is not None:
            at, technician = o.arrived
            if inside(at) and sliced(o, technician):
                arrival.append((at - o.created_at).total_seconds())
                if o.promised_arrival is not None:
                    eta_errors.append((at - o.promised_arrival).total_seconds())
        accept_due = reference_due(
            o, ACCEPT_TARGET_MIN[o.urgency], o.accepted and o.accepted[0], clocks
        )
        arrive_due = reference_due(
            o, ARRIVE_TARGET_MIN[o.urgency], o.arrived and o.arrived[0], clocks
        )
        for flags, reached, due, visit in (
            (sla_accept, o.accepted, accept_due, False),
            (sla_arrival, o.arrived, arrive_due, True),
        ):
            measured = _sla(o, reached, due, visit=visit)
            if measured is None:
                continue
            at, met, charged = measured
            if inside(at) and at <= now and sliced(o, charged):
                flags.append(met)
        due = accept_due
        if (
            not o.cancelled
            and o.awaiting
            and o.accepted is None
            and due is not None
            and due <= now
            and sliced(o, _holder(o, due))
        ):
            overdue += 1
        declined += sum(inside(t) and sliced(o, who) for t, who in o.declines)
        expired += sum(inside(t) and sliced(o, who) for t, who in o.expiries)
        if o.diagnosed is not None and o.diagnosed_after_visit:
            assert o.arrived is not None
            at, performer = o.diagnosed
            if inside(at) and sliced(o, performer):
                diagnosis.append((at - o.arrived[0]).total_seconds())
        finished_by = finisher(o)
        if o.final is not None and inside(o.final[0]) and sliced(o, finished_by):
            at, outcome, _, final_total = o.final
            completed += 1
            resolution.append((at - o.created_at).total_seconds())
            fixed = outcome is Outcome.FIXED
            ftf.append(fixed and o.visits <= 1 and not o.reopened)
            resolved.append(fixed)
            rework.append(o.reopened)
            complained.append(bool(o.complaints))
            approved = o.approved_at_final
            if approved is not None and approved > 0:
                deviation.append((final_total - approved) / approved)
                overrun.append(final_total > approved)
                requote.append(o.priced > 1)
            if not (o.warranty and final_total == 0):
                quoted_first.append(approved is not None)
        if o.rating is not None and inside(o.rating.at) and sliced(o, finished_by):
            scores.append(o.rating.score)
            if o.rating.nps is not None:
                npses.append(o.rating.nps)
        for complaint in o.complaints.values():
            done = complaint.resolved_at
            if done is not None and inside(done) and sliced(o, finished_by):
                complaint_times.append((done - complaint.filed_at).total_seconds())

    promoters = sum(n >= 9 for n in npses)
    detractors = sum(n <= 6 for n in npses)
    return {
        "response_time_s": distribution(response),
        "arrival_time_s": distribution(arrival),
        "diagnosis_time_s": distribution(diagnosis),
        "resolution_time_s": distribution(resolution),
        "complaint_resolution_s": distribution(complaint_times),
        "first_time_fix_rate": rate(ftf),
        "resolution_rate": rate(resolved),
        "rework_rate": rate(rework),
        "complaint_rate": rate(complained),
        "cancellation_rate": rate(cancelled),
        "price_deviation_mean": mean(deviation),
        "overrun_rate": rate(overrun),
        "requote_rate": rate(requote),
        "quoted_before_work_rate": rate(quoted_first),
        "rating_mean": mean(scores),
        "csat": rate([s >= 4 for s in scores]),
        "nps": {
            "value": 100 * (promoters - detractors) / len(npses) if npses else None,
            "count": len(npses),
        },
        "ratings_count": {"value": len(scores)},
        "sla_accept_rate": rate(sla_accept),
        "sla_arrival_rate": rate(sla_arrival),
        "eta_error_s": distribution(eta_errors),
        "eta_kept_rate": rate([error <= ETA_KEPT_S for error in eta_errors]),
        "orders_created": {"value": created},
        "orders_completed": {"value": completed},
        "orders_open": {"value": open_now},
        "orders_unaccepted_overdue": {"value": overdue},
        "assignments_declined": {"value": declined},
        "assignments_expired": {"value": expired},
        # The histories here open no alert case (tests/integration/
        # test_alert_cases.py measures those).
        "alert_ack_time_s": distribution([]),
        "alert_close_time_s": distribution([]),
    }


# --- hand-written histories at explicit times --------------------------------------


class Timed:
    """One order posted through `decide` step by step at explicit times."""

    def __init__(
        self,
        technician: str,
        *,
        region: str,
        category: str = "washing_machine",
        urgency: Urgency = Urgency.NORMAL,
        warranty: bool = False,
        channel: Channel = Channel.APP,
    ) -> None:
        self.story = Story(technician=Actor(Role.TECHNICIAN, technician))
        self.region, self.category = region, category
        self.urgency, self.warranty, self.channel = urgency, warranty, channel

    @property
    def events(self) -> list[OrderEvent]:
        return self.story.history

    @property
    def order_id(self) -> UUID:
        return self.story.order_id

    def _post(self, actor: Actor, data: OrderPayload, at: datetime) -> Timed:
        self.story.post(actor, data, at=at)
        return self

    def created(self, at: datetime) -> Timed:
        created = make_created(
            customer_id=self.story.customer.id,
            warranty=self.warranty,
            urgency=self.urgency,
            category=self.category,
            region=self.region,
            channel=self.channel,
        )
        return self._post(self.story.customer, created, at)

    def assigned(self, at: datetime, technician: str | None = None) -> Timed:
        """Assigned to `technician` (default: the order's current technician),
        who then becomes the order's technician."""
        if technician is not None:
            self.story.technician = Actor(Role.TECHNICIAN, technician)
        return self._post(AUTO_DISPATCH, make_assigned(self.story.technician.id), at)

    def declined(self, at: datetime) -> Timed:
        tech = self.story.technician
        return self._post(tech, make_declined(tech.id), at)

    def expired(self, at: datetime) -> Timed:
        """Dispatch ends the current assignment, left unanswered."""
        assigned = self.story.current.assigned_event_id
        assert assigned is not None
        expired = make_assignment_expired(self.story.technician.id, assigned)
        return self._post(AUTO_DISPATCH, expired, at)

    def accepted(self, at: datetime, eta_minutes: int = 45) -> Timed:
        tech = self.story.technician
        return self._post(tech, make_accepted(tech.id, eta_minutes=eta_minutes), at)

    def arrived(self, at: datetime) -> Timed:
        tech = self.story.technician
        return self._post(tech, make_arrived(tech.id), at)

    def diagnosed(self, at: datetime, *, remote: bool = False) -> Timed:
        return self._post(self.story.technician, make_diagnosed(remote=remote), at)

    def priced(self, at: datetime, total: int) -> Timed:
        return self._post(self.story.technician, make_priced(total), at)

    def approved(self, at: datetime) -> Timed:
        quote = self.story.current.current_quote
        assert quote is not None
        return self._post(self.story.customer, make_quote_approved(quote.event_id), at)

    def rejected(self, at: datetime) -> Timed:
        quote = self.story.current.current_quote
        assert quote is not None
        return self._post(self.story.customer, make_quote_rejected(quote.event_id), at)

    def completed(
        self, at: datetime, total: int, outcome: Outcome = Outcome.FIXED
    ) -> Timed:
        done = make_completed(total, outcome=outcome)
        return self._post(self.story.technician, done, at)

    def rated(
        self, at: datetime, score: int, nps: int | None = None, **dimensions: int
    ) -> Timed:
        rated = events.Rated(
            score=score,
            nps=nps,
            dimensions=events.Dimensions.model_validate(dimensions)
            if dimensions
            else None,
        )
        return self._post(self.story.customer, rated, at)

    def reopened(self, at: datetime) -> Timed:
        return self._post(self.story.customer, make_reopened(), at)

    def cancelled(self, at: datetime) -> Timed:
        return self._post(self.story.customer, make_cancelled(), at)

    def complaint_filed(self, at: datetime, complaint_id: str) -> Timed:
        return self._post(self.story.customer, make_complaint_filed(complaint_id), at)

    def complaint_resolved(self, at: datetime, complaint_id: str) -> Timed:
        resolved = make_complaint_resolved(complaint_id)
        return self._post(self.story.dispatcher, resolved, at)


def all_events(orders: Iterable[Timed]) -> list[OrderEvent]:
    return [event for order in orders for event in order.events]


# --- random valid histories ---------------------------------------------------------

PRICES: Final = (0, 5_000, 8_000, 12_000, 20_000)


@dataclass
class RandomOrder:
    """Drives one order through `decide` with random but valid choices."""

    rng: random.Random
    story: Story
    technicians: Sequence[str]
    open_complaints: list[str] = field(default_factory=list)

    def later(self, low: int = 1, high: int = 90) -> datetime:
        return self.story.clock + timedelta(minutes=self.rng.randint(low, high))

    def post(
        self, actor: Actor, data: OrderPayload, low: int = 1, high: int = 90
    ) -> OrderEvent:
        return self.story.post(actor, data, at=self.later(low, high))

    def tech(self, technician_id: str) -> Actor:
        return Actor(Role.TECHNICIAN, technician_id)

    def maybe_complain(self, chance: float) -> None:
        if self.rng.random() < chance:
            filed = make_complaint_filed()
            self.post(self.story.customer, filed)
            self.open_complaints.append(filed.complaint_id)

    def resolve_some(self) -> None:
        # Only after a final completion (see the module docstring of the tests).
        for complaint_id in list(self.open_complaints):
            if self.rng.random() < 0.6:
                self.post(
                    self.story.dispatcher,
                    make_complaint_resolved(complaint_id),
                    1,
                    600,
                )
                self.open_complaints.remove(complaint_id)

    def assign(self) -> str | None:
        """Assign someone who has not declined; None when nobody is left."""
        left = [t for t in self.technicians if t not in self.story.current.declined_by]
        if not left:
            return None
        technician = self.rng.choice(left)
        self.post(AUTO_DISPATCH, make_assigned(technician), 1, 30)
        return technician

    def cancel_now(self, chance: float) -> bool:
        if self.rng.random() < chance:
            self.post(self.story.customer, make_cancelled())
            return True
        return False

    def price_and_approve(self) -> int:
        """priced (maybe rejected and priced again, maybe revised) and approved."""
        technician = self.tech(self.story.current.technician_id or "")
        self.post(technician, make_priced(self.rng.choice(PRICES)))
        if self.rng.random() < 0.2:
            self.post(
                self.story.customer,
                make_quote_rejected(self._quote()),
            )
            self.post(technician, make_priced(self.rng.choice(PRICES)))
        self.post(self.story.customer, make_quote_approved(self._quote()))
        if self.rng.random() < 0.15:  # the quote is revised after approval
            self.post(technician, make_priced(self.rng.choice(PRICES)))
            self.post(self.story.customer, make_quote_approved(self._quote()))
        quote = self.story.current.approved_quote
        assert quote is not None
        return quote.total

    def _quote(self) -> UUID:
        quote = self.story.current.current_quote
        assert quote is not None
        return quote.event_id

    def final_total(self, approved: int) -> int:
        choice = self.rng.random()
        if choice < 0.2:
            return approved * 105 // 100  # the most the tolerance allows
        if choice < 0.3:
            return approved + approved // 100
        if choice < 0.45:
            return approved // 2
        return approved

    def still_to_charge(self, approved: int) -> int:
        """What the visits should charge in all, less what earlier visits did."""
        return max(0, self.final_total(approved) - self.story.current.charged_total)

    def work(self, *, first_round: bool) -> bool:
        """Visits until a final completion; False if cancelled or not finished."""
        current = self.story.current
        technician = self.tech(current.technician_id or "")
        eta = self.rng.randint(0, 240)
        self.post(technician, make_accepted(technician.id, eta_minutes=eta), 1, 400)
        for visit in range(3):
            approved = self.story.current.approved_quote
            under_quote = False
            if visit == 0 and first_round and self.rng.random() < 0.1:
                self.post(technician, make_diagnosed(remote=True), 1, 60)
            else:
                low, high = 5, 3000
                if visit == 0 and self.rng.random() < 0.7:  # near the promise
                    low, high = max(1, eta - 40), eta + 40
                self.post(technician, make_arrived(technician.id), low, high)
                # A follow-up visit may complete under the approved quote.
                under_quote = (
                    visit > 0 and approved is not None and self.rng.random() < 0.5
                )
                if not under_quote:
                    self.post(technician, make_diagnosed(), 1, 60)
            if not under_quote and first_round and self.cancel_now(0.05):
                return False
            if under_quote:
                assert approved is not None
                total = self.still_to_charge(approved.total)
            elif self.story.current.under_warranty and self.rng.random() < 0.5:
                total = 0
            else:
                total = self.still_to_charge(self.price_and_approve())
            follow_up = visit < 2 and self.rng.random() < 0.2
            if follow_up:
                outcome = Outcome.FOLLOW_UP_REQUIRED
                # Part of the work charged now, or nothing until it is done.
                total = total // 2 if self.rng.random() < 0.5 else 0
            else:
                outcome = (
                    Outcome.FIXED if self.rng.random() < 0.75 else Outcome.NOT_FIXED
                )
            self.post(technician, make_completed(total, outcome=outcome), 10, 240)
            if not follow_up:
                return True
        return False

    def rate(self) -> None:
        if self.story.current.rated or self.rng.random() < 0.3:
            return
        dimensions = {
            name: self.rng.randint(1, 5)
            for name in (
                "attitude",
                "professionalism",
                "communication",
                "punctuality",
                "price_fairness",
            )
            if self.rng.random() < 0.5
        }
        rated = events.Rated(
            score=self.rng.randint(1, 5),
            nps=self.rng.randint(0, 10) if self.rng.random() < 0.7 else None,
            dimensions=events.Dimensions.model_validate(dimensions)
            if dimensions
            else None,
            comment=events.RatingComment(text="ok", language="en"),
        )
        self.post(self.story.customer, rated, 1, 2000)

    def run(self, *, created: datetime, region: str, category: str) -> None:
        story = self.story
        warranty = self.rng.random() < 0.25
        story.post(
            story.customer,
            make_created(
                customer_id=story.customer.id,
                warranty=warranty,
                urgency=self.rng.choice(list(Urgency)),
                category=category,
                region=region,
                channel=self.rng.choice(list(Channel)),
            ),
            at=created,
        )
        self.maybe_complain(0.05)
        if self.cancel_now(0.08):
            return
        first = self.assign()
        assert first is not None
        if self.rng.random() < 0.15:
            # Left unanswered: dispatch expires it (often past the accept target)
            # and offers the order again.
            assigned = story.current.assigned_event_id
            assert assigned is not None
            self.post(AUTO_DISPATCH, make_assignment_expired(first, assigned), 5, 300)
            if self.cancel_now(0.2):
                return
            first = self.assign()
            assert first is not None
        if self.rng.random() < 0.05:
            return  # never answered: overdue now
        if self.rng.random() < 0.2:
            self.post(self.tech(first), make_declined(first), 1, 30)
            if self.cancel_now(0.3) or self.assign() is None:
                return
        if self.cancel_now(0.05):
            return
        self.maybe_complain(0.05)
        if not self.work(first_round=True):
            return
        for _ in range(2):  # up to two reopens
            self.maybe_complain(0.2)
            self.resolve_some()
            self.rate()
            if self.story.current.status is not OrderStatus.COMPLETED:
                return
            if self.rng.random() >= 0.25:
                return
            self.post(story.customer, make_reopened(), 1, 3000)
            if self.cancel_now(0.1):
                return  # cancelled after a completion and a reopen
            if self.rng.random() < 0.3 or self.assign() is None:
                return  # left open
            if not self.work(first_round=False):
                return


def random_histories(
    rng: random.Random,
    count: int,
    *,
    start: datetime,
    technicians: Sequence[str],
    regions: Sequence[str],
    categories: Sequence[str],
    spread: timedelta = timedelta(days=3),
) -> list[list[OrderEvent]]:
    """`count` valid order histories created within `spread` after `start`."""
    histories = []
    for _ in range(count):
        created = start + timedelta(
            minutes=rng.randint(0, int(spread.total_seconds() // 60))
        )
        order = RandomOrder(rng, Story(), technicians)
        order.run(
            created=created,
            region=rng.choice(list(regions)),
            category=rng.choice(list(categories)),
        )
        histories.append(order.story.history)
    return histories


def interleave(
    rng: random.Random, histories: Sequence[Sequence[OrderEvent]]
) -> list[OrderEvent]:
    """All events, orders mixed at random, each order's own order kept."""
    queues = [list(h) for h in histories if h]
    mixed: list[OrderEvent] = []
    while queues:
        queue = rng.choice(queues)
        mixed.append(queue.pop(0))
        if not queue:
            queues.remove(queue)
    return mixed
