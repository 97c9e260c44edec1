"""Censoring of unanswered orders, orders_unaccepted_overdue and its alert, and the
`channel` slice (indicators.md, "(v2) Additions"), on hand-computed orders.

The orders are folded by the projector and read at an explicit server "now" (NOW =
2026-03-10 12:00 UTC), from the rollups, from the facts and by the brute-force
reference, which must all give the hand-computed values. B = NOW - 10 h = 02:00;
accept targets: normal 240 min, emergency 15 min; arrive: normal 2 880 min,
emergency 120 min. Technicians TA, TB; regions P, M.

| order | story (times after B unless said) | accept SLA | arrive SLA |
|---|---|---|---|
| C1 | P normal app: assigned TA +1m, accepted +30m, arrived +60m | met 02:30 (TA) | met 03:00 |
| C2 | P normal app: assigned TA +1m, accepted +300m, arrived +360m | breach 06:00 (TA) | met 08:00 |
| C3 | P normal phone: assigned TB +1m, nothing since | breach 06:00 (TB) | due B + 48 h: ahead |
| C4 | P emergency web: created NOW - 10m, assigned TB NOW - 9m | due NOW + 5m: ahead | ahead |
| C5 | M normal app: cancelled +120m | out (cancelled first) | out |
| C6 | M normal app: never assigned, cancelled +300m | breach 06:00 (nobody) | out (cancelled first) |
| C7 | M normal app: assigned TA +1m, expired +240m, assigned TB +245m, accepted +250m | breach 06:00 (TA, held it then) | ahead |
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.metrics import alerts
from services.metrics.catalog import CATALOG_DEFAULT
from services.metrics.consumer import IndicatorProjector
from services.metrics.domain import (
    DEFAULT_RULES,
    DEFAULT_SLA,
    SlaTargets,
    SliceFilter,
)
from services.metrics.policy import IndicatorPolicy
from services.metrics.queries import compute_indicators
from services.metrics.rollup import rolled_technician_sums
from services.metrics.schemas import Slice, Window
from services.metrics.scores import get_scores
from shared.domain.events import Channel, Urgency
from shared.domain.lifecycle import OrderEvent
from shared.settings import CommonSettings
from tests.integration.metrics_io import (
    JsonDict,
    Timed,
    Where,
    all_events,
    assert_indicators,
    differences,
    dispatcher,
    get_indicators,
    metrics_client,
    publish_events,
    reference_indicators,
    wait_caught_up,
)

pytestmark = pytest.mark.integration

NOW: Final = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
B: Final = NOW - timedelta(hours=10)
TA, TB = "tech-a", "tech-b"
P, M = "pudong", "minhang"


def at(minutes: float) -> datetime:
    return B + timedelta(minutes=minutes)


def censoring_orders() -> dict[str, Timed]:
    return {
        "C1": Timed(TA, region=P)
        .created(at(0))
        .assigned(at(1))
        .accepted(at(30))
        .arrived(at(60)),
        "C2": Timed(TA, region=P)
        .created(at(0))
        .assigned(at(1))
        .accepted(at(300))
        .arrived(at(360)),
        "C3": Timed(TB, region=P, channel=Channel.PHONE).created(at(0)).assigned(at(1)),
        "C4": Timed(TB, region=P, urgency=Urgency.EMERGENCY, channel=Channel.WEB)
        .created(NOW - timedelta(minutes=10))
        .assigned(NOW - timedelta(minutes=9)),
        "C5": Timed(TA, region=M).created(at(0)).cancelled(at(120)),
        "C6": Timed(TA, region=M).created(at(0)).cancelled(at(300)),
        "C7": Timed(TA, region=M)
        .created(at(0))
        .assigned(at(1))
        .expired(at(240))
        .assigned(at(245), TB)
        .accepted(at(250)),
    }


def rate(numerator: int, denominator: int) -> JsonDict:
    value = numerator / denominator if denominator else None
    return {"value": value, "numerator": numerator, "denominator": denominator}


async def fold(engine: AsyncEngine, order_events: list[OrderEvent]) -> None:
    async with engine.begin() as conn:
        await IndicatorProjector().apply(order_events, conn)


async def measured(
    engine: AsyncEngine,
    order_events: list[OrderEvent],
    where: Where,
    now: datetime = NOW,
) -> JsonDict:
    """The indicators at `now` from the rollups, held equal to those from the
    facts and to the brute-force reference."""
    sliced = SliceFilter(
        start=where.start,
        end=where.end,
        region=where.region,
        category=where.category,
        urgency=where.urgency,
        technician_id=where.technician_id,
        channel=where.channel,
        now=now,
    )
    async with engine.connect() as conn:
        rolled = await compute_indicators(
            conn, sliced, CATALOG_DEFAULT, sla=DEFAULT_SLA
        )
    async with engine.connect() as conn:
        scanned = await compute_indicators(conn, sliced, CATALOG_DEFAULT)
    assert_indicators(rolled, scanned, f"rollups vs facts {where}")
    reference = reference_indicators(order_events, where, now)
    reference.pop("orders_open")  # the counts kept now read the stored facts
    assert_indicators(
        {k: v for k, v in rolled.items() if k in reference},
        reference,
        f"reference {where}",
    )
    return rolled


async def test_unanswered_orders_are_breaches_at_their_target_instant(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    orders = censoring_orders()
    order_events = all_events(orders.values())
    await fold(engine, order_events)

    everything = await measured(engine, order_events, Where())
    # Accept: C1 met; C2, C3, C6, C7 breaches at 06:00; C4's target is ahead of
    # now; C5 was cancelled before its target -> 1/5.
    assert everything["sla_accept_rate"] == rate(1, 5)
    # response_time_s keeps the accepted orders only: C1 1 800, C2 18 000, C7
    # 15 000 s (accepted after the breach, counted once in the rate).
    assert everything["response_time_s"]["count"] == 3
    # Arrive: C1 and C2 met; every other target is ahead or the order cancelled
    # first (C5, C6) -> 2/2.
    assert everything["sla_arrival_rate"] == rate(2, 2)
    # Open, never accepted, accept target passed: C3 (C4's is ahead).
    assert everything["orders_unaccepted_overdue"] == {"value": 1}

    # The breaches are attributed to 06:00, not to a later acceptance.
    at_target = await measured(engine, order_events, Where(start=at(240), end=at(241)))
    assert at_target["sla_accept_rate"] == rate(0, 4)
    before = await measured(engine, order_events, Where(start=at(0), end=at(240)))
    assert before["sla_accept_rate"] == rate(1, 1)
    after = await measured(engine, order_events, Where(start=at(241), end=NOW))
    assert after["sla_accept_rate"] == rate(0, 0)

    # A window reaching past now leaves C4's breach out until its instant passes.
    ahead = await measured(
        engine, order_events, Where(start=at(0), end=NOW + timedelta(hours=1))
    )
    assert ahead["sla_accept_rate"] == rate(1, 5)
    later = NOW + timedelta(minutes=10)
    passed = await measured(engine, order_events, Where(), now=later)
    assert passed["sla_accept_rate"] == rate(1, 6)
    assert passed["orders_unaccepted_overdue"] == {"value": 2}

    # Technicians: the breach belongs to whoever held the order at its instant.
    # TA: C1 met, C2 (accepted late), C7 (expired exactly at the target) -> 1/3.
    mine = await measured(engine, order_events, Where(technician_id=TA))
    assert mine["sla_accept_rate"] == rate(1, 3)
    # ... and TA's one expired assignment (C7 at 06:00) is counted as such.
    assert mine["assignments_expired"] == {"value": 1}
    assert everything["assignments_expired"] == {"value": 1}
    # TB: C3 (held since 02:01); not C7, which TB accepted after the breach.
    theirs = await measured(engine, order_events, Where(technician_id=TB))
    assert theirs["sla_accept_rate"] == rate(0, 1)
    assert theirs["orders_unaccepted_overdue"] == {"value": 1}
    assert theirs["assignments_expired"] == {"value": 0}
    # M: C6 and C7 (C5 cancelled before its target).
    region = await measured(engine, order_events, Where(region=M))
    assert region["sla_accept_rate"] == rate(0, 2)

    # Scores, from the rollups and from the facts, read the same censored rates:
    # TA's response sub-score is 100 x 1/3.
    slice_ = Slice(window=Window.ALL, start=None, end=None)
    # Targets the rollups were not counted with: the scores come from the facts.
    facts_only = IndicatorPolicy(
        sla=SlaTargets(accept={**DEFAULT_SLA.accept, "-": 1}, arrive=DEFAULT_SLA.arrive)
    )
    found = []
    for policy in (IndicatorPolicy(), facts_only):
        async with engine.connect() as conn:
            scores = await get_scores(conn, slice_, policy=policy, now=NOW)
        found.append({s.technician_id: s.sub_scores for s in scores.items})
    assert not differences(found[0], found[1])
    assert found[0][TA]["response"] == pytest.approx(100 / 3)
    assert found[0][TB]["response"] == 0.0
    # The rollups hold the breaches still ahead (C4's accept, TB; the arrivals of
    # C3, C4 (TB) and C7 (TB, accepted it)): window=all leaves them out.
    async with engine.connect() as conn:
        sums = await rolled_technician_sums(
            conn, SliceFilter(now=NOW), CATALOG_DEFAULT, DEFAULT_SLA
        )
    assert sums is not None
    assert sums.rates["sla_accept_rate"] == {TA: (1, 3), TB: (0, 1)}
    assert {t: v for t, v in sums.rates["sla_arrival_rate"].items() if v[1]} == {
        TA: (2, 2)
    }


async def test_a_later_answer_moves_or_keeps_the_breach_but_never_counts_twice(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    orders = censoring_orders()
    await fold(engine, all_events(orders.values()))
    # C4 is accepted before its target (NOW + 5 min): met, not a breach; C3 is
    # accepted long after its target: still the one breach at 06:00.
    c4 = orders["C4"].accepted(NOW + timedelta(minutes=2))
    c3 = orders["C3"].accepted(NOW + timedelta(minutes=3))
    await fold(engine, [c4.events[-1], c3.events[-1]])
    order_events = all_events(orders.values())
    later = NOW + timedelta(minutes=10)
    everything = await measured(engine, order_events, Where(), now=later)
    # C1, C4 met; C2, C3, C6, C7 breaches -> 2/6.
    assert everything["sla_accept_rate"] == rate(2, 6)
    assert everything["response_time_s"]["count"] == 5
    assert everything["orders_unaccepted_overdue"] == {"value": 0}
    # TB accepted C4 in time; C3's breach stays TB's (held at 06:00).
    theirs = await measured(engine, order_events, Where(technician_id=TB), now=later)
    assert theirs["sla_accept_rate"] == rate(1, 2)


async def test_the_channel_slice_counts_the_orders_created_through_it(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    orders = censoring_orders()
    order_events = all_events(orders.values())
    await fold(engine, order_events)
    phone = await measured(engine, order_events, Where(channel="phone"))
    # C3 only: created, overdue, one breach.
    assert phone["orders_created"] == {"value": 1}
    assert phone["orders_open"] == {"value": 1}
    assert phone["orders_unaccepted_overdue"] == {"value": 1}
    assert phone["sla_accept_rate"] == rate(0, 1)
    web = await measured(engine, order_events, Where(channel="web"))
    # C4 only: its target is still ahead.
    assert web["orders_created"] == {"value": 1}
    assert web["sla_accept_rate"] == rate(0, 0)
    app = await measured(engine, order_events, Where(channel="app"))
    # C1, C2, C5, C6, C7.
    assert app["orders_created"] == {"value": 5}
    assert app["cancellation_rate"] == rate(2, 5)
    assert app["sla_accept_rate"] == rate(1, 4)
    none = await measured(engine, order_events, Where(channel="mini_program"))
    assert none["orders_created"] == {"value": 0}


async def test_the_channel_query_parameter_is_checked_and_slices_every_endpoint(
    settings: CommonSettings,
) -> None:
    orders = censoring_orders()
    order_events = all_events(orders.values())
    headers = dispatcher(settings)
    async with metrics_client(settings) as client:
        published = await publish_events(settings, order_events)
        await wait_caught_up(client, headers, published)
        payload = await get_indicators(client, headers, window="all", channel="phone")
        assert payload["slice"]["channel"] == "phone"
        assert payload["indicators"]["orders_created"] == {"value": 1}
        assert payload["indicators"]["orders_unaccepted_overdue"] == {"value": 1}
        series = await client.get(
            "/v1/indicators/timeseries",
            params={
                "indicator": "sla_accept_rate",
                "window": "all",
                "channel": "phone",
            },
            headers=headers,
        )
        assert series.status_code == 200, series.text
        # C3's breach at 06:00, in the 06:00 bucket.
        assert [
            (datetime.fromisoformat(p["bucket_start"]), p["value"])
            for p in series.json()["points"]
        ] == [(at(240), rate(0, 1))]
        for hostile in ("fax", "PHONE", "", "phone\x00", "x" * 300):
            for path in ("/v1/indicators", "/v1/indicators/timeseries"):
                response = await client.get(
                    path,
                    params={"indicator": "csat", "channel": hostile},
                    headers=headers,
                )
                assert response.status_code == 422, (path, hostile, response.text)
                assert response.headers["content-type"].startswith(
                    "application/problem+json"
                )


OVERDUE_RULE: Final = next(r for r in DEFAULT_RULES if r.name == "unaccepted_overdue")


def unanswered(region: str, created: datetime) -> Timed:
    return (
        Timed("tech-late", region=region)
        .created(created)
        .assigned(created + timedelta(minutes=1))
    )


async def test_three_overdue_orders_in_a_region_raise_an_alert_until_one_is_answered(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    assert (OVERDUE_RULE.indicator, OVERDUE_RULE.scope) == (
        "orders_unaccepted_overdue",
        "region",
    )
    # r-late: 3 normal orders created 5 h ago (target 4 h): overdue. r-two: only 2.
    # r-soon: 3 created 3 h ago: their target is an hour ahead.
    late = [unanswered("r-late", NOW - timedelta(hours=5)) for _ in range(3)]
    two = [unanswered("r-two", NOW - timedelta(hours=5)) for _ in range(2)]
    soon = [unanswered("r-soon", NOW - timedelta(hours=3)) for _ in range(3)]
    await fold(engine, all_events([*late, *two, *soon]))

    def seen(emitted: list[dict[str, Any]]) -> list[tuple[str, str, Any]]:
        return [(e["type"], e["subject"], e["data"]["value"]) for e in emitted]

    async with engine.begin() as conn:
        raised = await alerts.evaluate(conn, NOW, rules=[OVERDUE_RULE])
    assert seen(raised) == [("servicetrail.quality.alert_raised", "region:r-late", 3.0)]
    assert raised[0]["data"]["samples"] == 3
    async with engine.begin() as conn:  # still overdue: no duplicate
        assert await alerts.evaluate(conn, NOW + timedelta(minutes=1)) == []

    # One of r-late's orders is accepted (late): 2 left, the alert clears; an hour
    # later r-soon's three are overdue in turn.
    answered = late[0].accepted(NOW + timedelta(minutes=2))
    await fold(engine, [answered.events[-1]])
    async with engine.begin() as conn:
        cleared = await alerts.evaluate(
            conn, NOW + timedelta(minutes=3), rules=[OVERDUE_RULE]
        )
    assert seen(cleared) == [
        ("servicetrail.quality.alert_cleared", "region:r-late", 2.0)
    ]
    async with engine.begin() as conn:
        again = await alerts.evaluate(
            conn, NOW + timedelta(hours=1, minutes=1), rules=[OVERDUE_RULE]
        )
    assert seen(again) == [("servicetrail.quality.alert_raised", "region:r-soon", 3.0)]


async def test_an_order_diagnosed_remotely_by_the_arrive_target_leaves_that_clock(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    """Nobody was due on site: a remote fix is not a no-show (a deviation from
    indicators.md v2's letter, which would count it as an arrival breach).

    Emergency orders (arrive within 120 min), accepted at +5 min:
    R1 diagnosed remotely at +30: left out; R2 never diagnosed nor visited: breach
    at +120; R3 diagnosed remotely at +200, after the target: breach at +120.
    """
    orders = [
        Timed(TA, region=P, urgency=Urgency.EMERGENCY)
        .created(at(0))
        .assigned(at(1))
        .accepted(at(5))
        .diagnosed(at(remote_at), remote=True)
        for remote_at in (30, 200)
    ]
    orders.append(
        Timed(TA, region=P, urgency=Urgency.EMERGENCY)
        .created(at(0))
        .assigned(at(1))
        .accepted(at(5))
    )
    order_events = all_events(orders)
    await fold(engine, order_events)
    everything = await measured(engine, order_events, Where())
    assert everything["sla_accept_rate"] == rate(3, 3)
    assert everything["sla_arrival_rate"] == rate(0, 2)
    at_target = await measured(engine, order_events, Where(start=at(120), end=at(121)))
    assert at_target["sla_arrival_rate"] == rate(0, 2)
