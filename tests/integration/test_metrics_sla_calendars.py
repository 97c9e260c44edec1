"""SLA clocks under business calendars (indicators.md v2, "Business calendars"), on
hand-computed orders and against the brute-force reference.

Calendar for `normal`: Asia/Shanghai (UTC+8), Monday to Friday 09:00-18:00,
holidays Thursday 1 and Friday 2 October 2026; `urgent` and `emergency` run 24x7;
the clocks pause while a quote waits on the customer. Targets are the defaults:
accept normal 240 min, urgent 60; arrive normal 2 880 min, urgent 480. Local times
are Shanghai's; NOW = Saturday 10 Oct 2026 08:00 local.

| order | story | accept clock | arrive clock |
|---|---|---|---|
| W1 normal | created Wed 30 Sep 16:00, accepted Mon 5 Oct 10:30, arrived Mon 15:00 | Wed 2 h, holidays, weekend, Mon 2 h: due Mon 11:00, met | met |
| W2 normal | created Fri 25 Sep 17:00, accepted Mon 28 Sep 13:30, cancelled 14:00 | Fri 1 h + Mon 3 h: due Mon 12:00, breach | cancelled before due: out |
| Q1 urgent | created Mon 28 Sep 16:00, accepted +10m, diagnosed remotely +30m, quoted +40m, approved +160m, follow-up +200m, arrived +540m | met | 480 min + 120 min waiting: due +600m, met |
| W3 normal | created Fri 9 Oct 17:00, never accepted | Fri 1 h, due Mon 12 Oct 12:00: ahead of now | ahead |

Under the default 24x7 clocks the same orders give: accept W1, W2, W3 (created +
4 h, past) breaches, Q1 met -> 1/4; arrive W1 breach (arrived after 2 days), W2
breach (cancelled after 2 days), Q1 left out (diagnosed remotely, by its deadline
+480m), W3 ahead -> 0/2; W3 is overdue.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final
from uuid import uuid4
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.metrics.clocks import calendar_from_content
from services.metrics.consumer import IndicatorProjector
from services.metrics.domain import DEFAULT_SLA, SlaTargets, sla_json
from services.metrics.policy import IndicatorPolicy
from services.metrics.queries import compute_indicators
from services.metrics.rebuild import align_deadlines
from services.metrics.store import rollup_policy
from shared.domain.actors import Role
from shared.domain.events import Channel, Outcome, Urgency
from shared.domain.lifecycle import OrderEvent
from shared.settings import CommonSettings
from tests.api.conftest import bearer
from tests.integration.metrics_io import (
    JsonDict,
    RefCalendar,
    RefClocks,
    Timed,
    Where,
    all_events,
    assert_indicators,
    dispatcher,
    interleave,
    metrics_client,
    publish_events,
    random_histories,
    reference_indicators,
    wait_caught_up,
)

pytestmark = pytest.mark.integration

SHANGHAI_ZONE: Final = ZoneInfo("Asia/Shanghai")
WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri")
SHANGHAI: Final = {
    "time_zone": "Asia/Shanghai",
    "hours": {day: ["09:00-18:00"] for day in WEEKDAYS},
    "holidays": ["2026-10-01", "2026-10-02"],
}
CALENDAR_SLA: Final = SlaTargets(
    accept=DEFAULT_SLA.accept,
    arrive=DEFAULT_SLA.arrive,
    calendars={"normal": calendar_from_content(SHANGHAI)},
    pause_while_quoted=True,
)
REF_CLOCKS: Final = RefClocks(
    calendars={
        "normal": RefCalendar(
            "Asia/Shanghai",
            {day: [("09:00", "18:00")] for day in range(5)},
            frozenset({date(2026, 10, 1), date(2026, 10, 2)}),
        )
    },
    pause_while_quoted=True,
)
TA: Final = "tech-a"


def local(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    """A Shanghai wall time in 2026, in UTC."""
    return datetime(2026, month, day, hour, minute, tzinfo=SHANGHAI_ZONE).astimezone(
        UTC
    )


NOW: Final = local(10, 10, 8)
Q1_START: Final = local(9, 28, 16)


def q1(minutes: float) -> datetime:
    return Q1_START + timedelta(minutes=minutes)


def calendar_orders() -> dict[str, Timed]:
    return {
        "W1": Timed(TA, region="pudong")
        .created(local(9, 30, 16))
        .assigned(local(9, 30, 16, 1))
        .accepted(local(10, 5, 10, 30))
        .arrived(local(10, 5, 15)),
        "W2": Timed(TA, region="pudong")
        .created(local(9, 25, 17))
        .assigned(local(9, 25, 17, 1))
        .accepted(local(9, 28, 13, 30))
        .cancelled(local(9, 28, 14)),
        "Q1": Timed(TA, region="pudong", urgency=Urgency.URGENT)
        .created(q1(0))
        .assigned(q1(1))
        .accepted(q1(10))
        .diagnosed(q1(30), remote=True)
        .priced(q1(40), 1000)
        .approved(q1(160))
        # Work to be done on site: a follow-up completion, then the visit.
        .completed(q1(200), 0, Outcome.FOLLOW_UP_REQUIRED)
        .arrived(q1(540)),
        "W3": Timed(TA, region="minhang").created(local(10, 9, 17)),
    }


def rate(numerator: int, denominator: int) -> JsonDict:
    value = numerator / denominator if denominator else None
    return {"value": value, "numerator": numerator, "denominator": denominator}


SLA_FIGURES: Final = (
    "sla_accept_rate",
    "sla_arrival_rate",
    "orders_unaccepted_overdue",
)


async def measured(
    engine: AsyncEngine,
    order_events: list[OrderEvent],
    sla: SlaTargets,
    clocks: RefClocks,
    where: Where | None = None,
    now: datetime = NOW,
) -> JsonDict:
    """The SLA figures at `now` (rollups where they serve, else the facts), held
    equal to the facts' and to the brute-force reference under `clocks`."""
    where = where or Where()
    sliced = where.slice_filter(now)
    catalog = IndicatorPolicy(sla=sla).catalog
    async with engine.connect() as conn:
        answered = await compute_indicators(conn, sliced, catalog, sla=sla)
    async with engine.connect() as conn:
        scanned = await compute_indicators(conn, sliced, catalog)
    figures = {name: answered[name] for name in SLA_FIGURES}
    assert_indicators(figures, {n: scanned[n] for n in SLA_FIGURES}, f"{where}")
    reference = reference_indicators(order_events, where, now, clocks)
    assert_indicators(figures, {n: reference[n] for n in SLA_FIGURES}, f"{where}")
    return figures


async def fold(engine: AsyncEngine, order_events: list[OrderEvent]) -> None:
    async with engine.begin() as conn:
        await IndicatorProjector().apply(order_events, conn)


async def recorded(engine: AsyncEngine) -> tuple[str, bool]:
    async with engine.connect() as conn:
        row = (
            await conn.execute(select(rollup_policy.c.sla, rollup_policy.c.complete))
        ).one()
    return str(row.sla), bool(row.complete)


async def test_calendar_clocks_across_a_weekend_and_a_holiday_with_a_pause(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    # The service starts under the calendars before any fact: nothing to recompute,
    # the rollups stay complete and count under them.
    async with engine.begin() as conn:
        assert await align_deadlines(conn, CALENDAR_SLA) == 0
    assert await recorded(engine) == (sla_json(CALENDAR_SLA), True)
    order_events = all_events(calendar_orders().values())
    await fold(engine, order_events)

    found = await measured(engine, order_events, CALENDAR_SLA, REF_CLOCKS)
    assert found == {
        "sla_accept_rate": rate(2, 3),
        "sla_arrival_rate": rate(2, 2),
        "orders_unaccepted_overdue": {"value": 0},
    }
    # W2's breach is at its deadline, Monday 12:00, not at 24x7's Friday 21:00.
    monday = await measured(
        engine,
        order_events,
        CALENDAR_SLA,
        REF_CLOCKS,
        Where(start=local(9, 28, 11, 59), end=local(9, 28, 12, 1)),
    )
    assert monday["sla_accept_rate"] == rate(0, 1)
    # W3 becomes overdue at Monday 12 Oct 12:00.
    later = await measured(
        engine, order_events, CALENDAR_SLA, REF_CLOCKS, now=local(10, 12, 12)
    )
    assert later["orders_unaccepted_overdue"] == {"value": 1}
    assert later["sla_accept_rate"] == rate(2, 4)


async def test_changed_calendars_recompute_the_stored_deadlines_at_start(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    order_events = all_events(calendar_orders().values())
    await fold(engine, order_events)
    default = await measured(engine, order_events, DEFAULT_SLA, RefClocks())
    assert default == {
        "sla_accept_rate": rate(1, 4),
        "sla_arrival_rate": rate(0, 2),
        "orders_unaccepted_overdue": {"value": 1},
    }
    # The default deadlines are created_at + target, as the SQL computed them.
    async with engine.connect() as conn:
        off = await conn.scalar(
            text(
                "SELECT count(*) FROM metrics.order_fact WHERE accept_due_at <> "
                "created_at + CASE urgency WHEN 'normal' THEN interval '240 min' "
                "ELSE interval '60 min' END OR arrive_due_at <> created_at + "
                "CASE urgency WHEN 'normal' THEN interval '2880 min' "
                "ELSE interval '480 min' END"
            )
        )
    assert off == 0

    # Started with calendars: every order's deadlines are recomputed, and the
    # rollups (counted under the old ones) wait for a rebuild.
    async with engine.begin() as conn:
        assert await align_deadlines(conn, CALENDAR_SLA, chunk=3) == 4
    assert await recorded(engine) == (sla_json(CALENDAR_SLA), False)
    assert await measured(engine, order_events, CALENDAR_SLA, REF_CLOCKS) == {
        "sla_accept_rate": rate(2, 3),
        "sla_arrival_rate": rate(2, 2),
        "orders_unaccepted_overdue": {"value": 0},
    }
    # Back to the defaults: the same numbers as before.
    async with engine.begin() as conn:
        assert await align_deadlines(conn, DEFAULT_SLA) == 4
    assert await measured(engine, order_events, DEFAULT_SLA, RefClocks()) == default


# --- against the brute-force reference ---------------------------------------------

RANDOM_START: Final = datetime(2026, 10, 21, 22, tzinfo=UTC)  # Berlin's DST ends 25th
RANDOM_NOW: Final = RANDOM_START + timedelta(days=9)
BERLIN: Final = {
    "time_zone": "Europe/Berlin",
    "hours": {
        **{day: ["08:00-12:00", "13:00-20:00"] for day in WEEKDAYS},
        "sat": ["10:00-14:00"],
    },
    "holidays": ["2026-10-26"],
}
RANDOM_SLA: Final = SlaTargets(
    accept=DEFAULT_SLA.accept,
    arrive=DEFAULT_SLA.arrive,
    calendars={
        "normal": calendar_from_content(SHANGHAI),
        "urgent": calendar_from_content(BERLIN),
    },
    pause_while_quoted=True,
)
RANDOM_CLOCKS: Final = RefClocks(
    calendars={
        "normal": REF_CLOCKS.calendars["normal"],
        "urgent": RefCalendar(
            "Europe/Berlin",
            {
                **{day: [("08:00", "12:00"), ("13:00", "20:00")] for day in range(5)},
                5: [("10:00", "14:00")],
            },
            frozenset({date(2026, 10, 26)}),
        ),
    },
    pause_while_quoted=True,
)


def random_where(rng: random.Random) -> Where:
    start = RANDOM_START + timedelta(minutes=rng.randint(-600, 8 * 24 * 60))
    end = start + timedelta(minutes=rng.randint(30, 6 * 24 * 60))
    given: dict[str, Any] = rng.choice(
        [
            {},
            {"region": "pudong"},
            {"urgency": rng.choice(("normal", "urgent", "emergency"))},
            {"technician_id": rng.choice(("t-1", "t-2"))},
            {"channel": rng.choice(list(Channel)).value},
        ]
    )
    if rng.random() < 0.2:
        return Where(**given)
    return Where(start=start, end=end, **given)


async def test_calendar_rates_equal_the_brute_force_reference(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    async with engine.begin() as conn:
        await align_deadlines(conn, RANDOM_SLA)
    rng = random.Random(1014)
    histories = random_histories(
        rng,
        70,
        start=RANDOM_START,
        technicians=("t-1", "t-2"),
        regions=("pudong", "minhang"),
        categories=("washing_machine",),
        spread=timedelta(days=6),
    )
    order_events = interleave(rng, histories)
    projector = IndicatorProjector()
    for position in range(0, len(order_events), 37):
        async with engine.begin() as conn:
            await projector.apply(order_events[position : position + 37], conn)
    assert await recorded(engine) == (sla_json(RANDOM_SLA), True)

    everything = await measured(
        engine, order_events, RANDOM_SLA, RANDOM_CLOCKS, now=RANDOM_NOW
    )
    assert everything["sla_accept_rate"]["denominator"] >= 30
    default = reference_indicators(order_events, Where(), RANDOM_NOW)
    assert everything["sla_accept_rate"] != default["sla_accept_rate"], (
        "the calendars should move some deadline"
    )
    for _ in range(25):
        await measured(
            engine,
            order_events,
            RANDOM_SLA,
            RANDOM_CLOCKS,
            random_where(rng),
            RANDOM_NOW,
        )


# --- GET /v1/orders/{order_id}/sla ---------------------------------------------------


async def test_the_sla_endpoint_explains_each_clock(settings: CommonSettings) -> None:
    orders = calendar_orders()
    order_events = all_events(orders.values())
    headers = dispatcher(settings)
    async with metrics_client(
        settings, sla_calendars={"normal": SHANGHAI}, sla_pause_while_quoted=True
    ) as client:
        await publish_events(settings, order_events)
        await wait_caught_up(client, headers, len(order_events))
        found = {
            name: (await client.get(f"/v1/orders/{o.order_id}/sla", headers=headers))
            for name, o in orders.items()
        }
        policy = (await client.get("/v1/policy", headers=headers)).json()
        auditor = bearer(settings)(Role.AUDITOR, "auditor-1")
        as_auditor = await client.get(
            f"/v1/orders/{orders['W2'].order_id}/sla", headers=auditor
        )
        technician = bearer(settings)(Role.TECHNICIAN, TA)
        as_technician = await client.get(
            f"/v1/orders/{orders['W2'].order_id}/sla", headers=technician
        )
        unknown = await client.get(f"/v1/orders/{uuid4()}/sla", headers=headers)
        malformed = await client.get("/v1/orders/not-a-uuid/sla", headers=headers)
        anonymous = await client.get(f"/v1/orders/{orders['W2'].order_id}/sla")

    assert all(response.status_code == 200 for response in found.values())
    # W2's breach, explained: 1 h on Friday, then Monday from 09:00 until the
    # accept at 13:30; 4 h were allowed, used up at Monday 12:00.
    w2 = found["W2"].json()
    assert w2["urgency"] == "normal"
    assert w2["pause_while_quoted"] is True
    accept = w2["accept"]
    assert accept["verdict"] == "breached"
    assert accept["target_s"] == 4 * 3600
    assert accept["calendar"] == SHANGHAI
    assert [
        (
            datetime.fromisoformat(s["start"]),
            datetime.fromisoformat(s["end"]),
            s["seconds"],
        )
        for s in accept["segments"]
    ] == [
        (local(9, 25, 17), local(9, 25, 18), 3600.0),
        (local(9, 28, 9), local(9, 28, 13, 30), 4.5 * 3600),
    ]
    assert accept["elapsed_s"] == 5.5 * 3600
    assert datetime.fromisoformat(accept["deadline"]) == local(9, 28, 12)
    assert datetime.fromisoformat(accept["reached_at"]) == local(9, 28, 13, 30)
    assert accept["pauses"] == []
    # Cancelled at 14:00, long before the arrive deadline: left out.
    assert w2["arrive"]["verdict"] == "cancelled"
    assert datetime.fromisoformat(w2["arrive"]["segments"][-1]["end"]) == local(
        9, 28, 14
    )
    # W1: over the holidays and the weekend, met.
    w1 = found["W1"].json()["accept"]
    assert w1["verdict"] == "met"
    assert datetime.fromisoformat(w1["deadline"]) == local(10, 5, 11)
    assert w1["elapsed_s"] == 3.5 * 3600
    # Q1: 24x7, the wait on the customer paused the arrive clock for 120 minutes.
    arrive = found["Q1"].json()["arrive"]
    assert arrive["verdict"] == "met"
    assert [
        (datetime.fromisoformat(p["since"]), datetime.fromisoformat(p["until"]))
        for p in arrive["pauses"]
    ] == [(q1(40), q1(160))]
    assert datetime.fromisoformat(arrive["deadline"]) == q1(600)
    assert arrive["elapsed_s"] == (540 - 120) * 60
    assert arrive["calendar"]["hours"]["sun"] == ["00:00-24:00"]
    # W3 is still running on its calendar (now is long after Monday 12 Oct).
    assert found["W3"].json()["accept"]["verdict"] == "breached"
    assert found["W3"].json()["arrive"]["verdict"] in {"running", "breached"}

    assert policy["sla_calendars"]["normal"] == SHANGHAI
    assert policy["sla_pause_while_quoted"] is True
    assert policy["policy_version"] != IndicatorPolicy().version
    assert w2["policy_version"] == policy["policy_version"]

    assert as_auditor.status_code == 200
    assert as_technician.status_code == 403
    assert anonymous.status_code == 401
    assert unknown.status_code == 404
    assert unknown.headers["content-type"].startswith("application/problem+json")
    assert malformed.status_code == 422
    assert malformed.headers["content-type"].startswith("application/problem+json")


async def test_default_calendars_show_and_keep_the_policy(
    settings: CommonSettings,
) -> None:
    async with metrics_client(settings) as client:
        policy = (await client.get("/v1/policy", headers=dispatcher(settings))).json()
    assert policy["policy_version"] == IndicatorPolicy().version
    assert policy["sla_pause_while_quoted"] is False
    assert set(policy["sla_calendars"]) == {"emergency", "urgent", "normal"}
    for calendar in policy["sla_calendars"].values():
        assert calendar["holidays"] == []
        assert set(calendar["hours"]) == {*WEEKDAYS, "sat", "sun"}
        assert {tuple(h) for h in calendar["hours"].values()} == {("00:00-24:00",)}
