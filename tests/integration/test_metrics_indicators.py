"""Every indicator of indicators.md on hand-computed orders, through Kafka and HTTP.

Seven orders at fixed times (D1 = 2026-03-02, D2 = 2026-03-03, UTC) go through the
order-events topic into the metrics app; every value of GET /v1/indicators is then
checked against the arithmetic written next to it. Technicians "tech-a" (TA) and
"tech-b" (TB); regions pudong (P) and minhang (M).

| order | region, category, urgency | tech | story |
|---|---|---|---|
| O1 | P, washing_machine, normal | TA | created 08:00, accepted 08:01, arrived 08:30, diagnosed 08:40, priced 10 000, approved, completed fixed 10 000 at 09:00, rated 09:10 (5, nps 10) |
| O2 | P, air_conditioner, urgent | TA | created 08:00, accepted 08:02, arrived 09:00, diagnosed 09:05, priced 10 000, approved, follow-up 09:30, arrived 10:00, diagnosed 10:05, priced 20 000, approved, completed fixed 21 000 at 10:30, rated 10:40 (3, nps 6), complaint 10:45 resolved 11:45 |
| O3 | P, washing_machine, emergency | TB | created 08:00, accepted 08:05, arrived 10:30, diagnosed 10:40, priced 8 000, approved, completed not_fixed 4 000 at 11:00, complaint 11:10 resolved 11:20, rated 11:30 (2, nps 3) |
| O4 | M, washing_machine, normal, warranty | TB | created 08:00, accepted 08:10, arrived 09:00, diagnosed 09:20, completed fixed 0 at 09:40, rated 10:00 (4, nps 8), reopened 12:00 |
| O5 | M, air_conditioner, urgent | TA | created 08:00, accepted 08:15, arrived 17:00, diagnosed 17:30, priced 5 000 rejected, priced 6 000 approved, completed fixed 6 300 at 18:00, complaint 18:05 (open), rated 18:10 (5, no nps) |
| O6 | P, washing_machine, normal | - | created 08:00, cancelled 08:20 |
| O7 | P, washing_machine, normal | TB | created D2 08:00, accepted D2 12:05 (still open) |
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.domain.actors import Role
from shared.domain.events import Outcome, Urgency
from shared.domain.lifecycle import OrderEvent
from shared.settings import CommonSettings
from tests.api.conftest import bearer
from tests.fixtures.postgres import DatabaseFactory
from tests.integration.metrics_io import (
    JsonDict,
    Timed,
    Where,
    all_events,
    assert_indicators,
    dispatcher,
    fresh_topics,
    get_indicators,
    metrics_client,
    publish_and_catch_up,
    publish_events,
    reference_indicators,
    settings_for,
    wait_caught_up,
)

pytestmark = pytest.mark.integration

TA, TB, TC = "tech-a", "tech-b", "tech-c"
P, M = "shanghai-pudong", "shanghai-minhang"
WM, AC = "washing_machine", "air_conditioner"


def d1(hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 3, 2, hour, minute, second, tzinfo=UTC)


def d2(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, 3, hour, minute, tzinfo=UTC)


def fixture_orders() -> list[Timed]:
    o1 = (
        Timed(TA, region=P, category=WM)
        .created(d1(8))
        .assigned(d1(8, 0, 30))
        .accepted(d1(8, 1))
        .arrived(d1(8, 30))
        .diagnosed(d1(8, 40))
        .priced(d1(8, 45), 10_000)
        .approved(d1(8, 50))
        .completed(d1(9), 10_000)
        .rated(d1(9, 10), 5, nps=10, attitude=5, professionalism=5)
    )
    o2 = (
        Timed(TA, region=P, category=AC, urgency=Urgency.URGENT)
        .created(d1(8))
        .assigned(d1(8, 1))
        .accepted(d1(8, 2))
        .arrived(d1(9))
        .diagnosed(d1(9, 5))
        .priced(d1(9, 10), 10_000)
        .approved(d1(9, 15))
        .completed(d1(9, 30), 0, Outcome.FOLLOW_UP_REQUIRED)
        .arrived(d1(10))
        .diagnosed(d1(10, 5))
        .priced(d1(10, 10), 20_000)
        .approved(d1(10, 15))
        .completed(d1(10, 30), 21_000)
        .rated(d1(10, 40), 3, nps=6, attitude=4, professionalism=3)
        .complaint_filed(d1(10, 45), "c-2")
        .complaint_resolved(d1(11, 45), "c-2")
    )
    o3 = (
        Timed(TB, region=P, category=WM, urgency=Urgency.EMERGENCY)
        .created(d1(8))
        .assigned(d1(8, 1))
        .accepted(d1(8, 5))
        .arrived(d1(10, 30))
        .diagnosed(d1(10, 40))
        .priced(d1(10, 45), 8_000)
        .approved(d1(10, 50))
        .completed(d1(11), 4_000, Outcome.NOT_FIXED)
        .complaint_filed(d1(11, 10), "c-3")
        .complaint_resolved(d1(11, 20), "c-3")
        .rated(d1(11, 30), 2, nps=3)
    )
    o4 = (
        Timed(TB, region=M, category=WM, warranty=True)
        .created(d1(8))
        .assigned(d1(8, 2))
        .accepted(d1(8, 10))
        .arrived(d1(9))
        .diagnosed(d1(9, 20))
        .completed(d1(9, 40), 0)
        .rated(d1(10), 4, nps=8, attitude=3, punctuality=4)
        .reopened(d1(12))
    )
    o5 = (
        Timed(TA, region=M, category=AC, urgency=Urgency.URGENT)
        .created(d1(8))
        .assigned(d1(8, 5))
        .accepted(d1(8, 15))
        .arrived(d1(17))
        .diagnosed(d1(17, 30))
        .priced(d1(17, 40), 5_000)
        .rejected(d1(17, 45))
        .priced(d1(17, 50), 6_000)
        .approved(d1(17, 55))
        .completed(d1(18), 6_300)
        .complaint_filed(d1(18, 5), "c-5")
        .rated(d1(18, 10), 5)
    )
    o6 = Timed(TA, region=P, category=WM).created(d1(8)).cancelled(d1(8, 20))
    o7 = (
        Timed(TB, region=P, category=WM)
        .created(d2(8))
        .assigned(d2(8, 1))
        .accepted(d2(12, 5))
    )
    return [o1, o2, o3, o4, o5, o6, o7]


@dataclass
class Published:
    client: httpx.AsyncClient
    headers: dict[str, str]
    events: list[OrderEvent]

    async def indicators(self, **params: str) -> JsonDict:
        indicators: JsonDict = (
            await get_indicators(self.client, self.headers, **params)
        )["indicators"]
        return indicators


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def fixture_app(
    fresh_database: DatabaseFactory, migrated_template: str, kafka_bootstrap: str
) -> AsyncIterator[Published]:
    """The metrics app with the seven fixture orders applied (shared, read-only)."""
    settings = settings_for(
        await fresh_database("metrics_fixture", template=migrated_template),
        kafka_bootstrap,
        await fresh_topics(kafka_bootstrap),
    )
    order_events = all_events(fixture_orders())
    headers = dispatcher(settings)
    async with metrics_client(settings) as client:
        await publish_events(settings, order_events)
        await wait_caught_up(client, headers, len(order_events))
    # Then read-only, without a consumer: a consumer left running for the whole
    # module would share the metrics consumer group (group ids carry no topic
    # prefix) with the apps of the other tests, and rebalance them.
    async with metrics_client(settings, run_consumer=False) as client:
        yield Published(client, headers, order_events)


def dist(
    count: int,
    mean: float | None,
    p50: float | None,
    p90: float | None,
    p95: float | None,
    top: float | None,
) -> JsonDict:
    return {
        "count": count,
        "mean": mean,
        "p50": p50,
        "p90": p90,
        "p95": p95,
        "max": top,
    }


def rate(numerator: int, denominator: int) -> JsonDict:
    value = numerator / denominator if denominator else None
    return {"value": value, "numerator": numerator, "denominator": denominator}


EMPTY = dist(0, None, None, None, None, None)

ALL_TIME: JsonDict = {
    # created -> first accepted: O1 60, O2 120, O3 300, O4 600, O5 900,
    # O7 D2 08:00 -> 12:05 = 14 700. Sorted [60, 120, 300, 600, 900, 14700], n = 6:
    # mean 16 680 / 6 = 2 780; p50 rank ceil(0.5*6)=3 -> 300; p90 rank ceil(5.4)=6
    # -> 14 700; p95 rank ceil(5.7)=6 -> 14 700.
    "response_time_s": dist(6, 2780.0, 300.0, 14700.0, 14700.0, 14700.0),
    # created -> first arrived: O1 1 800, O2 3 600, O3 9 000, O4 3 600, O5 32 400.
    # Sorted [1800, 3600, 3600, 9000, 32400]: mean 50 400 / 5 = 10 080; p50 rank 3
    # -> 3 600; p90 rank ceil(4.5)=5 -> 32 400; p95 rank ceil(4.75)=5 -> 32 400.
    "arrival_time_s": dist(5, 10080.0, 3600.0, 32400.0, 32400.0, 32400.0),
    # first arrived -> first diagnosed: O1 600, O2 300, O3 600, O4 1 200, O5 1 800.
    # Sorted [300, 600, 600, 1200, 1800]: mean 4 500 / 5 = 900; p50 rank 3 -> 600.
    "diagnosis_time_s": dist(5, 900.0, 600.0, 1800.0, 1800.0, 1800.0),
    # created -> first final completion: O1 3 600, O2 9 000 (the follow-up at 09:30
    # is not final), O3 10 800, O4 6 000, O5 36 000. Sorted [3600, 6000, 9000,
    # 10800, 36000]: mean 65 400 / 5 = 13 080; p50 rank 3 -> 9 000.
    "resolution_time_s": dist(5, 13080.0, 9000.0, 36000.0, 36000.0, 36000.0),
    # filed -> resolved: O2 3 600, O3 600 (O5's is open). [600, 3600]: mean 2 100;
    # p50 rank ceil(1.0)=1 -> 600; p90 rank ceil(1.8)=2 -> 3 600.
    "complaint_resolution_s": dist(2, 2100.0, 600.0, 3600.0, 3600.0, 3600.0),
    # Final completions O1..O5 (5). First-time fix: O1 yes, O2 no (2 visits), O3 no
    # (not_fixed), O4 no (reopened), O5 yes -> 2/5.
    "first_time_fix_rate": rate(2, 5),
    # Fixed: O1, O2, O4, O5 -> 4/5.
    "resolution_rate": rate(4, 5),
    # Reopened: O4 -> 1/5.
    "rework_rate": rate(1, 5),
    # A complaint filed: O2, O3, O5 -> 3/5.
    "complaint_rate": rate(3, 5),
    # Created O1..O7 (7), cancelled O6 -> 1/7.
    "cancellation_rate": rate(1, 7),
    # Approved total > 0 at the final completion: O1 (10 000 -> 10 000: 0),
    # O2 (20 000 -> 21 000: +0.05), O3 (8 000 -> 4 000: -0.5), O5 (6 000 -> 6 300:
    # +0.05); O4 had no quote. Mean (0 + 0.05 - 0.5 + 0.05) / 4 = -0.1.
    "price_deviation_mean": {"value": -0.1, "count": 4},
    # final > approved: O2, O5 -> 2/4.
    "overrun_rate": rate(2, 4),
    # more than one priced: O2 (10 000 then 20 000), O5 (5 000 then 6 000) -> 2/4.
    "requote_rate": rate(2, 4),
    # Final completions without O4 (warranty, nothing charged): O1, O2, O3, O5 all
    # had an approved quote -> 4/4.
    "quoted_before_work_rate": rate(4, 4),
    # Scores 5, 3, 2, 4, 5: mean 19 / 5 = 3.8; csat (>= 4) 3/5.
    "rating_mean": {"value": 3.8, "count": 5},
    "csat": rate(3, 5),
    # nps given on 4 ratings: 10 (promoter), 6 and 3 (detractors), 8 (passive):
    # 100 x (1 - 2) / 4 = -25.
    "nps": {"value": -25.0, "count": 4},
    "ratings_count": {"value": 5},
    # Accept targets: normal 14 400 s, urgent 3 600 s, emergency 900 s. O1 60 <=
    # 14 400, O2 120 <= 3 600, O3 300 <= 900, O4 600, O5 900 <= 3 600 all met;
    # O7 14 700 > 14 400: a breach (at D2 12:00, censored); O6 was cancelled at
    # 08:20, before its target: left out -> 5/6.
    "sla_accept_rate": rate(5, 6),
    # Arrive targets: normal 172 800 s, urgent 28 800 s, emergency 7 200 s. O1, O2,
    # O4 met; O3 9 000 > 7 200, O5 32 400 > 28 800 missed; O7 never arrived and its
    # target (D2 08:00 + 48 h) has passed: a breach; O6 cancelled before -> 3/6.
    "sla_arrival_rate": rate(3, 6),
    # Promised arrival = first accept + 45 min (the builders' ETA): O1 08:46, O2
    # 08:47, O3 08:50, O4 08:55, O5 09:00. First arrival - promised: O1 08:30 -> -960
    # (early), O2 09:00 -> 780, O3 10:30 -> 6 000, O4 09:00 -> 300, O5 17:00 ->
    # 28 800. Sorted [-960, 300, 780, 6000, 28800]: mean 34 920 / 5 = 6 984; p50
    # rank 3 -> 780; p90 rank ceil(4.5)=5 and p95 rank 5 -> 28 800.
    "eta_error_s": dist(5, 6984.0, 780.0, 28800.0, 28800.0, 28800.0),
    # At most 900 s late: O1, O4, O2 -> 3/5.
    "eta_kept_rate": rate(3, 5),
    "orders_created": {"value": 7},
    "orders_completed": {"value": 5},
    # Not cancelled and awaiting a final completion: O4 (reopened), O7 -> 2.
    "orders_open": {"value": 2},
    # Open and never accepted: none; no assignment declined or expired.
    "orders_unaccepted_overdue": {"value": 0},
    "assignments_declined": {"value": 0},
    "assignments_expired": {"value": 0},
    # No alert case (tests/integration/test_alert_cases.py).
    "alert_ack_time_s": dist(0, None, None, None, None, None),
    "alert_close_time_s": dist(0, None, None, None, None, None),
}


async def test_every_indicator_over_all_time_equals_the_hand_computed_values(
    fixture_app: Published,
) -> None:
    payload = await get_indicators(fixture_app.client, fixture_app.headers)
    assert payload["slice"] == {
        "window": "all",
        "start": None,
        "end": None,
        "region": None,
        "category": None,
        "urgency": None,
        "technician_id": None,
        "channel": None,
        "period": None,
    }
    assert_indicators(payload["indicators"], ALL_TIME)
    # Provenance: the recordedtime of the last applied event (Story records each
    # event at its own time: O7's accept at D2 12:05 is the latest) and the policy.
    as_of = payload["as_of"]
    assert datetime.fromisoformat(as_of["last_recorded_at"]) == d2(12, 5)
    assert as_of["policy_version"]
    assert sum(p["offset"] + 1 for p in as_of["positions"]) == len(fixture_app.events)


def test_the_brute_force_reference_agrees_with_the_hand_computed_values() -> None:
    # The property tests trust this reference; here it meets the hand arithmetic.
    assert_indicators(reference_indicators(all_events(fixture_orders())), ALL_TIME)


async def test_a_region_slice_counts_only_that_regions_orders(
    fixture_app: Published,
) -> None:
    got = await fixture_app.indicators(region=M)
    # minhang: O4 and O5 only.
    # response [600, 900]: mean 750, p50 rank 1 -> 600, p90 rank ceil(1.8)=2 -> 900
    assert got["response_time_s"] == dist(2, 750.0, 600.0, 900.0, 900.0, 900.0)
    # first-time fix: O4 no (reopened), O5 yes -> 1/2; rework O4 -> 1/2
    assert got["first_time_fix_rate"] == rate(1, 2)
    assert got["rework_rate"] == rate(1, 2)
    # price population: O5 only (6 000 -> 6 300): +0.05, overrun and requoted
    assert got["price_deviation_mean"]["count"] == 1
    assert got["price_deviation_mean"]["value"] == pytest.approx(0.05)
    assert got["overrun_rate"] == rate(1, 1)
    # ratings 4 (nps 8: passive) and 5 (no nps): mean 4.5, csat 2/2, nps 0 over 1
    assert got["rating_mean"] == {"value": 4.5, "count": 2}
    assert got["nps"] == {"value": 0.0, "count": 1}
    # arrival SLA: O4 met, O5 missed -> 1/2; open: O4
    assert got["sla_arrival_rate"] == rate(1, 2)
    assert got["orders_open"] == {"value": 1}
    assert got["complaint_resolution_s"] == EMPTY  # O5's complaint is unresolved
    assert_indicators(
        got, reference_indicators(fixture_app.events, Where(region=M)), "region"
    )


async def test_category_and_urgency_slices_count_only_matching_orders(
    fixture_app: Published,
) -> None:
    aircon = await fixture_app.indicators(category=AC)
    # O2 and O5: resolution [9 000, 36 000]: mean 22 500, p50 9 000, p90 36 000
    assert aircon["resolution_time_s"] == dist(
        2, 22500.0, 9000.0, 36000.0, 36000.0, 36000.0
    )
    # scores 3 and 5: mean 4, csat 1/2; both overran their quote
    assert aircon["rating_mean"] == {"value": 4.0, "count": 2}
    assert aircon["csat"] == rate(1, 2)
    assert aircon["overrun_rate"] == rate(2, 2)
    assert_indicators(
        aircon, reference_indicators(fixture_app.events, Where(category=AC)), AC
    )

    emergency = await fixture_app.indicators(urgency="emergency")
    # O3 only: response 300 <= 900 met, arrival 9 000 > 7 200 missed, not fixed
    assert emergency["response_time_s"] == dist(1, 300.0, 300.0, 300.0, 300.0, 300.0)
    assert emergency["sla_accept_rate"] == rate(1, 1)
    assert emergency["sla_arrival_rate"] == rate(0, 1)
    assert emergency["resolution_rate"] == rate(0, 1)
    assert_indicators(
        emergency,
        reference_indicators(fixture_app.events, Where(urgency="emergency")),
        "emergency",
    )


async def test_a_technician_slice_attributes_each_step_to_who_performed_it(
    fixture_app: Published,
) -> None:
    a = await fixture_app.indicators(technician_id=TA)
    # TA accepted O1, O2, O5: [60, 120, 900]: mean 360, p50 rank 2 -> 120
    assert a["response_time_s"] == dist(3, 360.0, 120.0, 900.0, 900.0, 900.0)
    # TA completed O1 (ftf), O2 (2 visits), O5 (ftf) -> 2/3
    assert a["first_time_fix_rate"] == rate(2, 3)
    # ratings of TA's completions: 5, 3, 5 -> mean 13/3, csat 2/3; nps 10 and 6 -> 0
    assert a["rating_mean"]["value"] == pytest.approx(13 / 3)
    assert a["csat"] == rate(2, 3)
    assert a["nps"] == {"value": 0.0, "count": 2}
    # complaints of TA's orders: O2 resolved in 3 600, O5 open; rate 2/3
    assert a["complaint_resolution_s"] == dist(
        1, 3600.0, 3600.0, 3600.0, 3600.0, 3600.0
    )
    assert a["complaint_rate"] == rate(2, 3)
    assert_indicators(
        a, reference_indicators(fixture_app.events, Where(technician_id=TA)), TA
    )

    b = await fixture_app.indicators(technician_id=TB)
    # TB accepted O3, O4, O7: [300, 600, 14700]: mean 5 200, p50 rank 2 -> 600
    assert b["response_time_s"] == dist(3, 5200.0, 600.0, 14700.0, 14700.0, 14700.0)
    assert b["sla_accept_rate"] == rate(2, 3)
    # TB completed O3 (not fixed) and O4 (reopened) -> 0/2; open: O4, O7
    assert b["first_time_fix_rate"] == rate(0, 2)
    assert b["orders_open"] == {"value": 2}
    assert_indicators(
        b, reference_indicators(fixture_app.events, Where(technician_id=TB)), TB
    )


async def test_an_explicit_window_includes_from_and_excludes_to(
    fixture_app: Published,
) -> None:
    where = Where(start=d1(9), end=d1(11))
    payload = await get_indicators(
        fixture_app.client, fixture_app.headers, **where.params()
    )
    assert datetime.fromisoformat(payload["slice"]["start"]) == d1(9)
    assert datetime.fromisoformat(payload["slice"]["end"]) == d1(11)
    got = payload["indicators"]
    # Final completions: O1 at 09:00 (= from: in), O4 09:40, O2 10:30, O3 at 11:00
    # (= to: out), O5 18:00 (out). Resolution [3600, 6000, 9000]: mean 6 200,
    # p50 rank 2 -> 6 000, p90 rank ceil(2.7)=3 -> 9 000.
    assert got["resolution_time_s"] == dist(3, 6200.0, 6000.0, 9000.0, 9000.0, 9000.0)
    assert got["orders_completed"] == {"value": 3}
    # ftf: O1 yes, O4 no, O2 no -> 1/3
    assert got["first_time_fix_rate"] == rate(1, 3)
    # first arrivals in the window: O2 09:00, O4 09:00, O3 10:30 -> [3600, 3600,
    # 9000]: mean 5 400, p50 rank 2 -> 3 600
    assert got["arrival_time_s"] == dist(3, 5400.0, 3600.0, 9000.0, 9000.0, 9000.0)
    # first diagnoses: O2 09:05 (300), O4 09:20 (1 200), O3 10:40 (600); O1's at
    # 08:40 is before: mean 700, p50 600
    assert got["diagnosis_time_s"] == dist(3, 700.0, 600.0, 1200.0, 1200.0, 1200.0)
    # ratings at 09:10 (5, nps 10), 10:00 (4, nps 8), 10:40 (3, nps 6): mean 4,
    # csat 2/3, nps 100 x (1 - 1) / 3 = 0
    assert got["rating_mean"] == {"value": 4.0, "count": 3}
    assert got["csat"] == rate(2, 3)
    assert got["nps"] == {"value": 0.0, "count": 3}
    # Nothing was created or accepted, and no complaint resolved, in the window.
    assert got["orders_created"] == {"value": 0}
    assert got["cancellation_rate"] == rate(0, 0)
    assert got["response_time_s"] == EMPTY
    assert got["complaint_resolution_s"] == EMPTY
    # orders_open is "now", whatever the window.
    assert got["orders_open"] == {"value": 2}
    assert_indicators(got, reference_indicators(fixture_app.events, where), "window")

    # The same instants written in China Standard Time give the same numbers.
    shanghai = timezone(timedelta(hours=8))
    assert (
        await fixture_app.indicators(
            window="all",
            **{
                "from": d1(9).astimezone(shanghai).isoformat(),
                "to": d1(11).astimezone(shanghai).isoformat(),
            },
        )
        == got
    )

    # `to` is exclusive: ending at 09:00 leaves O1's completion out.
    before = await fixture_app.indicators(window="all", to=d1(9).isoformat())
    assert before["orders_completed"] == {"value": 0}


async def test_hourly_and_daily_timeseries_bucket_by_the_indicators_own_time(
    fixture_app: Published,
) -> None:
    bounds = {"from": d1(0).isoformat(), "to": d2(23).isoformat()}
    hourly = await fixture_app.client.get(
        "/v1/indicators/timeseries",
        params={"indicator": "response_time_s", "bucket": "hour", **bounds},
        headers=fixture_app.headers,
    )
    assert hourly.status_code == 200, hourly.text
    points = [
        (datetime.fromisoformat(p["bucket_start"]), p["value"])
        for p in hourly.json()["points"]
    ]
    # Accepted D1 08:01, 08:02, 08:05, 08:10, 08:15 -> the 08:00 bucket:
    # [60, 120, 300, 600, 900]: mean 396, p50 rank 3 -> 300, p90 rank ceil(4.5)=5
    # -> 900. O7 accepted D2 12:05 -> the D2 12:00 bucket: [14 700].
    assert points == [
        (d1(8), dist(5, 396.0, 300.0, 900.0, 900.0, 900.0)),
        (d2(12), dist(1, 14700.0, 14700.0, 14700.0, 14700.0, 14700.0)),
    ]

    daily = await fixture_app.client.get(
        "/v1/indicators/timeseries",
        params={"indicator": "orders_created", "bucket": "day", **bounds},
        headers=fixture_app.headers,
    )
    assert daily.status_code == 200, daily.text
    # Created: O1..O6 on D1, O7 on D2.
    assert [
        (datetime.fromisoformat(p["bucket_start"]), p["value"])
        for p in daily.json()["points"]
    ] == [(d1(0), {"value": 6}), (d2(0), {"value": 1})]

    csat_daily = await fixture_app.client.get(
        "/v1/indicators/timeseries",
        params={"indicator": "csat", "bucket": "day", **bounds},
        headers=fixture_app.headers,
    )
    # All five ratings on D1: 3/5.
    assert [p["value"] for p in csat_daily.json()["points"]] == [rate(3, 5)]

    unknown = await fixture_app.client.get(
        "/v1/indicators/timeseries",
        params={"indicator": "happiness", "bucket": "day"},
        headers=fixture_app.headers,
    )
    assert 400 <= unknown.status_code < 500
    assert unknown.headers["content-type"].startswith("application/problem+json")


async def test_indicators_need_a_dispatcher_auditor_or_admin(
    fixture_app: Published, settings: CommonSettings
) -> None:
    client = fixture_app.client
    paths = (
        "/v1/indicators",
        "/v1/indicators/timeseries?indicator=csat",
        "/v1/technicians/scores",
        "/v1/alerts",
    )
    # The fixture app shares the test secret with every `settings`.
    as_role = bearer(settings)
    for path in paths:
        assert (await client.get(path)).status_code == 401, path
        for role, status in (
            (Role.CUSTOMER, 403),
            (Role.TECHNICIAN, 403),
            (Role.DISPATCHER, 200),
            (Role.AUDITOR, 200),
            (Role.ADMIN, 200),
        ):
            response = await client.get(path, headers=as_role(role, "someone"))
            assert response.status_code == status, (path, role, response.text)


async def test_daily_buckets_do_not_depend_on_the_database_time_zone(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    # A server configured for China Standard Time, as a deployment there would be.
    database = make_url(settings.sqlalchemy_url).database
    async with engine.connect() as conn:
        await conn.execute(
            text(f"ALTER DATABASE \"{database}\" SET timezone = 'Asia/Shanghai'")
        )
        await conn.commit()
    # 20:00 UTC on D1 is 04:00 on D2 in Shanghai.
    order = Timed(TA, region=P).created(d1(20))
    headers = dispatcher(settings)
    async with metrics_client(settings) as client:
        published = await publish_events(settings, order.events)
        await wait_caught_up(client, headers, published)
        daily = await client.get(
            "/v1/indicators/timeseries",
            params={"indicator": "orders_created", "bucket": "day", "window": "all"},
            headers=headers,
        )
    # The same bucket as on a server in UTC (the fixture tests above): D1 00:00 UTC.
    assert [
        datetime.fromisoformat(p["bucket_start"]) for p in daily.json()["points"]
    ] == [d1(0)]


# --- multi-visit charges and ETA (indicators.md v2) -----------------------------------


def multi_visit_orders() -> list[Timed]:
    """Three orders on D1 whose work took two visits.

    | order | tech | story |
    |---|---|---|
    | V1 | TA | accepted 08:01 (ETA 30 min: 08:31), arrived 08:20, priced 10 000, approved, follow-up charging 4 000 at 09:00, arrived 10:00, completed fixed 6 000 at 10:30 (under the approved quote) |
    | V2 | TB | accepted 08:02 (ETA 60: 09:02), arrived 09:17, priced 10 000, approved, follow-up 4 000 at 10:00, arrived 11:00, completed fixed 6 500 at 11:30 |
    | V3 | TB | accepted 08:03 (ETA 0: 08:03), arrived 08:19, priced 10 000, approved, follow-up 3 000 at 09:00, arrived 10:00, diagnosed, priced 8 000, approved, completed fixed 5 000 at 11:00 |
    """

    def two_visits(technician: str, minute: int, eta: int, arrived: datetime) -> Timed:
        return (
            Timed(technician, region=P)
            .created(d1(8))
            .assigned(d1(8, 0, 30))
            .accepted(d1(8, minute), eta_minutes=eta)
            .arrived(arrived)
            .diagnosed(arrived + timedelta(minutes=5))
            .priced(arrived + timedelta(minutes=10), 10_000)
            .approved(arrived + timedelta(minutes=15))
        )

    v1 = (
        two_visits(TA, 1, 30, d1(8, 20))
        .completed(d1(9), 4_000, Outcome.FOLLOW_UP_REQUIRED)
        .arrived(d1(10))
        .completed(d1(10, 30), 6_000)
    )
    v2 = (
        two_visits(TB, 2, 60, d1(9, 17))
        .completed(d1(10), 4_000, Outcome.FOLLOW_UP_REQUIRED)
        .arrived(d1(11))
        .completed(d1(11, 30), 6_500)
    )
    v3 = (
        two_visits(TB, 3, 0, d1(8, 19))
        .completed(d1(9), 3_000, Outcome.FOLLOW_UP_REQUIRED)
        .arrived(d1(10))
        .diagnosed(d1(10, 5))
        .priced(d1(10, 10), 8_000)
        .approved(d1(10, 15))
        .completed(d1(11), 5_000)
    )
    return [v1, v2, v3]


async def test_multi_visit_charges_sum_the_visits_and_eta_is_kept_within_tolerance(
    settings: CommonSettings,
) -> None:
    order_events = all_events(multi_visit_orders())
    async with metrics_client(settings) as client:
        got = (await publish_and_catch_up(client, settings, order_events))["indicators"]
        headers = dispatcher(settings)
        tb = (await get_indicators(client, headers, technician_id=TB))["indicators"]
        series = await client.get(
            "/v1/indicators/timeseries",
            params={"indicator": "eta_error_s", "bucket": "hour", "window": "all"},
            headers=headers,
        )
    # final_total over the visits against the last approved quote:
    # V1 4 000 + 6 000 = 10 000 vs 10 000 -> 0, no overrun;
    # V2 4 000 + 6 500 = 10 500 vs 10 000 -> +0.05, an overrun (the 5% allowed);
    # V3 3 000 + 5 000 = 8 000 vs the re-quoted 8 000 -> 0, a re-quote.
    assert got["price_deviation_mean"]["count"] == 3
    assert got["price_deviation_mean"]["value"] == pytest.approx(0.05 / 3)
    assert got["overrun_rate"] == rate(1, 3)
    assert got["requote_rate"] == rate(1, 3)
    assert got["first_time_fix_rate"] == rate(0, 3)  # two visits each
    # first arrival - promised: V1 08:20 - 08:31 = -660 (early), V2 09:17 - 09:02 =
    # 900 (exactly the tolerance: kept), V3 08:19 - 08:03 = 960 (late).
    # Sorted [-660, 900, 960]: mean 1 200 / 3 = 400; p50 rank 2 -> 900; p90 rank 3.
    assert got["eta_error_s"] == dist(3, 400.0, 900.0, 960.0, 960.0, 960.0)
    assert got["eta_kept_rate"] == rate(2, 3)
    # TB arrived at V2 and V3: [900, 960]; overran V2 of its two completions.
    assert tb["eta_error_s"] == dist(2, 930.0, 900.0, 960.0, 960.0, 960.0)
    assert tb["eta_kept_rate"] == rate(1, 2)
    assert tb["overrun_rate"] == rate(1, 2)
    # By the hour of the first arrival: 08:00 (V1 -660, V3 960), 09:00 (V2 900).
    assert [
        (datetime.fromisoformat(p["bucket_start"]), p["value"])
        for p in series.json()["points"]
    ] == [
        (d1(8), dist(2, 150.0, -660.0, 960.0, 960.0, 960.0)),
        (d1(9), dist(1, 900.0, 900.0, 900.0, 900.0, 900.0)),
    ]
    assert_indicators(got, reference_indicators(order_events), "all")
    assert_indicators(
        tb, reference_indicators(order_events, Where(technician_id=TB)), TB
    )

    # The tolerance is configurable (ETA_KEPT_TOLERANCE_S) and part of the policy:
    # at 960 s V3 keeps it too. The rollups counted 900: the facts answer.
    async with metrics_client(
        settings, run_consumer=False, eta_kept_tolerance_s=960
    ) as client:
        lenient = await get_indicators(client, headers)
    assert lenient["indicators"]["eta_kept_rate"] == rate(3, 3)
    async with metrics_client(settings, run_consumer=False) as client:
        default = await get_indicators(client, headers)
    assert lenient["as_of"]["policy_version"] != default["as_of"]["policy_version"]


# --- rolling windows ----------------------------------------------------------------


async def test_rolling_windows_end_now_and_leave_older_events_out(
    settings: CommonSettings,
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    recent = (
        Timed(TA, region=P)
        .created(now - timedelta(minutes=50))
        .assigned(now - timedelta(minutes=45))
        .accepted(now - timedelta(minutes=40))  # response 600 s, in the last hour
    )
    today = (
        Timed(TA, region=P)
        .created(now - timedelta(hours=3))
        .assigned(now - timedelta(hours=2, minutes=55))
        .accepted(now - timedelta(hours=2, minutes=40))  # 1 200 s, within 24 h
    )
    old = Timed(TA, region=P).created(d1(8)).assigned(d1(8, 1)).accepted(d1(8, 2))
    order_events = all_events([recent, today, old])
    headers = dispatcher(settings)
    async with metrics_client(settings) as client:
        await publish_events(settings, order_events)
        await wait_caught_up(client, headers, len(order_events))

        hour = await get_indicators(client, headers, window="1h")
        assert hour["slice"]["window"] == "1h"
        start = datetime.fromisoformat(hour["slice"]["start"])
        end = datetime.fromisoformat(hour["slice"]["end"])
        assert end - start == timedelta(hours=1)
        assert now - timedelta(seconds=5) <= end <= datetime.now(UTC)
        assert hour["indicators"]["orders_created"] == {"value": 1}
        assert hour["indicators"]["response_time_s"] == dist(
            1, 600.0, 600.0, 600.0, 600.0, 600.0
        )
        for window in ("24h", "7d", "30d"):
            got = (await get_indicators(client, headers, window=window))["indicators"]
            # [600, 1200]: mean 900, p50 rank 1 -> 600
            assert got["orders_created"] == {"value": 2}, window
            assert got["response_time_s"] == dist(
                2, 900.0, 600.0, 1200.0, 1200.0, 1200.0
            ), window
        everything = (await get_indicators(client, headers, window="all"))["indicators"]
        # + the old order's 120 s: [120, 600, 1200], mean 640
        assert everything["orders_created"] == {"value": 3}
        assert everything["response_time_s"]["mean"] == pytest.approx(640.0)


# --- a late reopen ------------------------------------------------------------------


async def test_a_late_reopen_corrects_the_past_windows_rework_and_first_time_fix(
    settings: CommonSettings,
) -> None:
    def fixed_once(technician: str) -> Timed:
        return (
            Timed(technician, region=P)
            .created(d1(8))
            .assigned(d1(8, 1))
            .accepted(d1(8, 2))
            .arrived(d1(8, 30))
            .diagnosed(d1(8, 40))
            .priced(d1(8, 45), 10_000)
            .approved(d1(8, 50))
            .completed(d1(9), 10_000)
        )

    first, second = fixed_once(TA), fixed_once(TB)
    window = Where(start=d1(8), end=d1(10))
    headers = dispatcher(settings)
    async with metrics_client(settings) as client:
        published = await publish_events(settings, all_events([first, second]))
        await wait_caught_up(client, headers, published)
        before = (await get_indicators(client, headers, **window.params()))[
            "indicators"
        ]
        # Both completed at 09:00, one visit, fixed: ftf 2/2, rework 0/2.
        assert before["first_time_fix_rate"] == rate(2, 2)
        assert before["rework_rate"] == rate(0, 2)
        assert before["orders_open"] == {"value": 0}

        # The customer reopens the first order days later, outside the window.
        reopened = first.reopened(d2(15)).events[-1]
        await publish_events(settings, [reopened])
        await wait_caught_up(client, headers, published + 1)
        after = (await get_indicators(client, headers, **window.params()))["indicators"]
        # Same window, same denominator, corrected numerators: ftf 1/2, rework 1/2.
        assert after["first_time_fix_rate"] == rate(1, 2)
        assert after["rework_rate"] == rate(1, 2)
        assert after["orders_completed"] == {"value": 2}
        assert after["orders_open"] == {"value": 1}
        assert_indicators(
            after, reference_indicators(all_events([first, second]), window)
        )
        # The technician slice moves with it: TA's only completion is now rework.
        mine = (
            await get_indicators(client, headers, technician_id=TA, **window.params())
        )["indicators"]
        assert mine["first_time_fix_rate"] == rate(0, 1)


# --- technician scores --------------------------------------------------------------


def scored_order(
    technician: str,
    created: datetime,
    *,
    accept_after: int = 10,
    arrive_after: int = 60,
    outcome: Outcome = Outcome.FIXED,
    rating: tuple[int, dict[str, int]] | None = None,
    eta_minutes: int = 45,
) -> Timed:
    """One order, times in minutes after `created`; completed 30 min after arrival;
    the arrival promised `eta_minutes` after the accept."""

    def at(minutes: int) -> datetime:
        return created + timedelta(minutes=minutes)

    order = (
        Timed(technician, region=P)
        .created(created)
        .assigned(at(1))
        .accepted(at(accept_after), eta_minutes=eta_minutes)
        .arrived(at(arrive_after))
        .diagnosed(at(arrive_after + 5))
        .priced(at(arrive_after + 10), 10_000)
        .approved(at(arrive_after + 15))
        .completed(at(arrive_after + 30), 10_000, outcome)
    )
    if rating is not None:
        score, dimensions = rating
        order.rated(at(arrive_after + 60), score, **dimensions)
    return order


def score_orders() -> list[Timed]:
    def hour(n: int) -> datetime:
        return d1(0) + timedelta(hours=n)

    return [
        # tech-a: 5 final completions, 4 first-time fixes; A3 accepted after 300 min
        # (> 240: SLA missed); every arrival within 2 880 min.
        scored_order(TA, hour(0), rating=(5, {"attitude": 5, "professionalism": 5})),
        scored_order(TA, hour(1), rating=(4, {"attitude": 4})),
        scored_order(
            TA,
            hour(2),
            accept_after=300,
            arrive_after=360,
            rating=(4, {"attitude": 5, "professionalism": 3}),
        ),
        scored_order(TA, hour(3), rating=(3, {})),
        scored_order(TA, hour(4), outcome=Outcome.NOT_FIXED),
        # tech-b: 5 first-time fixes; B5 arrived after 3 000 min (> 2 880: missed).
        scored_order(TB, hour(5), rating=(2, {"attitude": 2, "communication": 1})),
        scored_order(TB, hour(6), rating=(1, {})),
        scored_order(TB, hour(7)),
        scored_order(TB, hour(8)),
        scored_order(TB, hour(9), arrive_after=3000),
        # tech-c: only 2 final completions.
        scored_order(TC, hour(10)),
        scored_order(TC, hour(11)),
    ]


async def test_technician_scores_weigh_sub_scores_grade_fuzzily_and_rank(
    settings: CommonSettings,
) -> None:
    order_events = all_events(score_orders())
    headers = dispatcher(settings)
    async with metrics_client(settings) as client:
        await publish_events(settings, order_events)
        await wait_caught_up(client, headers, len(order_events))
        response = await client.get(
            "/v1/technicians/scores", params={"window": "all"}, headers=headers
        )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    assert [i["technician_id"] for i in items] == [TA, TB, TC]
    a, b, c = items

    # tech-a: quality 100 x 4/5 = 80; attitude: dimensions 5, 4, 5 and the score 3
    # where none was given -> mean 17/4 = 4.25 -> 100 x 3.25 / 4 = 81.25; response
    # 100 x 4/5 = 80; efficiency 100 x 5/5 = 100; satisfaction: scores 5, 4, 4, 3
    # -> csat 3/4 -> 75.
    assert a["sub_scores"] == pytest.approx(
        {
            "quality": 80.0,
            "attitude": 81.25,
            "response": 80.0,
            "efficiency": 100.0,
            "satisfaction": 75.0,
        }
    )
    # 0.45 x 80 + 0.25 x 81.25 + 0.15 x 80 + 0.10 x 100 + 0.05 x 75
    # = 36 + 20.3125 + 12 + 10 + 3.75 = 82.0625 (the weights sum to 1)
    assert a["composite"] == pytest.approx(82.0625)
    # Fuzzy: attitude rated 5, 4, 5 -> row (2/3, 1/3, 0, 0, 0); professionalism 5, 3
    # -> (1/2, 0, 1/2, 0, 0); no other dimension rated, so both weigh 1/2:
    # B = (7/12, 1/6, 1/4, 0, 0) -> very_satisfied;
    # score = 100 x 7/12 + 80 x 1/6 + 60 x 1/4 = 58.33 + 13.33 + 15 = 260/3.
    assert a["fuzzy"]["grade"] == "very_satisfied"
    assert a["fuzzy"]["score"] == pytest.approx(260 / 3)
    assert a["fuzzy"]["membership"] == pytest.approx(
        {
            "very_satisfied": 7 / 12,
            "satisfied": 1 / 6,
            "neutral": 1 / 4,
            "dissatisfied": 0.0,
            "very_dissatisfied": 0.0,
        }
    )
    assert (a["final_completions"], a["insufficient_data"], a["rank"]) == (5, False, 1)

    # tech-b: quality 100; attitude: dimension 2 and score 1 -> 1.5 -> 12.5;
    # response 100; efficiency 4/5 -> 80; satisfaction: scores 2, 1 -> 0.
    assert b["sub_scores"] == pytest.approx(
        {
            "quality": 100.0,
            "attitude": 12.5,
            "response": 100.0,
            "efficiency": 80.0,
            "satisfaction": 0.0,
        }
    )
    # 45 + 3.125 + 15 + 8 + 0 = 71.125
    assert b["composite"] == pytest.approx(71.125)
    # attitude (0, 0, 0, 1, 0), communication (0, 0, 0, 0, 1): B = (0, 0, 0, .5, .5)
    # -> a tie goes to the better level: dissatisfied; score 40 x .5 + 20 x .5 = 30.
    assert b["fuzzy"]["grade"] == "dissatisfied"
    assert b["fuzzy"]["score"] == pytest.approx(30.0)
    assert b["fuzzy"]["membership"]["dissatisfied"] == pytest.approx(0.5)
    assert b["fuzzy"]["membership"]["very_dissatisfied"] == pytest.approx(0.5)
    assert (b["final_completions"], b["insufficient_data"], b["rank"]) == (5, False, 2)

    # tech-c: 2 < 5 final completions -> listed, not ranked, although its composite
    # over the sub-scores with data, (0.45 + 0.15 + 0.10) x 100 / 0.70 = 100, is the
    # highest; no ratings -> no attitude, satisfaction or fuzzy grade.
    assert c["sub_scores"] == {
        "quality": 100.0,
        "attitude": None,
        "response": 100.0,
        "efficiency": 100.0,
        "satisfaction": None,
    }
    assert c["composite"] == pytest.approx(100.0)
    assert c["fuzzy"] == {"grade": None, "score": None, "membership": {}}
    assert (c["final_completions"], c["insufficient_data"], c["rank"]) == (
        2,
        True,
        None,
    )


async def test_a_nul_in_a_slice_or_cursor_is_a_422_not_a_500(
    settings: CommonSettings,
) -> None:
    # PostgreSQL text cannot hold NUL; the driver refused it with a 500 before.
    async with metrics_client(settings) as client:
        for path, params in (
            ("/v1/indicators", {"region": "a\x00b"}),
            ("/v1/indicators", {"technician_id": "\x00"}),
            ("/v1/indicators/timeseries", {"indicator": "csat\x00"}),
            ("/v1/alerts", {"cursor": "x\x00"}),
        ):
            response = await client.get(
                path, params=params, headers=dispatcher(settings)
            )
            assert response.status_code == 422, (path, response.text)
