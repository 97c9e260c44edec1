"""Metrics' business rules, free of I/O: SLA targets, alert rules, slices, rollups.

indicators.md's rules live here once; the SQL (catalog, rollup) and the alert loop
read them. Must not import any I/O framework.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any, Final, TypeAlias

from services.metrics.clocks import calendar_content, calendar_from_content
from shared.domain.peak_hours import DEFAULT_PEAK_HOURS, PeakHours, Period
from shared.domain.sla_clock import BusinessCalendar


class Kind(StrEnum):
    DISTRIBUTION = "distribution"
    RATE = "rate"
    MEAN = "mean"
    COUNT = "count"
    NPS = "nps"


# --- SLA targets ----------------------------------------------------------------------


@dataclass(frozen=True)
class SlaTargets:
    """Minutes per urgency (indicators.md defaults); configurable."""

    accept: Mapping[str, float]
    arrive: Mapping[str, float]
    version: str = "sla-2025-01"
    # eta_kept_rate's tolerance: an arrival at most this late against the promised
    # one keeps the ETA (indicators.md v2, "ETA").
    eta_kept_s: float = 900.0
    # The accept and arrive clocks' business calendars per urgency (indicators.md
    # v2, "Business calendars"); an urgency left out runs 24x7.
    calendars: Mapping[str, BusinessCalendar] = field(default_factory=dict)
    # Whether the clocks pause while the order waits on the customer (`quoted`).
    pause_while_quoted: bool = False

    def business_calendars(self) -> dict[str, BusinessCalendar]:
        """The calendars that are not 24x7 (the default), by urgency."""
        return {
            str(urgency): calendar
            for urgency, calendar in sorted(self.calendars.items())
            if not calendar.is_always
        }


DEFAULT_SLA: Final = SlaTargets(
    accept={"emergency": 15, "urgent": 60, "normal": 240},
    arrive={"emergency": 120, "urgent": 480, "normal": 2880},
)


def sla_json(sla: SlaTargets) -> str:
    """The targets as canonical JSON (what the rollups record they counted with,
    and the stored deadlines were computed with). Calendars and the pause appear
    only when not the defaults, so the default policy's record never changed."""
    content: dict[str, Any] = {
        "accept": {str(k): float(v) for k, v in sla.accept.items()},
        "arrive": {str(k): float(v) for k, v in sla.arrive.items()},
        "eta_kept_s": float(sla.eta_kept_s),
    }
    if calendars := sla.business_calendars():
        content["calendars"] = {
            urgency: calendar_content(calendar)
            for urgency, calendar in calendars.items()
        }
    if sla.pause_while_quoted:
        content["pause_while_quoted"] = True
    return json.dumps(content, sort_keys=True)


def sla_from_json(text: str) -> SlaTargets:
    content = json.loads(text)
    return SlaTargets(
        accept=content["accept"],
        arrive=content["arrive"],
        # Targets recorded before the ETA indicators counted with the default.
        eta_kept_s=content.get("eta_kept_s", SlaTargets.eta_kept_s),
        calendars={
            urgency: calendar_from_content(calendar)
            for urgency, calendar in content.get("calendars", {}).items()
        },
        pause_while_quoted=bool(content.get("pause_while_quoted", False)),
    )


def eta_kept(error_s: float | None, tolerance_s: float) -> bool | None:
    """Whether an arrival kept its ETA (None: no promise or no arrival)."""
    return None if error_s is None else error_s <= tolerance_s


# --- alert rules ----------------------------------------------------------------------


@dataclass(frozen=True)
class AlertRule:
    """`indicator`'s `statistic` per `scope` column over `window`, against a threshold."""

    name: str
    indicator: str
    statistic: str  # "p90" of a distribution, or "value" of a rate
    scope: str  # "region" or "technician_id"
    window: timedelta
    above: bool  # breach when the value is above (True) or below (False) the threshold
    threshold: float
    min_samples: int
    # A comparison of two slices (e.g. "peak"): the statistic over that period
    # minus the same statistic over all hours is what meets the threshold, and
    # both sides need `min_samples` (None: the statistic itself).
    compare_period: Period | None = None


NOW: Final = timedelta(0)
"""The window of a rule over a count kept "now" (`NOW_COUNTS`), not over a period."""
NOW_COUNTS: Final = ("orders_unaccepted_overdue",)

DEFAULT_RULES: Final = (
    AlertRule(
        "slow_response",
        "response_time_s",
        "p90",
        "region",
        timedelta(hours=1),
        above=True,
        threshold=240 * 60,
        min_samples=10,
    ),
    AlertRule(
        "low_csat",
        "csat",
        "value",
        "region",
        timedelta(hours=24),
        above=False,
        threshold=0.8,
        min_samples=20,
    ),
    AlertRule(
        "price_overrun",
        "overrun_rate",
        "value",
        "technician_id",
        timedelta(days=7),
        above=True,
        threshold=0.10,
        min_samples=10,
    ),
    # indicators.md (v2): per region, now, orders_unaccepted_overdue >= 3; counts
    # are whole, so "above 2.5" is ">= 3". Its samples are the orders it counts.
    AlertRule(
        "unaccepted_overdue",
        "orders_unaccepted_overdue",
        "value",
        "region",
        NOW,
        above=True,
        threshold=2.5,
        min_samples=1,
    ),
    # The seeds' "peak-period response time must not exceed the average": per
    # region over a week, the peak mean response time above the all-hours mean.
    AlertRule(
        "slow_peak_response",
        "response_time_s",
        "mean",
        "region",
        timedelta(days=7),
        above=True,
        threshold=0.0,
        min_samples=10,
        compare_period=Period.PEAK,
    ),
)


def samples(value: Mapping[str, Any]) -> int:
    """How many observations an indicator value rests on."""
    return int(value.get("count", value.get("denominator", 0)))


def breached(rule: AlertRule, value: float | None, samples: int) -> bool:
    """A breach needs a value, enough samples, and the wrong side of the threshold."""
    if value is None or samples < rule.min_samples:
        return False
    return value > rule.threshold if rule.above else value < rule.threshold


# --- slices ---------------------------------------------------------------------------

ATTRIBUTES: Final = ("region", "category", "urgency", "channel")
"""Order attributes a slice filters on (besides `technician_id`)."""


@dataclass(frozen=True)
class SliceFilter:
    start: datetime | None = None
    end: datetime | None = None
    region: str | None = None
    category: str | None = None
    urgency: str | None = None
    technician_id: str | None = None
    channel: str | None = None
    # Peak or off-peak by the local time of each measurement's "at" under
    # `peak_hours` (None: all hours).
    period: Period | None = None
    peak_hours: PeakHours = DEFAULT_PEAK_HOURS
    # The server's now: a censored SLA breach counts once its instant is at or
    # before it (None: not capped, every stored measurement counts).
    now: datetime | None = None


ROLLED_DIMENSIONS: Final = ("region", "category", "urgency", "channel", "technician_id")
"""Dimensions kept in the daily rollups, one at a time."""


def rollup_dimension(where: SliceFilter) -> tuple[str, str] | None:
    """The rollup rows (dimension, value) a slice reads; None: not rolled up.

    One dimension at a time: a slice on two of them is answered from the facts.
    So is a period: rollup hours are UTC hours, and a peak boundary may cut one
    (a configured 18:30, or a zone whose offset is not whole hours).
    """
    if where.period is not None:
        return None
    chosen = [(d, getattr(where, d)) for d in ROLLED_DIMENSIONS]
    given = [(d, v) for d, v in chosen if v is not None]
    if len(given) > 1:
        return None
    return given[0] if given else ("", "")


@dataclass(frozen=True)
class Span:
    """A window cut at UTC midnights: whole days in between, partial edges around."""

    # Whole days [from, to) (None: unbounded on that side); None: no whole day.
    whole: tuple[date | None, date | None] | None
    edges: tuple[tuple[datetime, datetime], ...]  # partial [from, to) ranges


# The exclusive end of an open window in the calendar's last day (the one
# microsecond it leaves out is beyond any stored time: times are bounded on write).
END_OF_TIME: Final = datetime.max.replace(tzinfo=UTC)


def midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def split_window(start: datetime | None, end: datetime | None) -> Span:
    """Whole UTC days of [start, end) and the partial ranges at its edges."""
    first_day = None
    if start is not None:
        first_day = start.astimezone(UTC).date()
        if midnight(first_day) < start:
            if first_day == date.max:
                # The calendar's last day: no whole day follows, all is one edge.
                last = END_OF_TIME if end is None else end
                return Span(None, ((start, last),) if start < last else ())
            first_day += timedelta(days=1)
    end_day = None if end is None else end.astimezone(UTC).date()
    if first_day is not None and end_day is not None and first_day >= end_day:
        # No whole day inside: the window is one partial range (or empty).
        assert start is not None
        assert end is not None
        return Span(None, ((start, end),) if start < end else ())
    edges: list[tuple[datetime, datetime]] = []
    if start is not None and first_day is not None and start < midnight(first_day):
        edges.append((start, midnight(first_day)))
    if end is not None and end_day is not None and midnight(end_day) < end:
        edges.append((midnight(end_day), end))
    return Span((first_day, end_day), tuple(edges))


HOUR: Final = timedelta(hours=1)
WEEK: Final = timedelta(days=7)


def week_of(day: date) -> date:
    """The Monday starting the (ISO) week a day falls in: the weekly rollups' key."""
    return day - timedelta(days=day.weekday())


@dataclass(frozen=True)
class Weeks:
    """Whole days cut at Mondays: whole weeks in between, whole days around them."""

    weeks: tuple[date | None, date | None] | None  # [from, to) Mondays (None: open)
    days: tuple[tuple[date | None, date | None], ...]  # [from, to) days


def split_weeks(first: date | None, end: date | None) -> Weeks:
    """The whole weeks of the whole days [first, end) and the days around them."""
    first_week = None
    if first is not None:
        first_week = week_of(first)
        if first_week < first:
            if date.max - first_week < WEEK:  # no Monday after it in the calendar
                return Weeks(None, ((first, end),))
            first_week += WEEK
    end_week = None if end is None else week_of(end)
    if first_week is not None and end_week is not None and first_week >= end_week:
        return Weeks(None, ((first, end),))
    days: list[tuple[date | None, date | None]] = []
    if first is not None and first_week is not None and first < first_week:
        days.append((first, first_week))
    if end is not None and end_week is not None and end_week < end:
        days.append((end_week, end))
    return Weeks((first_week, end_week), tuple(days))


def hour_of(at: datetime) -> datetime:
    """The UTC hour an instant falls in (the hourly rollups' key)."""
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class Cut:
    """A window cut for the rollups: whole days, whole hours, and at most two
    partial hours (the only parts read from the per-order facts)."""

    days: tuple[date | None, date | None] | None  # as Span.whole
    hours: tuple[tuple[datetime, datetime], ...]  # whole hours [from, to)
    edges: tuple[tuple[datetime, datetime], ...]  # partial hours [from, to)
    # What the days and hours cover together, one range (None: unbounded side);
    # None when they cover nothing.
    rolled: tuple[datetime | None, datetime | None] | None


def _cut_hours(
    start: datetime, end: datetime
) -> tuple[tuple[datetime, datetime] | None, list[tuple[datetime, datetime]]]:
    """The whole hours of a bounded range and the partial ones around them."""
    first = hour_of(start)
    if first < start:
        if end - first <= HOUR:  # inside one hour (also: no hour after 23:00 of
            return None, [(start, end)]  # the calendar's last day to step to)
        first += HOUR
    last = hour_of(end)
    if first >= last:  # no whole hour: the partial ones on either side of `first`
        return None, [(a, b) for a, b in ((start, first), (first, end)) if a < b]
    partial = []
    if start < first:
        partial.append((start, first))
    if last < end:
        partial.append((last, end))
    return (first, last), partial


def cut_window(start: datetime | None, end: datetime | None) -> Cut:
    """Whole UTC days of [start, end), whole hours at its edges, partial hours."""
    span = split_window(start, end)
    hours: list[tuple[datetime, datetime]] = []
    edges: list[tuple[datetime, datetime]] = []
    for low, high in span.edges:
        whole, partial = _cut_hours(low, high)
        if whole is not None:
            hours.append(whole)
        edges += partial
    rolled: tuple[datetime | None, datetime | None] | None = None
    if span.whole is not None:
        first, last = span.whole
        rolled = (
            None if first is None else midnight(first),
            None if last is None else midnight(last),
        )
    for low, high in hours:
        if rolled is None:
            rolled = (low, high)
        else:  # hours border the days (or the other hours) without a gap
            before, after = rolled
            rolled = (
                None if before is None else min(before, low),
                None if after is None else max(after, high),
            )
    return Cut(span.whole, tuple(hours), tuple(edges), rolled)


@dataclass(frozen=True)
class Reading:
    """How the rollups read a cut's whole days and hours: `days` and `hours` added,
    `less` (whole hours) subtracted."""

    days: tuple[date | None, date | None] | None  # as Cut.days
    hours: tuple[tuple[datetime, datetime], ...]
    less: tuple[tuple[datetime, datetime], ...]


# More whole hours of one day than this are read as the day less its other hours:
# a day's rows are about as many as three hours' (a technician's few orders a day
# fall in different hours), and a window ending now has no rows after now.
HOURS_READ_AT_MOST: Final = 12


def _within_days(a: datetime, b: datetime) -> list[tuple[datetime, datetime]]:
    """[a, b) cut at the UTC midnights inside it."""
    found = []
    while a.date() < (b - HOUR).date():
        found.append((a, midnight(a.date() + timedelta(days=1))))
        a = found[-1][1]
    return [*found, (a, b)]


def reading(cut: Cut) -> Reading:
    """The cut's days and hours, a day's hours over `HOURS_READ_AT_MOST` read as
    that whole day less its other hours. Counts subtract exactly; only a sum of
    values (`total`) may differ in its last bits from adding the hours."""
    if not cut.hours:
        return Reading(cut.days, cut.hours, ())
    hours: list[tuple[datetime, datetime]] = []
    less: list[tuple[datetime, datetime]] = []
    added: list[date] = []
    for low, high in cut.hours:
        for a, b in _within_days(low, high):
            day = a.date()
            if b - a <= HOUR * HOURS_READ_AT_MOST or day >= date.max - timedelta(1):
                hours.append((a, b))
                continue
            added.append(day)
            less += [
                (x, y)
                for x, y in ((midnight(day), a), (b, midnight(day + timedelta(1))))
                if x < y
            ]
    if not added:
        return Reading(cut.days, cut.hours, ())
    # The added days border the whole days (or each other): one range still.
    first, end = cut.days or (min(added), min(added))
    if first is not None:
        first = min(first, *added)
    if end is not None:
        end = max(end, max(added) + timedelta(1))
    return Reading((first, end), tuple(hours), tuple(less))


# --- exact distributions from mergeable buckets -----------------------------------------

_MANTISSA_STEPS: Final = 32
_EXPONENT_BIAS: Final = 1100


def bucket_of(value: float) -> int:
    """A histogram bucket key, increasing with the value (about 2-3% wide).

    Bucket bounds are exact binary fractions, so SQL can select a bucket's values with
    exact comparisons: the exact percentile is found in the one bucket holding its rank.
    """
    if value == 0 or math.isnan(value):
        return 0
    mantissa, exponent = math.frexp(abs(value))  # mantissa in [0.5, 1)
    step = int(mantissa * 2 * _MANTISSA_STEPS) - _MANTISSA_STEPS
    key = (exponent + _EXPONENT_BIAS) * _MANTISSA_STEPS + step
    return key if value > 0 else -key


def bucket_bounds(key: int) -> tuple[float, float, bool]:
    """(low, high, low_inclusive): the bucket is low <= v < high, or low < v <= high."""
    if key == 0:
        return (0.0, 0.0, True)
    magnitude = abs(key)
    exponent = magnitude // _MANTISSA_STEPS - _EXPONENT_BIAS
    step = magnitude % _MANTISSA_STEPS + _MANTISSA_STEPS
    low = math.ldexp(step / (2 * _MANTISSA_STEPS), exponent)
    high = math.ldexp((step + 1) / (2 * _MANTISSA_STEPS), exponent)
    return (low, high, True) if key > 0 else (-high, -low, False)


def nearest_rank(percent: float, count: int) -> int:
    """The 1-based rank of the nearest-rank percentile: ceil(p/100 x n), at least 1."""
    return max(1, math.ceil(round(percent * count, 9)))


# --- what each order fact contributes to the daily rollups ------------------------------

Row: TypeAlias = Mapping[str, Any]  # an `order_fact` / `complaint` row by column name


@dataclass(frozen=True)
class Rolled:
    """One indicator as Python over a facts row (the catalog's SQL, row by row).

    `at` and `technician` name a column of the row, or compute it from the row.
    """

    name: str
    kind: Kind
    at: str | Callable[[Row], datetime | None]
    technician: str | Callable[[Row], str | None]
    value: Callable[[Row], Any]
    population: Callable[[Row], bool] | None = None

    def at_of(self, row: Row) -> datetime | None:
        return self.at(row) if callable(self.at) else row[self.at]

    def technician_of(self, row: Row) -> str | None:
        found = self.technician
        return found(row) if callable(found) else row[found]


def _priced(row: Row) -> bool:
    return bool(row["approved_total"] is not None and row["approved_total"] > 0)


def _column(name: str) -> Callable[[Row], Any]:
    return lambda row: row[name]


# --- censoring of unanswered orders (indicators.md, "(v2) Additions") -------------------


def holder_at(assignments: str, instant: datetime) -> str | None:
    """The technician holding the order at `instant`, from `order_fact.assignments`.

    A span counts up to and including its end: a technician whose assignment
    ended exactly at a target's instant (declined or expired as it passed) held the
    order when it passed; of two spans meeting there, the earlier counts.
    """
    for technician, since, until in json.loads(assignments):
        if datetime.fromisoformat(since) <= instant and (
            until is None or instant <= datetime.fromisoformat(until)
        ):
            return str(technician)
    return None


DUE_COLUMNS: Final = {
    "first_accepted_at": "accept_due_at",
    "first_arrived_at": "arrive_due_at",
}
"""Where `order_fact` keeps each SLA clock's deadline, by the step that stops it."""


@dataclass(frozen=True)
class SlaMeasure:
    """An order's SLA measurement: at `at`, met or not."""

    at: datetime
    met: bool


def sla_measure(
    row: Row, reached: str, targets: Mapping[str, float], *, visit: bool = False
) -> SlaMeasure | None:
    """The accept (reached = first_accepted_at) or arrive SLA measurement of an order.

    The deadline is the row's stored one (`accept_due_at`, `arrive_due_at`: the
    clock's, under its business calendar), else created_at + target. Reached by
    it: met, at that time. Otherwise a breach at the deadline, whether or not reached later, unless cancelled at or before that
    instant (left out: None). An open order whose target is still ahead is already
    a breach at that instant: it counts once the instant is past
    (`SliceFilter.now`), and an event before it moves or removes it.

    `visit` (the arrive clock): an order diagnosed remotely, before any visit, at or
    before the instant is left out too. indicators.md v2 would count it as a breach,
    but no technician was due on site: remote fixes must not look like no-shows.
    """
    due = DUE_COLUMNS[reached]
    if due in row:
        # The stored deadline, under the business calendar (None: not due).
        deadline = row[due]
    elif (minutes := targets.get(row["urgency"])) is not None:
        deadline = row["created_at"] + timedelta(minutes=minutes)
    else:
        deadline = None
    if deadline is None:
        return None
    reached_at = row[reached]
    if reached_at is not None and reached_at <= deadline:
        return SlaMeasure(reached_at, True)
    cancelled = row["cancelled_at"]
    if cancelled is not None and cancelled <= deadline:
        return None
    if visit and _diagnosed_remotely_by(row, deadline):
        return None
    return SlaMeasure(deadline, False)


def _diagnosed_remotely_by(row: Row, instant: datetime) -> bool:
    diagnosed, arrived = row["first_diagnosed_at"], row["first_arrived_at"]
    return (
        diagnosed is not None
        and diagnosed <= instant
        and (arrived is None or arrived > diagnosed)
    )


def sla_technician(row: Row, measure: SlaMeasure, reacher: str) -> str | None:
    """Who an SLA measurement is charged to: who met it, or who held the order
    at the breach instant (indicators.md names nobody; see `holder_at`)."""
    if measure.met:
        return row[reacher]  # type: ignore[no-any-return]  # a text column
    return holder_at(row["assignments"], measure.at)


def _sla_rolled(
    name: str,
    reached: str,
    reacher: str,
    targets: Mapping[str, float],
    *,
    visit: bool = False,
) -> Rolled:
    def at(row: Row) -> datetime | None:
        measure = sla_measure(row, reached, targets, visit=visit)
        return None if measure is None else measure.at

    def technician(row: Row) -> str | None:
        measure = sla_measure(row, reached, targets, visit=visit)
        return None if measure is None else sla_technician(row, measure, reacher)

    def met(row: Row) -> bool:
        measure = sla_measure(row, reached, targets, visit=visit)
        return measure is not None and measure.met

    return Rolled(name, Kind.RATE, at, technician, met)


def order_rollups(sla: SlaTargets) -> tuple[Rolled, ...]:
    """The `order_fact` indicators as the rollups count them (see catalog.catalog)."""
    final, finisher = "first_final_at", "first_final_technician_id"
    accepted, arrived = "accepted_technician_id", "arrived_technician_id"
    return (
        Rolled(
            "response_time_s",
            Kind.DISTRIBUTION,
            "first_accepted_at",
            accepted,
            _column("response_time_s"),
        ),
        Rolled(
            "arrival_time_s",
            Kind.DISTRIBUTION,
            "first_arrived_at",
            arrived,
            _column("arrival_time_s"),
        ),
        Rolled(
            "diagnosis_time_s",
            Kind.DISTRIBUTION,
            "first_diagnosed_at",
            arrived,
            _column("diagnosis_time_s"),
        ),
        Rolled(
            "resolution_time_s",
            Kind.DISTRIBUTION,
            final,
            finisher,
            _column("resolution_time_s"),
        ),
        Rolled(
            "first_time_fix_rate", Kind.RATE, final, finisher, _column("first_time_fix")
        ),
        Rolled("resolution_rate", Kind.RATE, final, finisher, _column("resolved")),
        Rolled("rework_rate", Kind.RATE, final, finisher, _column("reopened")),
        Rolled(
            "complaint_rate", Kind.RATE, final, finisher, _column("complaint_filed")
        ),
        Rolled(
            "cancellation_rate",
            Kind.RATE,
            "created_at",
            accepted,
            lambda r: r["cancelled_at"] is not None,
        ),
        Rolled(
            "price_deviation_mean",
            Kind.MEAN,
            final,
            finisher,
            _column("price_deviation"),
            _priced,
        ),
        Rolled("overrun_rate", Kind.RATE, final, finisher, _column("overrun"), _priced),
        Rolled(
            "requote_rate", Kind.RATE, final, finisher, _column("requoted"), _priced
        ),
        Rolled(
            "quoted_before_work_rate",
            Kind.RATE,
            final,
            finisher,
            _column("quoted_before_work"),
            lambda r: r["free_warranty_completion"] is False,
        ),
        _sla_rolled("sla_accept_rate", "first_accepted_at", accepted, sla.accept),
        _sla_rolled(
            "sla_arrival_rate", "first_arrived_at", arrived, sla.arrive, visit=True
        ),
        Rolled(
            "eta_error_s",
            Kind.DISTRIBUTION,
            "first_arrived_at",
            arrived,
            _column("eta_error_s"),
        ),
        Rolled(
            "eta_kept_rate",
            Kind.RATE,
            "first_arrived_at",
            arrived,
            lambda r: eta_kept(r["eta_error_s"], sla.eta_kept_s),
            lambda r: r["eta_error_s"] is not None,
        ),
        Rolled(
            "orders_created", Kind.COUNT, "created_at", accepted, _column("order_id")
        ),
        Rolled("orders_completed", Kind.COUNT, final, finisher, _column("order_id")),
    )


COMPLAINT_ROLLUPS: Final = (
    Rolled(
        "complaint_resolution_s",
        Kind.DISTRIBUTION,
        "resolved_at",
        "technician_id",
        _column("resolution_s"),
    ),
)


def _of_kind(kind: str) -> Callable[[Row], bool]:
    return lambda row: bool(row["kind"] == kind)


UNACCEPTED_ROLLUPS: Final = tuple(
    Rolled(
        f"assignments_{kind}",
        Kind.COUNT,
        "at",
        "technician_id",
        _column("order_id"),
        population=_of_kind(kind),
    )
    for kind in ("declined", "expired")
)

# (dimension, dimension_value, hour, indicator, bucket) -> [n, hits, total]; the
# daily rollups' keys have the hour's day instead (`by_day`).
RollupKey: TypeAlias = tuple[str, str, datetime, str, int]


def _slices(row: Row, technician: str | None) -> Iterator[tuple[str, str]]:
    """(dimension, value) of every rollup slice a row counts in."""
    yield ("", "")
    for dimension in ("region", "category", "urgency"):
        yield (dimension, row[dimension])
    if row.get("channel") is not None:
        yield ("channel", row["channel"])
    if technician is not None:
        yield ("technician_id", technician)


def contributions(
    row: Row, rolled: tuple[Rolled, ...]
) -> Iterator[tuple[RollupKey, tuple[int, int, float]]]:
    """What one facts row adds to the rollups: (key, (n, hits, total))."""
    for indicator in rolled:
        at = indicator.at_of(row)
        if at is None:
            continue
        if indicator.population is not None and not indicator.population(row):
            continue
        value = indicator.value(row)
        bucket, part = 0, (1, 0, 0.0)
        match indicator.kind:
            case Kind.DISTRIBUTION | Kind.MEAN:
                if value is None:
                    continue
                part = (1, 0, float(value))
                if indicator.kind is Kind.DISTRIBUTION:
                    bucket = bucket_of(float(value))
            case Kind.RATE:
                part = (1, 1 if value else 0, 0.0)
            case Kind.COUNT | Kind.NPS:
                if value is None:
                    continue
        hour = hour_of(at)
        for dimension, member in _slices(row, indicator.technician_of(row)):
            yield (dimension, member, hour, indicator.name, bucket), part


def rollup_deltas(
    before: Sequence[Row], after: Sequence[Row], rolled: tuple[Rolled, ...]
) -> dict[RollupKey, list[float]]:
    """The hourly rollup changes that replace `before`'s contributions by `after`'s."""
    deltas: dict[RollupKey, list[float]] = {}
    for rows, sign in ((before, -1), (after, 1)):
        for row in rows:
            for key, (n, hits, total) in contributions(row, rolled):
                found = deltas.setdefault(key, [0, 0, 0.0])
                found[0] += sign * n
                found[1] += sign * hits
                found[2] += sign * total
    return {k: v for k, v in deltas.items() if v[0] or v[1] or v[2]}


LEVEL_DIMENSIONS: Final = (
    "attitude",
    "professionalism",
    "communication",
    "punctuality",
    "price_fairness",
)
RATING_LEVELS: Final = (5, 4, 3, 2, 1)


def rating_counters(row: Row) -> tuple[int, ...]:
    """A rating's counters in `rating_day`'s order (after the key columns)."""
    score, nps = row["score"], row["nps"]
    attitude = row["attitude"] if row["attitude"] is not None else score
    levels = tuple(
        1 if row[dimension] == level else 0
        for dimension in LEVEL_DIMENSIONS
        for level in RATING_LEVELS
    )
    return (
        1,
        1 if score >= 4 else 0,
        score,
        attitude,
        0 if nps is None else 1,
        1 if nps is not None and nps >= 9 else 0,
        1 if nps is not None and nps <= 6 else 0,
        *levels,
    )


def rating_deltas(rows: Sequence[Row]) -> dict[tuple[Any, ...], list[int]]:
    """What new ratings add to `rating_hour`, per (dimension, value, hour)."""
    deltas: dict[tuple[Any, ...], list[int]] = {}
    for row in rows:
        counters = rating_counters(row)
        hour = hour_of(row["rated_at"])
        for dimension, member in _slices(row, row["technician_id"]):
            found = deltas.setdefault((dimension, member, hour), [0] * len(counters))
            for i, count in enumerate(counters):
                found[i] += count
    return deltas


def _regrouped(
    hourly: Mapping[tuple[Any, ...], Sequence[float]],
    period: Callable[[datetime], tuple[Any, ...]],
) -> dict[tuple[Any, ...], list[float]]:
    """Hourly rollup changes summed per coarser period: a key is (dimension,
    dimension_value, hour, ...) and `period` gives what replaces the hour."""
    found: dict[tuple[Any, ...], list[float]] = {}
    for hour_key, change in hourly.items():
        key = (hour_key[0], hour_key[1], *period(hour_key[2]), *hour_key[3:])
        summed = found.get(key)
        if summed is None:
            found[key] = list(change)
        else:
            for i, part in enumerate(change):
                summed[i] += part
    return {key: change for key, change in found.items() if any(change)}


def by_day(
    hourly: Mapping[tuple[Any, ...], Sequence[float]],
) -> dict[tuple[Any, ...], list[float]]:
    """Hourly rollup changes summed per UTC day: the daily rollups' changes."""
    return _regrouped(hourly, lambda hour: (hour.date(),))


def by_week(
    hourly: Mapping[tuple[Any, ...], Sequence[float]],
) -> dict[tuple[Any, ...], list[float]]:
    """Hourly rollup changes summed per week: the weekly rollups' changes."""
    return _regrouped(hourly, lambda hour: (week_of(hour.date()),))


def all_time(
    hourly: Mapping[tuple[Any, ...], Sequence[float]],
) -> dict[tuple[Any, ...], list[float]]:
    """Hourly rollup changes summed over all time: the all-time rollups' changes."""
    return _regrouped(hourly, lambda hour: ())
