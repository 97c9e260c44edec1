"""Peak and off-peak periods (indicators.md v2 "Slices", api.md v2): every indicator
endpoint takes `period=peak|offpeak`, judged by the Shanghai wall time of each
measurement's "at" (peak: 18:00-08:00 and all of Saturday and Sunday), and a default
alert rule compares the peak-period mean response time with the all-hours one.

2026-03-06 is a Friday; Shanghai is UTC+8 all year (no daylight saving), so local
Friday 18:00 is 10:00 UTC and local Monday 08:00 is Monday 00:00 UTC.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import pytest
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.metrics import alerts
from services.metrics.domain import DEFAULT_RULES
from services.metrics.settings import MetricsSettings
from shared.domain import events
from shared.domain.peak_hours import Period
from shared.settings import CommonSettings
from tests.integration.metrics_io import (
    JsonDict,
    Timed,
    Where,
    all_events,
    assert_indicators,
    dispatcher,
    get_indicators,
    interleave,
    is_peak,
    metrics_client,
    publish_events,
    random_histories,
    reference_indicators,
    wait_caught_up,
)

pytestmark = pytest.mark.integration

REGION: Final = "shanghai-pudong"
NOW_COUNTS: Final = ("orders_open", "orders_unaccepted_overdue")


def local(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    """Shanghai wall time on 2026-03-<day>, as a UTC instant."""
    return datetime(2026, 3, day, hour, minute, second, tzinfo=UTC) - timedelta(hours=8)


# (accepted at, peak?) on and around the edges, across one weekend.
EDGES: Final = (
    (local(6, 17, 59, 59), False),  # Friday, a second before the evening peak
    (local(6, 18), True),  # Friday 18:00: peak begins
    (local(7, 0), True),  # Saturday midnight
    (local(7, 12), True),  # Saturday noon: a peak day
    (local(8, 23, 59, 59), True),  # the weekend's last second
    (local(9, 0), True),  # Monday midnight: before 08:00
    (local(9, 7, 59, 59), True),  # Monday, a second before 08:00
    (local(9, 8), False),  # Monday 08:00: off-peak begins
    (local(10, 12), False),  # Tuesday noon
)


def edge_orders() -> list[Timed]:
    """One order accepted at each edge, created 25 minutes before."""
    return [
        Timed("tech-edge", region=REGION)
        .created(at - timedelta(minutes=25))
        .assigned(at - timedelta(minutes=20))
        .accepted(at)
        for at, _ in EDGES
    ]


def summed_parts(value: JsonDict) -> dict[str, int]:
    """The additive parts of one indicator value: its counts."""
    additive: tuple[str, ...] = ("count", "numerator", "denominator")
    if set(value) == {"value"}:  # a count indicator
        additive = ("value",)
    return {k: v for k, v in value.items() if k in additive}


def test_the_reference_peak_agrees_with_the_edges() -> None:
    assert [is_peak(at) for at, _ in EDGES] == [peak for _, peak in EDGES]


async def test_peak_and_offpeak_equal_the_reference_and_add_up_to_all_hours(
    settings: CommonSettings,
) -> None:
    rng = random.Random(2026)
    histories = random_histories(
        rng,
        40,
        start=local(5, 12),  # Thursday noon to Monday noon: a whole weekend
        technicians=("tech-1", "tech-2", "tech-3"),
        regions=(REGION, "shanghai-minhang"),
        categories=("washing_machine", "air_conditioner"),
        spread=timedelta(days=4),
    )
    order_events = interleave(rng, histories) + all_events(edge_orders())
    headers = dispatcher(settings)
    slices = [
        Where(),
        Where(region=REGION),
        Where(technician_id="tech-edge"),
        Where(start=local(6, 18), end=local(9, 8)),
        Where(start=local(6, 10, 30), end=local(9, 13, 15), urgency="normal"),
    ]
    async with metrics_client(settings) as client:
        await publish_events(settings, order_events)
        await wait_caught_up(client, headers, len(order_events))
        for where in slices:
            got: dict[str | None, JsonDict] = {}
            for period in (None, "peak", "offpeak"):
                sliced = replace(where, period=period)
                payload = await get_indicators(client, headers, **sliced.params())
                assert payload["slice"]["period"] == period
                assert_indicators(
                    payload["indicators"],
                    reference_indicators(order_events, sliced),
                    f"slice {sliced}",
                )
                got[period] = payload["indicators"]
            for name, whole in got[None].items():
                if name in NOW_COUNTS:  # counted now: no "at" to judge
                    assert got["peak"][name] == got["offpeak"][name] == whole
                    continue
                peak = summed_parts(got["peak"][name])
                offpeak = summed_parts(got["offpeak"][name])
                assert {k: peak[k] + offpeak[k] for k in peak} == summed_parts(whole), (
                    where,
                    name,
                )
        # The edge technician's responses: exactly the edges' split.
        edge = await get_indicators(
            client, headers, window="all", technician_id="tech-edge", period="peak"
        )
        assert edge["indicators"]["response_time_s"]["count"] == sum(
            peak for _, peak in EDGES
        )
        # The time series takes the period too: its daily buckets add up to it.
        series = await client.get(
            "/v1/indicators/timeseries",
            params={
                "indicator": "response_time_s",
                "bucket": "day",
                "window": "all",
                "technician_id": "tech-edge",
                "period": "offpeak",
            },
            headers=headers,
        )
        assert series.status_code == 200, series.text
        points = series.json()["points"]
        assert sum(p["value"]["count"] for p in points) == sum(
            not peak for _, peak in EDGES
        )


async def test_configured_peak_hours_change_the_slice_and_the_policy_version(
    settings: CommonSettings,
) -> None:
    order_events = all_events(edge_orders())
    headers = dispatcher(settings)
    custom = {"time_zone": "UTC", "weekdays": ["09:00-11:00"], "weekend_days": []}
    async with metrics_client(settings, peak_hours=custom) as client:
        await publish_events(settings, order_events)
        await wait_caught_up(client, headers, len(order_events))
        peak = await get_indicators(
            client, headers, window="all", period="peak", technician_id="tech-edge"
        )
        policy = (await client.get("/v1/policy", headers=headers)).json()
    in_window = [
        at
        for at, _ in EDGES
        if timedelta(hours=9)
        <= at - at.replace(hour=0, minute=0, second=0)
        < timedelta(hours=11)
    ]
    # Friday 17:59:59 and 18:00 in Shanghai are 09:59:59 and 10:00 UTC.
    assert len(in_window) == 2
    assert peak["indicators"]["response_time_s"]["count"] == len(in_window)
    assert policy["peak_hours"] == {
        "time_zone": "UTC",
        "weekdays": ["09:00-11:00"],
        "weekend_days": [],
    }
    assert policy["policy_version"] == peak["as_of"]["policy_version"]
    async with metrics_client(settings) as client:
        default = (await client.get("/v1/policy", headers=headers)).json()
    assert default["peak_hours"] == {
        "time_zone": "Asia/Shanghai",
        "weekdays": ["00:00-08:00", "18:00-24:00"],
        "weekend_days": ["sat", "sun"],
    }
    assert default["policy_version"] != policy["policy_version"]
    rule = next(r for r in default["alert_rules"] if r["name"] == "slow_peak_response")
    assert (rule["indicator"], rule["statistic"], rule["compare_period"]) == (
        "response_time_s",
        "mean",
        "peak",
    )


@pytest.mark.parametrize(
    "peak_hours",
    [
        {"time_zone": "Mars/Olympus"},
        {"time_zone": "Asia"},
        {"weekdays": ["18:00"]},
        {"weekdays": ["08:00-08:00"]},
        {"weekdays": ["25:00-08:00"]},
        {"weekdays": ["08:00-09:00", "08:30-10:00"]},
        {"weekend_days": ["saturday"]},
        {"holidays": []},
    ],
)
def test_invalid_peak_hours_are_refused_at_start(peak_hours: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        MetricsSettings(peak_hours=peak_hours)


async def test_a_hostile_period_is_a_422_problem(settings: CommonSettings) -> None:
    headers = dispatcher(settings)
    async with metrics_client(settings) as client:
        for path, params in (
            ("/v1/indicators", {"period": "rush"}),
            ("/v1/indicators", {"period": "PEAK"}),
            ("/v1/indicators", {"period": "peak\x00"}),
            (
                "/v1/indicators/timeseries",
                {"indicator": "response_time_s", "period": "x" * 10_000},
            ),
        ):
            response = await client.get(path, params=params, headers=headers)
            assert response.status_code == 422, (path, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert [e["field"] for e in response.json()["errors"]] == ["query.period"]


NOW: Final = datetime(2026, 3, 10, 12, tzinfo=UTC)  # Tuesday 20:00 in Shanghai
PEAK_RULE: Final = next(r for r in DEFAULT_RULES if r.compare_period is Period.PEAK)


def responses(region: str, *, peak_s: int, offpeak_s: int, peaks: int) -> list[Timed]:
    """`peaks` orders accepted at 21:00 Shanghai (peak) after `peak_s`, and 10 at
    10:00 on weekdays (off-peak) after `offpeak_s`, all in the week before NOW."""
    peak_days, offpeak_days = (4, 5, 6, 7, 8, 9), (4, 5, 6, 9, 10)
    orders = []
    for i in range(peaks):
        at = local(peak_days[i % 6], 21, i)
        orders.append(answered(region, at, peak_s))
    for i in range(10):
        at = local(offpeak_days[i % 5], 10, i)
        orders.append(answered(region, at, offpeak_s))
    return orders


def answered(region: str, accepted: datetime, after_s: int) -> Timed:
    created = accepted - timedelta(seconds=after_s)
    return (
        Timed("tech-p", region=region)
        .created(created)
        .assigned(created + timedelta(seconds=30))
        .accepted(accepted)
    )


async def test_the_default_rule_raises_on_slow_peaks_only(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    assert PEAK_RULE.name == "slow_peak_response"
    assert (PEAK_RULE.window, PEAK_RULE.min_samples) == (timedelta(days=7), 10)
    orders = [
        # Peak mean 3000 s, all-hours mean (10 x 3000 + 10 x 600) / 20 = 1800 s.
        *responses("r-slow-peaks", peak_s=3000, offpeak_s=600, peaks=10),
        # Peaks faster than the rest: below the average.
        *responses("r-fast-peaks", peak_s=600, offpeak_s=3000, peaks=10),
        # Slow peaks, but only 9 of them (< 10 samples).
        *responses("r-few-peaks", peak_s=3000, offpeak_s=600, peaks=9),
    ]
    order_events = all_events(orders)
    accepted = [e.time for e in order_events if isinstance(e.data, events.Accepted)]
    assert sum(map(is_peak, accepted)) == 29
    headers = dispatcher(settings)
    async with metrics_client(settings) as client:
        await publish_events(settings, order_events)
        await wait_caught_up(client, headers, len(order_events))
        async with engine.begin() as conn:
            raised = await alerts.evaluate(conn, NOW)  # every default rule
        assert [(e["subject"], e["data"]["rule"]) for e in raised] == [
            ("region:r-slow-peaks", "slow_peak_response")
        ]
        data = raised[0]["data"]
        # The peak mean less the all-hours mean, on the fewer samples of the two.
        assert (data["value"], data["threshold"], data["samples"]) == (1200.0, 0.0, 10)
        assert (data["indicator"], data["statistic"]) == ("response_time_s", "mean")
        # The same as two queries of the API.
        week = {"from": (NOW - timedelta(days=7)).isoformat(), "to": NOW.isoformat()}
        peak = await get_indicators(
            client, headers, region="r-slow-peaks", period="peak", **week
        )
        assert peak["indicators"]["response_time_s"]["mean"] == 3000.0

        # A week later the window is empty: cleared.
        async with engine.begin() as conn:
            cleared = await alerts.evaluate(
                conn, NOW + timedelta(days=8), rules=[PEAK_RULE]
            )
        assert [(e["type"], e["subject"]) for e in cleared] == [
            ("servicetrail.quality.alert_cleared", "region:r-slow-peaks")
        ]
