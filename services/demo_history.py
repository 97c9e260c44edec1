"""Thirty days of demo history, planned as the requests the apps would have sent.

`servicetrail up --demo` posts this plan (`services.demo_seeding`) so that a
newcomer's first dashboard tells a story: a few hundred orders over the past 30 days
with the durations of real field work (accepts in minutes, arrivals in hours,
repairs of hours, follow-up visits a day or two later, ratings and complaints after
that), three technicians clearly better than the rest and two clearly worse (slow to
accept, late, more rework, low ratings, charges above their quotes), a region slow to
answer at peak hours, a district nobody covers, and a few emergency orders whose
technician never answers (dispatch expires those assignments as soon as it looks).

The plan is pure and deterministic: for one seed and one `now` it gives the same
orders and steps, and each day's orders keep their local times of day whenever it
runs, so peak and off-peak hours fall alike. Every step carries its event `time` in
the past; a step that would come after `now` is left out with the rest of its order,
so the newest orders are still open, as they would be.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from typing import Any, Final
from uuid import NAMESPACE_URL, UUID, uuid5
from zoneinfo import ZoneInfo

from services.simulator import (
    CATEGORIES,
    DESCRIPTIONS,
    REGIONS,
    UNCOVERED_REGION,
    completed_data,
    diagnosed_data,
    items_total,
    price_item,
    priced_data,
    rated_data,
)
from shared.domain.events import Urgency
from shared.domain.indicators import SlaPolicy
from shared.domain.peak_hours import DEFAULT_PEAK_HOURS

HISTORY_DAYS: Final = 30
DEFAULT_ORDERS: Final = 300
DEFAULT_SEED: Final = 15
# The demo stack must take event times this far back (the default MAX_EVENT_AGE,
# the offline-sync grace, is 72 h); a margin over the history's 30 days.
DEMO_MAX_EVENT_AGE: Final = "P32D"
LOCAL_ZONE: Final = ZoneInfo("Asia/Shanghai")
DISPATCHER: Final = "demo-dispatcher"
# Answers slowly in the evenings and at weekends: short-staffed at peak hours.
SLOW_AT_PEAK_REGION: Final = "shenzhen-nanshan"
SLOW_AT_PEAK_WAIT_MINUTES: Final = (90, 300)
# Orders per region, in REGIONS' order: the slow region is the busiest.
REGION_WEIGHTS: Final = (10, 10, 10, 20)
# Elsewhere the evening shift is staffed: a little quicker at peak than on average.
STAFFED_PEAK_FACTOR: Final = 0.6
SLA: Final = SlaPolicy()
IDS: Final = uuid5(NAMESPACE_URL, "urn:servicetrail:demo-history")

# Orders per local hour of the day: quiet nights, busy mornings and evenings.
HOUR_WEIGHTS: Final = (
    1,
    1,
    1,
    1,
    1,
    1,
    2,
    3,
    5,
    6,
    6,
    6,
    5,
    5,
    6,
    6,
    6,
    6,
    7,
    7,
    7,
    6,
    4,
    2,
)
URGENCY_WEIGHTS: Final = {Urgency.NORMAL: 55, Urgency.URGENT: 30, Urgency.EMERGENCY: 15}
CHANNEL_WEIGHTS: Final = {"app": 50, "mini_program": 25, "phone": 15, "web": 10}
# The ETA a technician promises when accepting, in minutes, by urgency.
ETA_MINUTES: Final = {
    Urgency.EMERGENCY: (30, 80),
    Urgency.URGENT: (60, 300),
    Urgency.NORMAL: (120, 1500),
}


@dataclass(frozen=True, slots=True)
class Profile:
    """How a technician works: the ranges and shares the plan draws from."""

    label: str
    # Time to accept, as a share of the urgency's accept target (over 1: missed).
    accept_share: tuple[float, float]
    # Arrival after the promised ETA, in minutes (negative: early).
    late_minutes: tuple[int, int]
    repair_hours: tuple[float, float]
    fix_rate: float  # the final outcome is `fixed`
    follow_up_rate: float  # a second visit is needed
    stars: tuple[int, int, int, int, int]  # rating weights of 5, 4, 3, 2, 1 stars
    attitude_shift: int
    overrun_rate: float  # charged above the approved quote (within the 5%)
    decline_rate: float


EXCELLENT: Final = Profile(
    "excellent",
    accept_share=(0.05, 0.4),
    late_minutes=(-20, 5),
    repair_hours=(0.75, 2.0),
    fix_rate=0.97,
    follow_up_rate=0.04,
    stars=(80, 17, 3, 0, 0),
    attitude_shift=0,
    overrun_rate=0.0,
    decline_rate=0.02,
)
AVERAGE: Final = Profile(
    "average",
    accept_share=(0.15, 0.9),
    late_minutes=(-10, 20),
    repair_hours=(1.0, 3.0),
    fix_rate=0.9,
    follow_up_rate=0.1,
    stars=(45, 35, 12, 5, 3),
    attitude_shift=0,
    overrun_rate=0.0,
    decline_rate=0.06,
)
POOR: Final = Profile(
    "poor",
    accept_share=(0.4, 1.8),
    late_minutes=(15, 110),
    repair_hours=(1.5, 4.5),
    fix_rate=0.72,
    follow_up_rate=0.22,
    stars=(8, 20, 32, 25, 15),
    attitude_shift=-1,
    overrun_rate=0.5,
    decline_rate=0.15,
)


@dataclass(frozen=True, slots=True)
class DemoTechnician:
    technician_id: str
    name: str
    profile: Profile
    regions: tuple[str, ...]

    def registration(self) -> dict[str, Any]:
        """The body of dispatch's `POST /v1/technicians`."""
        return {
            "technician_id": self.technician_id,
            "name": self.name,
            "skills": list(CATEGORIES),
            "regions": list(self.regions),
            "certifications": ["refrigerant-handling"],
        }


PUDONG, MINHANG, HAIDIAN, NANSHAN = REGIONS
# Every covered region has four technicians; the poor ones cover three regions each,
# so they get more orders than anyone (and enough for their alerts).
TECHNICIANS: Final = (
    DemoTechnician("tech-zhou", "周师傅", EXCELLENT, (PUDONG, MINHANG)),
    DemoTechnician("tech-wu", "吴师傅", EXCELLENT, (HAIDIAN, NANSHAN)),
    DemoTechnician("tech-xu", "徐师傅", EXCELLENT, (MINHANG, HAIDIAN)),
    DemoTechnician("tech-he", "何师傅", AVERAGE, (PUDONG, NANSHAN)),
    DemoTechnician("tech-guo", "郭师傅", AVERAGE, (HAIDIAN, MINHANG)),
    DemoTechnician("tech-ma", "马师傅", POOR, (PUDONG, NANSHAN, HAIDIAN)),
    DemoTechnician("tech-sun", "孙师傅", POOR, (MINHANG, NANSHAN, PUDONG)),
)
# Emergency orders of the last hour left with this technician, who never answers.
SILENT_TECHNICIAN: Final = TECHNICIANS[5]
SILENT_ORDERS_MINUTES_AGO: Final = (50, 38, 27)
# Orders from the district nobody covers, waiting since this many hours.
UNCOVERED_ORDERS_HOURS_AGO: Final = (30, 20, 11, 6)


class Route(StrEnum):
    """Where a step is posted."""

    CREATE = "create"  # intake POST /v1/orders
    ASSIGN = "assign"  # dispatch POST /v1/orders/{id}/assign
    CUSTOMER = "customer"  # intake POST /v1/orders/{id}/events
    FIELD = "field"  # dispatch POST /v1/orders/{id}/events


@dataclass(frozen=True, slots=True)
class Step:
    """One request: who posts what, where, with which `time`."""

    at: datetime
    route: Route
    role: str
    subject: str
    type: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PlannedOrder:
    number: int
    region: str
    urgency: Urgency
    steps: tuple[Step, ...]

    def types(self) -> list[str]:
        return [step.type for step in self.steps]


@dataclass(frozen=True, slots=True)
class History:
    now: datetime
    technicians: tuple[DemoTechnician, ...]
    orders: tuple[PlannedOrder, ...]

    def steps(self) -> int:
        return sum(len(order.steps) for order in self.orders)


@dataclass
class _Story:
    """One order's steps, each after the one before; none later than `cutoff`.

    Once a step would come after the cutoff, it and every later step are left out,
    but ids are still handed out, so the story's randomness (and every other order)
    stays the same whenever the plan is made.
    """

    # "<seed>/<order number>": each step's id derives from it.
    key: str
    number: int
    customer: str
    clock: datetime
    cutoff: datetime
    steps: list[Step] = field(default_factory=list)
    cut: bool = False
    technician: str = ""
    _ids: int = 0

    def _next_id(self) -> UUID:
        self._ids += 1
        return uuid5(IDS, f"{self.key}/{self._ids}")

    def add(
        self,
        after: timedelta,
        route: Route,
        who: tuple[str, str],
        type_: str,
        fields: dict[str, Any],
    ) -> UUID:
        event_id = self._next_id()
        at = self.clock + after
        if self.cut or at > self.cutoff:
            self.cut = True
            return event_id
        self.clock = at
        body = {"id": str(event_id), "time": at.isoformat(), **fields}
        self.steps.append(Step(at, route, who[0], who[1], type_, body))
        return event_id

    def customer_posts(
        self, after: timedelta, type_: str, data: dict[str, Any]
    ) -> UUID:
        who = ("customer", self.customer)
        return self.add(
            after, Route.CUSTOMER, who, type_, {"type": type_, "data": data}
        )

    def technician_posts(
        self, after: timedelta, type_: str, data: dict[str, Any]
    ) -> UUID:
        who = ("technician", self.technician)
        return self.add(after, Route.FIELD, who, type_, {"type": type_, "data": data})

    def dispatcher_posts(
        self, after: timedelta, type_: str, data: dict[str, Any]
    ) -> UUID:
        who = ("dispatcher", DISPATCHER)
        return self.add(after, Route.FIELD, who, type_, {"type": type_, "data": data})

    def assign(self, after: timedelta, technician: str) -> None:
        self.technician = technician
        self.add(
            after,
            Route.ASSIGN,
            ("dispatcher", DISPATCHER),
            "assigned",
            {"technician_id": technician, "reason": "skills and region match"},
        )


def _minutes(rng: random.Random, low: float, high: float) -> timedelta:
    return timedelta(minutes=rng.uniform(low, high))


def _hours(rng: random.Random, low: float, high: float) -> timedelta:
    return timedelta(hours=rng.uniform(low, high))


class _Planner:
    """Draws every order from one random stream, in a fixed order."""

    def __init__(self, now: datetime, seed: int) -> None:
        self.now = now
        self.seed = seed
        self.rng = random.Random(seed)  # noqa: S311 - demo data, not security
        # A step must not come later than this: the server takes none from the future.
        self.cutoff = now - timedelta(minutes=1)

    def covering(self, region: str, *, besides: str = "") -> list[DemoTechnician]:
        return [
            t for t in TECHNICIANS if region in t.regions and t.technician_id != besides
        ]

    def created_times(self, orders: int) -> list[datetime]:
        """When each order was created: days weighted to grow towards today, local
        hours by `HOUR_WEIGHTS`; none in the last ten minutes."""
        rng = self.rng
        today = self.now.astimezone(LOCAL_ZONE).date()
        days = [today - timedelta(days=d) for d in range(HISTORY_DAYS - 1, -1, -1)]
        growth = [1 + 1.2 * n / (HISTORY_DAYS - 1) for n in range(HISTORY_DAYS)]
        times = []
        for _ in range(orders):
            day = rng.choices(days, weights=growth)[0]
            hour = rng.choices(range(24), weights=HOUR_WEIGHTS)[0]
            local = datetime.combine(day, time(hour, rng.randrange(60)), LOCAL_ZONE)
            times.append(local.astimezone(UTC))
        return sorted(t for t in times if t <= self.now - timedelta(minutes=10))

    def story(self, number: int, created_at: datetime) -> _Story:
        customer = f"demo-customer-{self.rng.randrange(1, 150)}"
        return _Story(
            f"{self.seed}/{number}", number, customer, created_at, self.cutoff
        )

    def create(
        self, story: _Story, *, region: str, urgency: Urgency, category: str
    ) -> None:
        rng = self.rng
        story.add(
            timedelta(0),
            Route.CREATE,
            ("customer", story.customer),
            "created",
            {
                "category": category,
                "region": region,
                "urgency": urgency.value,
                "description": rng.choice(DESCRIPTIONS),
                "warranty": rng.random() < 0.2,
                "channel": rng.choices(
                    list(CHANNEL_WEIGHTS), weights=list(CHANNEL_WEIGHTS.values())
                )[0],
                "contact": {
                    "name": "Demo Customer",
                    "phone": f"+86 139{rng.randrange(10**7, 10**8)}",
                    "address": f"{rng.randrange(1, 400)} Demo Road",
                },
            },
        )

    def order(self, number: int, created_at: datetime) -> PlannedOrder:
        """One ordinary order of the history, as far as it got by now."""
        rng = self.rng
        region = rng.choices(REGIONS, weights=REGION_WEIGHTS)[0]
        urgency = rng.choices(
            list(URGENCY_WEIGHTS), weights=list(URGENCY_WEIGHTS.values())
        )[0]
        story = self.story(number, created_at)
        self.create(
            story, region=region, urgency=urgency, category=rng.choice(CATEGORIES)
        )
        cancelled = rng.random() < 0.04
        technician = rng.choice(self.covering(region))
        story.assign(_minutes(rng, 1, 6), technician.technician_id)
        if cancelled:
            story.customer_posts(
                _minutes(rng, 5, 40), "cancelled", {"reason": "no longer needed"}
            )
            return PlannedOrder(number, region, urgency, tuple(story.steps))
        if rng.random() < technician.profile.decline_rate:
            story.technician_posts(
                _minutes(rng, 3, 25),
                "declined",
                {"technician_id": technician.technician_id, "reason": "fully booked"},
            )
            technician = rng.choice(
                self.covering(region, besides=technician.technician_id)
            )
            story.assign(_minutes(rng, 2, 10), technician.technician_id)
        self.field_work(story, technician, urgency=urgency, region=region)
        return PlannedOrder(number, region, urgency, tuple(story.steps))

    def accept_delay(
        self, profile: Profile, *, urgency: Urgency, region: str, at: datetime
    ) -> timedelta:
        delay = SLA.accept_within(urgency) * self.rng.uniform(*profile.accept_share)
        if not DEFAULT_PEAK_HOURS.is_peak(at):
            return delay
        if region == SLOW_AT_PEAK_REGION:
            # Nobody on shift: the order waits for whoever comes in next.
            return delay + _minutes(self.rng, *SLOW_AT_PEAK_WAIT_MINUTES)
        return delay * STAFFED_PEAK_FACTOR

    def field_work(
        self,
        story: _Story,
        technician: DemoTechnician,
        *,
        urgency: Urgency,
        region: str,
    ) -> None:
        """From the acceptance to the rating and what follows it."""
        rng, profile = self.rng, technician.profile
        me = technician.technician_id
        eta = rng.randrange(*ETA_MINUTES[urgency])
        story.technician_posts(
            self.accept_delay(profile, urgency=urgency, region=region, at=story.clock),
            "accepted",
            {"technician_id": me, "eta_minutes": eta},
        )
        late = rng.uniform(*profile.late_minutes)
        story.technician_posts(
            timedelta(minutes=max(5.0, eta + late)), "arrived", {"technician_id": me}
        )
        story.technician_posts(
            _minutes(rng, 10, 40),
            "diagnosed",
            diagnosed_data(rng.choice(("E4", "F1", "C7", "P2"))),
        )
        callout = price_item("callout", "上门费", 3000)
        labor = price_item("labor", "维修", rng.randrange(80, 400) * 100)
        quote = story.technician_posts(
            _minutes(rng, 5, 15), "priced", priced_data([callout, labor])
        )
        if rng.random() < 0.1:
            story.customer_posts(
                _minutes(rng, 10, 90), "quote_rejected", {"quote_event_id": str(quote)}
            )
            labor = labor | {"unit_price": labor["unit_price"] * 85 // 100}
            quote = story.technician_posts(
                _minutes(rng, 10, 30), "priced", priced_data([callout, labor])
            )
        story.customer_posts(
            _minutes(rng, 5, 60), "quote_approved", {"quote_event_id": str(quote)}
        )
        charged = [callout, labor]
        if rng.random() < profile.follow_up_rate:
            # The part has to be ordered: the first visit charges the callout, the
            # next one (a day or two later) the rest, under the same approved quote.
            story.technician_posts(
                _hours(rng, *profile.repair_hours),
                "completed",
                completed_data("follow_up_required", [callout]),
            )
            story.technician_posts(
                _hours(rng, 20, 60), "arrived", {"technician_id": me}
            )
            charged = [labor]
        elif rng.random() < profile.overrun_rate:
            # Within the 5% the lifecycle lets through, but above the quote.
            extra = items_total(charged) * rng.randrange(2, 5) // 100
            charged = [
                *charged,
                price_item("other", "辅材", extra),
            ]
        fixed = rng.random() < profile.fix_rate
        story.technician_posts(
            _hours(rng, *profile.repair_hours),
            "completed",
            completed_data("fixed" if fixed else "not_fixed", charged),
        )
        self.aftermath(story, technician, fixed=fixed)

    def aftermath(
        self, story: _Story, technician: DemoTechnician, *, fixed: bool
    ) -> None:
        """The rating, a complaint after a bad one, and rework after a reopen."""
        rng, profile = self.rng, technician.profile
        score = rng.choices((5, 4, 3, 2, 1), weights=profile.stars)[0]
        if not fixed:
            score = min(score, 2)
        if rng.random() < 0.85:
            story.customer_posts(
                _hours(rng, 1, 30),
                "rated",
                rated_data(rng, score, attitude_shift=profile.attitude_shift),
            )
        if score <= 2:
            complaint = f"c-{story.number}"
            story.customer_posts(
                _hours(rng, 1, 12),
                "complaint_filed",
                {
                    "complaint_id": complaint,
                    "category": "quality",
                    "text": "问题没有解决",
                },
            )
            story.dispatcher_posts(
                _hours(rng, 3, 48),
                "complaint_resolved",
                {"complaint_id": complaint, "resolution": "回访并免费复修"},
            )
        if fixed and rng.random() > 0.02:
            return
        story.customer_posts(
            _hours(rng, 24, 96), "reopened", {"reason": "the fault came back"}
        )
        # Warranty rework by the same technician, charged nothing.
        story.assign(_minutes(rng, 10, 60), technician.technician_id)
        story.technician_posts(
            _minutes(rng, 5, 30),
            "accepted",
            {"technician_id": technician.technician_id, "eta_minutes": 120},
        )
        story.technician_posts(
            _minutes(rng, 90, 180),
            "arrived",
            {"technician_id": technician.technician_id},
        )
        story.technician_posts(
            _minutes(rng, 10, 30),
            "diagnosed",
            diagnosed_data("R1", "返修更换同一部件"),
        )
        story.technician_posts(
            _hours(rng, 1, 2), "completed", completed_data("fixed", [])
        )

    def waiting_orders(self, first_number: int) -> list[PlannedOrder]:
        """The live end of the story: orders nobody covers, and emergency orders
        assigned to a technician who does not answer."""
        rng, orders = self.rng, []
        number = first_number
        for hours in UNCOVERED_ORDERS_HOURS_AGO:
            story = self.story(number, self.now - timedelta(hours=hours))
            self.create(
                story,
                region=UNCOVERED_REGION,
                urgency=Urgency.NORMAL,
                category=rng.choice(CATEGORIES),
            )
            orders.append(
                PlannedOrder(
                    number, UNCOVERED_REGION, Urgency.NORMAL, tuple(story.steps)
                )
            )
            number += 1
        silent = SILENT_TECHNICIAN
        for minutes in SILENT_ORDERS_MINUTES_AGO:
            story = self.story(number, self.now - timedelta(minutes=minutes))
            region = silent.regions[0]
            self.create(
                story,
                region=region,
                urgency=Urgency.EMERGENCY,
                category=rng.choice(CATEGORIES),
            )
            story.assign(timedelta(minutes=2), silent.technician_id)
            orders.append(
                PlannedOrder(number, region, Urgency.EMERGENCY, tuple(story.steps))
            )
            number += 1
        return orders


def plan_history(
    now: datetime, *, orders: int = DEFAULT_ORDERS, seed: int = DEFAULT_SEED
) -> History:
    """The demo history up to `now`: about `orders` orders over the past 30 days,
    then the orders still waiting at the end."""
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    planner = _Planner(now, seed)
    planned = [
        planner.order(number, created_at)
        for number, created_at in enumerate(planner.created_times(orders), start=1)
    ]
    planned += planner.waiting_orders(len(planned) + 1)
    return History(now, TECHNICIANS, tuple(planned))
