"""A realistic, deterministic stream of `OrderEvent`s for the metrics benchmark.

Valid histories of a dozen shapes are built once through the real domain
(`tests.builders.Story`: `decide` + `evolve`, as `happy_path_history()` does): the
happy path with a rating, complaints filed and resolved, a decline and reassignment,
a rejected quote and a requote, a follow-up visit, a reopen with rework, a
not-fixed outcome, a free warranty repair, cancellations and orders still in
progress. Each synthetic order copies one of them with fresh order and event ids
(a quote decision's `quote_event_id` follows the copy), technicians from a pool,
its own region, category and urgency, its own rating, and its own times: the
created times spread over `--days` days ending now, and the gaps between steps
drawn per step type (log-normal), so the duration indicators have real spreads.
A share of events are recorded late, as an offline device syncs them.

Orders are interleaved as in production: a window of concurrently open orders,
each event advancing a random one of them; an order that reaches its last event
makes room for the next. A consumer batch therefore touches many orders that
already have a facts row, as the live consumer's batches do.

Only the window's orders are held in memory, so the generator's own memory is
flat over the run (the benchmark measures the RSS of the process that applies).
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, Generic, TypeVar
from uuid import UUID, SafeUUID

from shared.domain import events
from shared.domain.actors import Actor, Role
from shared.domain.events import OrderPayload, Outcome, Urgency
from shared.domain.lifecycle import OrderEvent
from tests.builders import (
    Story,
    make_complaint_filed,
    make_complaint_resolved,
    make_declined,
    make_technician,
    random_ref,
)

REGIONS: Final = (
    ("shanghai-pudong", 18),
    ("shanghai-xuhui", 12),
    ("beijing-chaoyang", 14),
    ("beijing-haidian", 10),
    ("shenzhen-nanshan", 10),
    ("guangzhou-tianhe", 9),
    ("hangzhou-xihu", 7),
    ("chengdu-wuhou", 6),
    ("wuhan-hongshan", 5),
    ("nanjing-gulou", 4),
    ("xian-yanta", 3),
    ("suzhou-gusu", 2),
)
CATEGORIES: Final = (
    ("washing_machine", 25),
    ("air_conditioner", 22),
    ("refrigerator", 15),
    ("water_heater", 12),
    ("range_hood", 8),
    ("dishwasher", 7),
    ("television", 6),
    ("microwave", 5),
)
URGENCIES: Final = ((Urgency.NORMAL, 70), (Urgency.URGENT, 22), (Urgency.EMERGENCY, 8))
# The region the benchmark's region slice reads (the largest one).
SLICE_REGION: Final = REGIONS[0][0]

# Median minutes before an event of each type (log-normal, sigma below).
MEDIAN_GAP_MINUTES: Final[dict[type[events.Payload], float]] = {
    events.Created: 0.0,
    events.Assigned: 2.0,
    events.Declined: 6.0,
    events.Accepted: 12.0,
    events.Arrived: 75.0,
    events.Diagnosed: 18.0,
    events.Priced: 9.0,
    events.QuoteApproved: 14.0,
    events.QuoteRejected: 30.0,
    events.Completed: 55.0,
    events.Rated: 240.0,
    events.Cancelled: 25.0,
    events.Reopened: 2 * 24 * 60.0,
    events.ComplaintFiled: 20 * 60.0,
    events.ComplaintResolved: 30 * 60.0,
}
GAP_SIGMA: Final = 0.8
# Urgent work goes faster: the gaps up to the first arrival are scaled by this.
URGENCY_PACE: Final = {
    Urgency.NORMAL: 1.0,
    Urgency.URGENT: 0.45,
    Urgency.EMERGENCY: 0.2,
}
LATE_SHARE: Final = 0.01  # recorded 6..180 minutes after it happened (offline sync)
SCORES: Final = ((5, 55), (4, 25), (3, 10), (2, 5), (1, 5))

T = TypeVar("T")


# --- the histories ---------------------------------------------------------------


def _happy(story: Story, *, outcome: Outcome = Outcome.FIXED, rate: int = 5) -> Story:
    story.create()
    story.assign()
    story.accept()
    story.arrive()
    story.diagnose()
    story.price()
    story.approve()
    story.complete(outcome=outcome)
    if rate:
        story.rate(rate)
    return story


def _complaint(story: Story, *, resolve: bool = True) -> None:
    complaint = random_ref("cmp")
    story.post(story.customer, make_complaint_filed(complaint))
    if resolve:
        story.post(story.dispatcher, make_complaint_resolved(complaint))


def happy(story: Story) -> None:
    """created .. completed (fixed), rated: 9 events."""
    _happy(story)


def happy_complaint(story: Story) -> None:
    """The happy path, then a complaint filed and resolved: 11 events."""
    _happy(story, rate=3)
    _complaint(story)


def two_complaints(story: Story) -> None:
    """The happy path, a resolved complaint and one still open: 12 events."""
    _happy(story, rate=2)
    _complaint(story)
    _complaint(story, resolve=False)


def declined(story: Story) -> None:
    """The first technician declines, a second one does the work: 11 events."""
    story.create()
    first = story.technician
    story.assign()
    story.post(first, make_declined(first.id))
    story.assign(make_technician())
    story.accept()
    story.arrive()
    story.diagnose()
    story.price()
    story.approve()
    story.complete()
    story.rate(4)


def requoted(story: Story) -> None:
    """A quote rejected, a revised one approved: 11 events."""
    story.create()
    story.assign()
    story.accept()
    story.arrive()
    story.diagnose()
    story.price(15_000)
    story.reject()
    story.price(12_000)
    story.approve()
    story.complete()
    story.rate(4)


def follow_up(story: Story) -> None:
    """A follow-up completion charging part of the work, a second visit with a new
    quote, then fixed, the visits' charges summing to that quote: 14 events."""
    story.create()
    story.assign()
    story.accept()
    story.arrive()
    story.diagnose()
    story.price()
    story.approve()
    story.complete(4_000, outcome=Outcome.FOLLOW_UP_REQUIRED)
    story.arrive()
    story.diagnose()
    story.price(17_000)  # the revised quote covers both visits
    story.approve()
    story.complete(10_000)
    story.rate(4)


def reopened(story: Story) -> None:
    """Fixed and rated, reopened under warranty, reworked: 15 events."""
    _happy(story, rate=4)
    story.reopen()
    story.assign()
    story.accept()
    story.arrive()
    story.diagnose()
    story.complete(0)


def not_fixed(story: Story) -> None:
    """Not fixed, rated low, a complaint: 11 events."""
    _happy(story, outcome=Outcome.NOT_FIXED, rate=1)
    _complaint(story)


def warranty_free(story: Story) -> None:
    """A warranty order repaired free, without a quote: 7 events."""
    story.create(warranty=True)
    story.assign()
    story.accept()
    story.arrive()
    story.diagnose()
    story.complete(0)
    story.rate(5)


def cancelled_assigned(story: Story) -> None:
    """Cancelled after assignment: 3 events."""
    story.create()
    story.assign()
    story.cancel()


def cancelled_early(story: Story) -> None:
    """Cancelled before anyone took it: 2 events."""
    story.create()
    story.cancel()


def in_progress(story: Story) -> None:
    """Still open: the technician is on site: 5 events."""
    story.create()
    story.assign()
    story.accept()
    story.arrive()
    story.diagnose()


# (shape, weight): a mean of ~10 events per order, like the brief's 1M over 100k.
SHAPES: Final[tuple[tuple[Callable[[Story], None], int], ...]] = (
    (happy, 34),
    (happy_complaint, 12),
    (two_complaints, 6),
    (declined, 10),
    (requoted, 8),
    (follow_up, 7),
    (reopened, 6),
    (not_fixed, 5),
    (warranty_free, 4),
    (cancelled_assigned, 3),
    (cancelled_early, 2),
    (in_progress, 3),
)


@dataclass(frozen=True, slots=True)
class Template:
    """One valid history and the ids a copy replaces."""

    shape: str
    events: tuple[OrderEvent, ...]
    technicians: tuple[str, ...]  # technician ids of the template, in first use

    @classmethod
    def of(cls, shape: Callable[[Story], None]) -> Template:
        story = Story()
        shape(story)
        technicians: list[str] = []
        for event in story.history:
            tech = getattr(event.data, "technician_id", None)
            if isinstance(tech, str) and tech not in technicians:
                technicians.append(tech)
        return cls(shape.__name__, tuple(story.history), tuple(technicians))


class _Weighted(Generic[T]):
    """A weighted choice with precomputed cumulative weights."""

    __slots__ = ("_choices", "_cumulative", "_total")

    def __init__(self, choices: Sequence[tuple[T, float]]) -> None:
        self._choices = [c for c, _ in choices]
        self._cumulative = list(itertools.accumulate(w for _, w in choices))
        self._total = self._cumulative[-1]

    def pick(self, rng: random.Random) -> T:
        return self._choices[
            bisect.bisect_right(self._cumulative, rng.random() * self._total)
        ]


_VERSION_4_CLEAR: Final = ~((0xF000 << 64) | (0xC000 << 48))
_VERSION_4_SET: Final = (0x4000 << 64) | (0x8000 << 48)


def _uuid(rng: random.Random) -> UUID:
    """A random version-4 UUID from `rng` (what `UUID(int=.., version=4)` builds,
    without its argument checks: this is most of the generator's time)."""
    value = (rng.getrandbits(128) & _VERSION_4_CLEAR) | _VERSION_4_SET
    made = object.__new__(UUID)
    object.__setattr__(made, "int", value)
    object.__setattr__(made, "is_safe", SafeUUID.unknown)
    return made


# --- copies ----------------------------------------------------------------------


@dataclass(slots=True)
class _OpenOrder:
    """A copy being emitted: its template and what it replaces, event by event."""

    template: int  # index into the stream's templates
    order_id: UUID
    technicians: dict[str, str]
    region: str
    category: str
    urgency: Urgency
    clock: datetime
    new_ids: dict[UUID, UUID] = field(default_factory=dict)
    next: int = 0


class EventStream:
    """`total` events of synthetic orders (see the module docstring)."""

    def __init__(
        self,
        *,
        total: int,
        window: int,
        technicians: int,
        days: float,
        seed: int,
        now: datetime | None = None,
    ) -> None:
        if total < 1 or window < 1 or technicians < 1 or days <= 0:
            raise ValueError("events, window, technicians and days must be positive")
        self.total = total
        self._rng = random.Random(seed)
        self._templates = [Template.of(shape) for shape, _ in SHAPES]
        weights = [w for _, w in SHAPES]
        self._pick_template = _Weighted(
            list(zip(range(len(SHAPES)), weights, strict=True))
        )
        self.mean_events_per_order = sum(
            len(t.events) * w for t, w in zip(self._templates, weights, strict=True)
        ) / sum(weights)
        # Technicians differ in how much work they get (a long tail).
        self._pick_technician = _Weighted(
            [(f"tech-{n:04d}", 1.0 / (1 + n / 50)) for n in range(technicians)]
        )
        self._pick_region = _Weighted(REGIONS)
        self._pick_category = _Weighted(CATEGORIES)
        self._pick_urgency = _Weighted(URGENCIES)
        self._pick_score = _Weighted(SCORES)
        now = now or datetime.now(UTC)
        self.orders_expected = max(1, round(total / self.mean_events_per_order))
        # Created times over [now - days, now - 6 h]; the last steps of the last
        # orders land around now, so a 24 h window holds a realistic slice.
        self._first = now - timedelta(days=days)
        self._spacing = (
            timedelta(days=days) - timedelta(hours=6)
        ) / self.orders_expected
        self.window = window
        self._open: list[_OpenOrder] = []
        # Payload copies that do not depend on the order's own ids, made once.
        self._payloads: dict[tuple[object, ...], OrderPayload] = {}
        self._prebuild_payloads(technicians)
        self.orders_started = 0
        self.emitted = 0
        self.shape_counts: dict[str, int] = {}
        self.late = 0

    def _prebuild_payloads(self, technicians: int) -> None:
        """Every payload variant, made up front: the generator's memory then stays
        flat over the run instead of filling its cache as it goes."""
        for index, template in enumerate(self._templates):
            for position, event in enumerate(template.events):
                data = event.data
                match data:
                    case events.Created():
                        for region, _ in REGIONS:
                            for category, _ in CATEGORIES:
                                for urgency, _ in URGENCIES:
                                    self._payloads[
                                        (index, region, category, urgency)
                                    ] = data.model_copy(
                                        update={
                                            "region": region,
                                            "category": category,
                                            "urgency": urgency,
                                        }
                                    )
                    case (
                        events.Assigned()
                        | events.Declined()
                        | events.Accepted()
                        | events.Arrived()
                    ):
                        for n in range(technicians):
                            technician = f"tech-{n:04d}"
                            self._payloads[(index, position, technician)] = (
                                data.model_copy(update={"technician_id": technician})
                            )
                    case events.Rated():
                        for score, _ in SCORES:
                            for nps in range(11):
                                self._payloads[("rated", score, nps)] = data.model_copy(
                                    update={"score": score, "nps": nps}
                                )
                    case _:
                        pass

    def _new_order(self) -> _OpenOrder:
        rng = self._rng
        index = self._pick_template.pick(rng)
        template = self._templates[index]
        self.shape_counts[template.shape] = self.shape_counts.get(template.shape, 0) + 1
        start = self._first + self._spacing * (self.orders_started + rng.random() - 0.5)
        self.orders_started += 1
        return _OpenOrder(
            template=index,
            order_id=_uuid(rng),
            technicians={
                t: self._pick_technician.pick(rng) for t in template.technicians
            },
            region=self._pick_region.pick(rng),
            category=self._pick_category.pick(rng),
            urgency=self._pick_urgency.pick(rng),
            clock=start,
        )

    def _payload(
        self, key: tuple[object, ...], make: Callable[[], OrderPayload]
    ) -> OrderPayload:
        found = self._payloads.get(key)
        if found is None:
            found = self._payloads[key] = make()
        return found

    def _copy(self, order: _OpenOrder) -> OrderEvent:
        rng = self._rng
        position = order.next
        source = self._templates[order.template].events[position]
        order.next += 1
        data = source.data
        median = MEDIAN_GAP_MINUTES[type(data)]
        if median:
            if position < 4:  # up to the first arrival: urgency sets the pace
                median *= URGENCY_PACE[order.urgency]
            minutes = median * math.exp(GAP_SIGMA * rng.gauss(0.0, 1.0))
            order.clock += timedelta(minutes=minutes)
        event_id = order.new_ids.get(source.event_id)
        if event_id is None:
            event_id = order.new_ids[source.event_id] = _uuid(rng)
        match data:
            case events.Created():
                created = data
                data = self._payload(
                    (order.template, order.region, order.category, order.urgency),
                    lambda: created.model_copy(
                        update={
                            "region": order.region,
                            "category": order.category,
                            "urgency": order.urgency,
                        }
                    ),
                )
            case (
                events.Assigned()
                | events.Declined()
                | events.Accepted()
                | events.Arrived()
            ):
                technician = order.technicians[data.technician_id]
                original = data
                data = self._payload(
                    (order.template, position, technician),
                    lambda: original.model_copy(update={"technician_id": technician}),
                )
            case events.QuoteApproved() | events.QuoteRejected():
                quote = order.new_ids.get(data.quote_event_id)
                if quote is None:
                    quote = order.new_ids[data.quote_event_id] = _uuid(rng)
                data = data.model_copy(update={"quote_event_id": quote})
            case events.Rated():
                score = self._pick_score.pick(rng)
                nps = min(10, max(0, score * 2 + rng.randint(-2, 1)))
                rated = data
                data = self._payload(
                    ("rated", score, nps),
                    lambda: rated.model_copy(update={"score": score, "nps": nps}),
                )
            case _:
                pass
        actor = source.actor
        if actor.role is Role.TECHNICIAN and actor.id in order.technicians:
            actor = Actor(Role.TECHNICIAN, order.technicians[actor.id])
        recorded = order.clock + timedelta(seconds=0.05 + 1.5 * rng.random())
        if rng.random() < LATE_SHARE:
            recorded += timedelta(minutes=rng.uniform(6, 180))
            self.late += 1
        return OrderEvent(
            event_id=event_id,
            order_id=order.order_id,
            version=source.version,
            time=order.clock,
            recorded_at=recorded,
            actor=actor,
            data=data,
            correlation_id=source.correlation_id,
            causation_id=source.causation_id,
            device_id=source.device_id,
            device_sequence=source.device_sequence,
        )

    def take(self, count: int) -> list[OrderEvent]:
        """The next `count` events (fewer at the end of the stream)."""
        out: list[OrderEvent] = []
        rng = self._rng
        opened = self._open
        while len(out) < count and self.emitted < self.total:
            while len(opened) < self.window:
                opened.append(self._new_order())
            slot = rng.randrange(len(opened))
            order = opened[slot]
            out.append(self._copy(order))
            self.emitted += 1
            if order.next >= len(self._templates[order.template].events):
                opened[slot] = opened[-1]
                opened.pop()
        return out
