"""Quality alerts (raise once, no duplicates, clear on recovery, CloudEvents on the
alerts topic), the server-sent indicator stream, and the Prometheus exposition."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import httpx
import pytest
from cloudevents.core.bindings.kafka import KafkaMessage, from_structured_event
from sqlalchemy.ext.asyncio import AsyncEngine

from services.metrics import alerts
from services.metrics.alerts import AlertRule
from services.metrics.app import create_app
from services.metrics.consumer import IndicatorProjector
from services.metrics.live import LiveIndicators
from services.metrics.policy import IndicatorPolicy
from shared.domain.actors import Role
from shared.events.topics import QUALITY_ALERTS
from shared.http.problems import Problem
from shared.settings import CommonSettings
from tests.api.conftest import bearer
from tests.integration.kafka_io import read_topic
from tests.integration.metrics_io import (
    ALL_INDICATORS,
    JsonDict,
    Timed,
    all_events,
    dispatcher,
    metrics_client,
    metrics_settings,
    publish_events,
    served,
    wait_caught_up,
)

pytestmark = pytest.mark.integration

NOW: Final = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


def responded(region: str, created: datetime, accepted: datetime) -> Timed:
    """An order accepted (by tech-r) at `accepted`; nothing after."""
    return (
        Timed("tech-r", region=region)
        .created(created)
        .assigned(created + minutes(1))
        .accepted(accepted)
    )


def finished(
    technician: str,
    region: str,
    created: datetime,
    *,
    final_total: int = 10_000,
    score: int | None = None,
) -> Timed:
    """Accepted after 5 min, completed (quote 10 000) after 60, rated after 90."""
    order = (
        Timed(technician, region=region)
        .created(created)
        .assigned(created + minutes(1))
        .accepted(created + minutes(5))
        .arrived(created + minutes(30))
        .diagnosed(created + minutes(35))
        .priced(created + minutes(40), 10_000)
        .approved(created + minutes(45))
        .completed(created + minutes(60), final_total)
    )
    if score is not None:
        order.rated(created + minutes(90), score)
    return order


def alert_orders() -> list[Timed]:
    orders = [
        # r-slow: 10 orders created 5 h before NOW, accepted in the last hour at
        # NOW - 50 min + 2i min: response 15 000 + 120 i s (i = 0..9), all above the
        # normal accept target 14 400 s. p90 rank ceil(0.9 x 10)=9 -> i = 8 -> 15 960.
        *(
            responded("r-slow", NOW - timedelta(hours=5), NOW - minutes(50 - 2 * i))
            for i in range(10)
        ),
        # r-few: the same, but only 9 samples (< 10): no alert.
        *(
            responded("r-few", NOW - timedelta(hours=5), NOW - minutes(50 - 2 * i))
            for i in range(9)
        ),
    ]
    technicians = ("tc-1", "tc-2", "tc-3", "tc-4")
    for i in range(20):
        # r-csat: 20 ratings within 24 h, 15 of 5 stars and 5 of 2 -> csat 0.75 < 0.8.
        orders.append(
            finished(
                technicians[i % 4],
                "r-csat",
                NOW - timedelta(hours=20) + minutes(i),
                score=5 if i < 15 else 2,
            )
        )
        # r-csat-ok: 16 of 20 satisfied -> exactly 0.8, not below: no alert.
        orders.append(
            finished(
                technicians[i % 4],
                "r-csat-ok",
                NOW - timedelta(hours=19) + minutes(i),
                score=4 if i < 16 else 1,
            )
        )
    for i in range(10):
        # to-bad: 10 completions within 7 days, 2 over the quote (10 500 > 10 000,
        # within the 5% tolerance) -> overrun_rate 0.2 > 0.1.
        orders.append(
            finished(
                "to-bad",
                "r-price",
                NOW - timedelta(days=2) + minutes(i),
                final_total=10_500 if i < 2 else 10_000,
            )
        )
        # to-edge: 1 of 10 -> exactly 0.1, not above: no alert.
        orders.append(
            finished(
                "to-edge",
                "r-price",
                NOW - timedelta(days=2) + minutes(i),
                final_total=10_500 if i < 1 else 10_000,
            )
        )
    return orders


def by_scope(emitted: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {event["subject"]: event for event in emitted}


async def test_breaches_raise_one_alert_each_and_recovery_clears_them(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    order_events = all_events(alert_orders())
    headers = dispatcher(settings)
    async with metrics_client(settings) as client:
        published = await publish_events(settings, order_events)
        await wait_caught_up(client, headers, published)

        async with engine.begin() as conn:
            raised = await alerts.evaluate(conn, NOW)
        assert {e["type"] for e in raised} == {"servicetrail.quality.alert_raised"}
        found = by_scope(raised)
        assert set(found) == {"region:r-slow", "region:r-csat", "technician_id:to-bad"}
        slow = found["region:r-slow"]["data"]
        assert (slow["rule"], slow["indicator"], slow["statistic"]) == (
            "slow_response",
            "response_time_s",
            "p90",
        )
        assert (slow["value"], slow["threshold"], slow["samples"]) == (
            15960.0,
            14400.0,
            10,
        )
        assert slow["window_seconds"] == 3600
        csat = found["region:r-csat"]["data"]
        assert (csat["rule"], csat["value"], csat["threshold"], csat["samples"]) == (
            "low_csat",
            0.75,
            0.8,
            20,
        )
        overrun = found["technician_id:to-bad"]["data"]
        assert (overrun["rule"], overrun["samples"], overrun["threshold"]) == (
            "price_overrun",
            10,
            0.1,
        )
        assert overrun["value"] == pytest.approx(0.2)

        # Still breached: no duplicate, now or a minute later.
        async with engine.begin() as conn:
            assert await alerts.evaluate(conn, NOW) == []
            assert await alerts.evaluate(conn, NOW + minutes(1)) == []

        listed = await client.get(
            "/v1/alerts", params={"state": "open"}, headers=headers
        )
        assert listed.status_code == 200, listed.text
        open_alerts = {a["scope"]: a for a in listed.json()["items"]}
        assert set(open_alerts) == set(found)
        assert open_alerts["region:r-slow"]["rule"] == "slow_response"
        assert open_alerts["region:r-slow"]["value"] == 15960.0
        assert open_alerts["region:r-slow"]["samples"] == 10
        assert datetime.fromisoformat(open_alerts["region:r-slow"]["raised_at"]) == NOW
        assert all(a["cleared_at"] is None for a in open_alerts.values())
        assert {a["alert_id"] for a in open_alerts.values()} == {
            e["data"]["alert_id"] for e in raised
        }

        # Recovery with data: 10 quick responses in r-slow within the hour before
        # NOW + 2 h: created NOW + 65 min, accepted NOW + 70 + i min -> 300 + 60 i s;
        # p90 rank 9 -> i = 8 -> 780 s, under the target.
        quick = [
            responded("r-slow", NOW + minutes(65), NOW + minutes(70 + i))
            for i in range(10)
        ]
        published += await publish_events(settings, all_events(quick))
        await wait_caught_up(client, headers, published)
        async with engine.begin() as conn:
            cleared = await alerts.evaluate(conn, NOW + timedelta(hours=2))
        assert [(e["type"], e["subject"]) for e in cleared] == [
            ("servicetrail.quality.alert_cleared", "region:r-slow")
        ]
        assert cleared[0]["data"]["alert_id"] == slow["alert_id"]
        assert (cleared[0]["data"]["value"], cleared[0]["data"]["samples"]) == (
            780.0,
            10,
        )

        # A custom rule set: the csat rule over the last minute has no samples left,
        # so its alert clears; the other rules are not evaluated at all.
        last_minute = AlertRule(
            "low_csat",
            "csat",
            "value",
            "region",
            timedelta(minutes=1),
            above=False,
            threshold=0.8,
            min_samples=20,
        )
        async with engine.begin() as conn:
            custom = await alerts.evaluate(conn, NOW, rules=[last_minute])
        assert [(e["type"], e["subject"]) for e in custom] == [
            ("servicetrail.quality.alert_cleared", "region:r-csat")
        ]

        still_open = await client.get(
            "/v1/alerts", params={"state": "open"}, headers=headers
        )
        assert [a["scope"] for a in still_open.json()["items"]] == [
            "technician_id:to-bad"
        ]
        gone = await client.get(
            "/v1/alerts", params={"state": "cleared"}, headers=headers
        )
        cleared_at = {
            a["scope"]: datetime.fromisoformat(a["cleared_at"])
            for a in gone.json()["items"]
        }
        assert cleared_at == {
            "region:r-slow": NOW + timedelta(hours=2),
            "region:r-csat": NOW,
        }

        # The metrics app's relay publishes every raise and clear, once each, as
        # structured CloudEvents keyed by scope.
        records = await read_topic(
            settings.kafka_bootstrap_servers,
            settings.kafka_topic_prefix + QUALITY_ALERTS,
            expected=5,
            timeout=20,
        )
    assert len(records) == 5
    parsed = [
        from_structured_event(
            KafkaMessage(headers=dict(r.headers), key=r.key, value=r.value)
        )
        for r in records
    ]
    sent = {e["id"]: e for e in [*raised, *cleared, *custom]}
    assert {p.get_id() for p in parsed} == set(sent)
    for record, event in zip(records, parsed, strict=True):
        original = sent[event.get_id()]
        assert event.get_type() == original["type"]
        assert event.get_source() == "/servicetrail/metrics"
        assert event.get_subject() == original["subject"]
        assert record.key == original["subject"].encode()
        data = event.get_data()
        assert isinstance(data, dict)
        assert data == original["data"]


async def test_an_alert_needs_enough_samples_and_a_strict_breach(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    # 9 slow responses (< 10 samples), csat exactly 0.8 and overrun exactly 0.1
    # (the rules breach only strictly below / above) raise nothing.
    orders = [o for o in alert_orders() if o.region in ("r-few", "r-csat-ok")]
    orders += [o for o in alert_orders() if o.story.technician.id == "to-edge"]
    headers = dispatcher(settings)
    async with metrics_client(settings) as client:
        published = await publish_events(settings, all_events(orders))
        await wait_caught_up(client, headers, published)
        async with engine.begin() as conn:
            assert await alerts.evaluate(conn, NOW) == []
        listed = await client.get("/v1/alerts", headers=headers)
    assert listed.json()["items"] == []


async def test_the_alert_list_pages_with_limit_and_cursor(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    # Any response at all breaches this rule: one alert per region.
    any_response = AlertRule(
        "any_response",
        "response_time_s",
        "p90",
        "region",
        timedelta(hours=1),
        above=True,
        threshold=0.0,
        min_samples=1,
    )
    orders = [
        responded(region, NOW - minutes(30), NOW - minutes(20))
        for region in ("r-1", "r-2", "r-3")
    ]
    headers = dispatcher(settings)
    async with metrics_client(settings) as client:
        published = await publish_events(settings, all_events(orders))
        await wait_caught_up(client, headers, published)
        async with engine.begin() as conn:
            assert len(await alerts.evaluate(conn, NOW, rules=[any_response])) == 3
        first = await client.get("/v1/alerts", params={"limit": 2}, headers=headers)
        assert first.status_code == 200, first.text
        page = first.json()
        assert len(page["items"]) == 2
        rest = await client.get(
            "/v1/alerts",
            params={"limit": 2, "cursor": page["next_cursor"]},
            headers=headers,
        )
    scopes = [a["scope"] for a in [*page["items"], *rest.json()["items"]]]
    assert sorted(scopes) == ["region:r-1", "region:r-2", "region:r-3"]


# --- the live stream ---------------------------------------------------------------


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """(event, data) of each server-sent event; comments (heartbeats) skipped."""
    name, data = "message", list[str]()
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield name, "\n".join(data)
            name, data = "message", []
        elif line.startswith("event:"):
            name = line[len("event:") :].strip()
        elif line.startswith("data:"):
            data.append(line[len("data:") :].strip())


async def next_snapshot(
    events: AsyncIterator[tuple[str, str]], wanted: int, timeout: float = 15.0
) -> JsonDict:
    """The first `indicators` event whose orders_created is `wanted`."""
    async with asyncio.timeout(timeout):
        async for name, data in events:
            assert name == "indicators"
            snapshot: JsonDict = json.loads(data)
            if snapshot["indicators"]["orders_created"]["value"] == wanted:
                return snapshot
    raise AssertionError("the stream ended")


async def test_the_stream_sends_a_new_snapshot_after_an_event_is_applied(
    settings: CommonSettings,
) -> None:
    first = Timed("tech-s", region="r-stream").created(NOW)
    second = (
        Timed("tech-s", region="r-stream")
        .created(NOW + minutes(1))
        .assigned(NOW + minutes(2))
        .accepted(NOW + minutes(11))
    )
    headers = dispatcher(settings)
    async with (
        served(create_app(metrics_settings(settings))) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        published = await publish_events(settings, first.events)
        await wait_caught_up(client, headers, published)
        async with client.stream("GET", "/v1/stream", headers=headers) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = sse_events(response)
            before = await next_snapshot(events, 1)
            assert before["window"] == "all"
            assert set(before["indicators"]) == set(ALL_INDICATORS)
            assert before["indicators"]["response_time_s"]["count"] == 0

            published += await publish_events(settings, second.events)
            after = await next_snapshot(events, 2)
        # The second order was accepted 10 min after it was created: 600 s.
        assert after["indicators"]["response_time_s"]["count"] == 1
        assert after["indicators"]["response_time_s"]["p50"] == 600.0
        assert after["indicators"]["orders_open"] == {"value": 2}
        assert after["at"] >= before["at"]

        anonymous = await client.get("/v1/stream")
        assert anonymous.status_code == 401


async def test_the_stream_ends_when_the_callers_token_expires(
    settings: CommonSettings,
) -> None:
    expiring = bearer(settings, lifetime=timedelta(seconds=2))
    headers = expiring(Role.DISPATCHER, "short-lived")
    async with (
        served(create_app(metrics_settings(settings))) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        began = time.monotonic()
        async with (
            asyncio.timeout(10),
            client.stream("GET", "/v1/stream", headers=headers) as response,
        ):
            assert response.status_code == 200
            names = [name async for name, _ in sse_events(response)]
        ended_after = time.monotonic() - began
    assert names[-1] == "expired"
    assert set(names[:-1]) <= {"indicators"}
    assert ended_after < 5


async def test_a_caller_may_hold_only_its_limit_of_streams(
    settings: CommonSettings,
) -> None:
    greedy = bearer(settings)(Role.DISPATCHER, "greedy-dashboard")
    async with (
        served(create_app(metrics_settings(settings, max_streams_per_caller=2))) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
        contextlib.AsyncExitStack() as streams,
    ):
        first, second = [
            await streams.enter_async_context(
                client.stream("GET", "/v1/stream", headers=greedy)
            )
            for _ in range(2)
        ]
        assert (first.status_code, second.status_code) == (200, 200)

        refused = await client.get("/v1/stream", headers=greedy)
        assert refused.status_code == 429, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["type"] == "urn:servicetrail:problem:too_many_streams"
        assert int(refused.headers["Retry-After"]) >= 1

        async with client.stream(
            "GET", "/v1/stream", headers=dispatcher(settings)
        ) as someone_else:
            assert someone_else.status_code == 200

        await streams.aclose()  # the greedy caller closes both: it may open again
        async with asyncio.timeout(10):
            while True:
                async with client.stream("GET", "/v1/stream", headers=greedy) as again:
                    if again.status_code == 200:
                        break
                await asyncio.sleep(0.1)


async def test_a_stream_gives_its_slot_back_when_it_ends_or_is_dropped_unstarted(
    engine: AsyncEngine,
) -> None:
    live = LiveIndicators(
        engine, policy=IndicatorPolicy(label="test"), streams_per_caller=1
    )
    caller, later = "dispatcher:one-slot", time.time() + 60
    unstarted = live.subscribe(caller, until=later)
    with pytest.raises(Problem) as refused:
        live.subscribe(caller, until=later)
    assert refused.value.status == 429
    del unstarted  # a client gone before the response started
    expired = live.subscribe(caller, until=time.time())
    assert [event async for event in expired] == ["event: expired\ndata: {}\n\n"]
    live.subscribe(caller, until=later)  # neither holds the one slot any more


async def test_a_stream_reader_that_fell_behind_still_ends_on_the_latest_snapshot(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    live = LiveIndicators(engine, policy=IndicatorPolicy(label="test"))
    runner = asyncio.create_task(live.run())
    stream = live.subscribe(
        "dispatcher:slow", until=time.time() + 3600, heartbeat_seconds=60
    )
    projector = IndicatorProjector(on_applied=live.notify)
    try:
        async with asyncio.timeout(10):
            while live.latest is None:  # the start-up snapshot
                await asyncio.sleep(0.02)
        await anext(stream)  # subscribed; then the reader stalls
        changes = 20
        for n in range(1, changes + 1):
            order = Timed("tech-s", region="r-slow-reader").created(NOW + minutes(n))
            async with engine.begin() as conn:
                await projector.apply(order.events, conn)
            async with asyncio.timeout(10):
                while f'"orders_created": {{"value": {n}}}' not in (live.latest or ""):
                    await asyncio.sleep(0.02)
        received: list[str] = []
        while True:
            try:
                received.append(await asyncio.wait_for(anext(stream), 0.5))
            except TimeoutError:
                break
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    last: JsonDict = json.loads(received[-1].split("data: ", 1)[1])
    assert last["indicators"]["orders_created"] == {"value": changes}


# --- Prometheus ------------------------------------------------------------------


def sample(text: str, name: str, labels: str = "") -> float | None:
    pattern = "^" + re.escape(name + (f"{{{labels}}}" if labels else "")) + r" (\S+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return None if match is None else float(match.group(1))


async def test_prometheus_exposes_headline_gauges_when_configured_and_late_counters(
    settings: CommonSettings,
) -> None:
    on_time = (
        Timed("tech-p", region="r-prom")
        .created(NOW)
        .assigned(NOW + minutes(1))
        .accepted(NOW + minutes(5))
    )
    # Synced from an offline phone: recorded 20 min after it happened (late) ...
    offline = Timed("tech-p", region="r-prom").created(NOW + minutes(2))
    late = replace(offline.events[0], recorded_at=NOW + minutes(22))
    # ... and a phone clock 3 min ahead (within the allowed skew): time after
    # recordedtime (future-dated).
    ahead = Timed("tech-p", region="r-prom").created(NOW + minutes(3))
    future = replace(ahead.events[0], recorded_at=NOW)
    order_events = [*on_time.events, late, future]
    async with metrics_client(settings, metrics_expose_indicators=True) as client:
        before = (await client.get("/metrics")).text
        late_before = sample(before, "servicetrail_metrics_late_events_total") or 0.0
        future_before = (
            sample(before, "servicetrail_metrics_future_dated_events_total") or 0.0
        )
        published = await publish_events(settings, order_events)
        await wait_caught_up(client, dispatcher(settings), published)
        async with asyncio.timeout(15):
            while True:
                exposed = (await client.get("/metrics")).text
                created = sample(
                    exposed,
                    "servicetrail_indicator",
                    'indicator="orders_created",statistic="value"',
                )
                if created == 3.0:
                    break
                await asyncio.sleep(0.1)
    assert sample(exposed, "servicetrail_metrics_late_events_total") == late_before + 1
    assert (
        sample(exposed, "servicetrail_metrics_future_dated_events_total")
        == future_before + 1
    )
    # 5 min from created to accepted: 300 s; one sample.
    assert (
        sample(
            exposed,
            "servicetrail_indicator",
            'indicator="response_time_s",statistic="p50"',
        )
        == 300.0
    )
    assert (
        sample(
            exposed,
            "servicetrail_indicator",
            'indicator="response_time_s",statistic="count"',
        )
        == 1.0
    )
    # No per-order (or per-anything-unbounded) labels: only indicator and statistic.
    for line in exposed.splitlines():
        if line.startswith("servicetrail_indicator{"):
            labels = re.findall(r'(\w+)="', line.split("}")[0])
            assert labels == ["indicator", "statistic"], line
    for event in order_events:
        assert str(event.order_id) not in exposed
