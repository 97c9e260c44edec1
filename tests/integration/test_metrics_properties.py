"""Random valid histories through Kafka equal a brute-force reference; redelivery,
reordering and a rebuild from the ledger change nothing.

The histories come from `metrics_io.RandomOrder`: every step is checked by the
lifecycle's `decide` (declines, remote diagnoses, follow-up visits, rejected and
revised quotes, overruns within the tolerance, free warranty work, ratings with and
without nps and dimensions, complaints, reopens with rework, cancellations). A
complaint is resolved only after the order's first final completion, where every
reading of indicators.md attributes it to the same technician (see
`test_a_complaint_settled_before_completion_belongs_to_the_completing_technician`
for the other case).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Final

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ledger.app import create_app as create_ledger
from services.ledger.settings import LedgerSettings
from services.metrics.consumer import IndicatorProjector
from services.metrics.rebuild import rebuild_from_ledger
from services.metrics.store import (
    complaint,
    open_order_count,
    order_fact,
    order_state,
    rating,
    unaccepted_assignment,
)
from shared.domain.actors import Actor, Role
from shared.domain.events import Channel
from shared.domain.lifecycle import OrderEvent
from shared.settings import CommonSettings
from tests.api.conftest import running
from tests.builders import make_declined
from tests.fixtures.postgres import DatabaseFactory
from tests.fixtures.stack import service_settings
from tests.integration.metrics_io import (
    JsonDict,
    Timed,
    Where,
    all_events,
    assert_indicators,
    differences,
    dispatcher,
    fresh_topics,
    get_indicators,
    interleave,
    metrics_client,
    publish_events,
    random_histories,
    reference_indicators,
    settings_for,
    wait_caught_up,
    without_provenance,
)

pytestmark = pytest.mark.integration

START: Final = datetime(2026, 3, 2, tzinfo=UTC)
TECHNICIANS: Final = ("tech-1", "tech-2", "tech-3", "tech-4")
REGIONS: Final = ("shanghai-pudong", "shanghai-minhang", "beijing-haidian")
CATEGORIES: Final = ("washing_machine", "air_conditioner")


def random_events(rng: random.Random, count: int) -> list[OrderEvent]:
    """`count` random valid histories of these technicians, regions and categories,
    their events interleaved."""
    histories = random_histories(
        rng,
        count,
        start=START,
        technicians=TECHNICIANS,
        regions=REGIONS,
        categories=CATEGORIES,
    )
    return interleave(rng, histories)


async def own_settings(
    database: Awaitable[str], kafka_bootstrap: str
) -> CommonSettings:
    """Settings on a fresh database and fresh topics (one hypothesis example's)."""
    return settings_for(
        await database, kafka_bootstrap, await fresh_topics(kafka_bootstrap)
    )


async def publish_and_wait(
    client: httpx.AsyncClient, settings: CommonSettings, order_events: list[OrderEvent]
) -> None:
    """Publish the events and wait until `client`'s metrics applied them all."""
    await publish_events(settings, order_events)
    await wait_caught_up(client, dispatcher(settings), len(order_events))


def slices_for(rng: random.Random, order_events: list[OrderEvent]) -> list[Where]:
    """window=all, a region, a technician, and from/to at two events' own times
    (so events sit exactly on both bounds)."""
    times = sorted({e.time for e in order_events})
    low, high = sorted(rng.sample(range(len(times)), 2))
    return [
        Where(),
        Where(region=rng.choice(REGIONS)),
        Where(technician_id=rng.choice(TECHNICIANS)),
        Where(channel=rng.choice(list(Channel)).value),
        Where(start=times[low], end=times[high]),
        Where(
            start=times[low],
            end=times[high],
            category=rng.choice(CATEGORIES),
            urgency=rng.choice(("normal", "urgent", "emergency")),
        ),
    ]


async def assert_matches_reference(
    settings: CommonSettings,
    order_events: list[OrderEvent],
    slices: list[Where],
    client: httpx.AsyncClient,
) -> dict[Where, JsonDict]:
    got: dict[Where, JsonDict] = {}
    for where in slices:
        payload = await get_indicators(client, dispatcher(settings), **where.params())
        assert_indicators(
            payload["indicators"],
            reference_indicators(order_events, where),
            f"slice {where}",
        )
        got[where] = without_provenance(payload)
    return got


@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
@settings(
    max_examples=10,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
async def test_random_histories_through_kafka_equal_the_brute_force_reference(
    fresh_database: DatabaseFactory,
    migrated_template: str,
    kafka_bootstrap: str,
    seed: int,
) -> None:
    rng = random.Random(seed)
    order_events = random_events(rng, rng.randint(10, 30))
    settings = await own_settings(
        fresh_database("metrics_prop", template=migrated_template), kafka_bootstrap
    )
    async with metrics_client(settings) as client:
        await publish_and_wait(client, settings, order_events)
        await assert_matches_reference(
            settings, order_events, slices_for(rng, order_events), client
        )


# --- redelivery and order ------------------------------------------------------------


def sample_events(seed: int, count: int = 25) -> list[list[OrderEvent]]:
    return random_histories(
        random.Random(seed),
        count,
        start=START,
        technicians=TECHNICIANS,
        regions=REGIONS,
        categories=CATEGORIES,
    )


async def test_delivering_every_event_twice_changes_nothing(
    settings: CommonSettings,
) -> None:
    rng = random.Random(7)
    order_events = interleave(rng, sample_events(7))
    doubled = [e for event in order_events for e in (event, event)]
    slices = slices_for(rng, order_events)
    headers = dispatcher(settings)
    async with metrics_client(settings) as client:
        # Each event right after itself (a producer retry) ...
        await publish_events(settings, doubled)
        await wait_caught_up(client, headers, len(doubled))
        first = await assert_matches_reference(settings, order_events, slices, client)
        # ... and the whole stream once more, after the fact (a relay replay).
        await publish_events(settings, order_events)
        await wait_caught_up(client, headers, len(doubled) + len(order_events))
        again = await assert_matches_reference(settings, order_events, slices, client)
    assert again == first


# Seed 2 counted a decline and an expiry twice before the fix: the late record and
# its copy taken from the event store, in one batch, each added to the rollups.
@pytest.mark.parametrize("seed", [2, 13])
async def test_events_reaching_the_topic_out_of_version_order_are_all_counted(
    settings: CommonSettings, seed: int
) -> None:
    # Without an idempotent producer a failed send retried after a later event of
    # the same order was accepted arrives after it; the later event's version must
    # not make the earlier one look like a redelivery and vanish, nor count twice.
    rng = random.Random(seed)
    histories = sample_events(seed)
    swapped: list[list[OrderEvent]] = []
    for history in histories:
        late = list(history)
        if len(late) > 2:
            k = rng.randrange(len(late) - 1)  # the created itself sometimes
            late[k], late[k + 1] = late[k + 1], late[k]
        swapped.append(late)
    assert any(s != h for s, h in zip(swapped, histories, strict=True))
    order_events = [e for history in histories for e in history]
    slices = slices_for(rng, order_events)
    async with metrics_client(settings) as client:
        await publish_events(settings, [e for late in swapped for e in late])
        await wait_caught_up(client, dispatcher(settings), len(order_events))
        await assert_matches_reference(settings, order_events, slices, client)


async def test_interleaving_orders_differently_gives_identical_indicators(
    fresh_database: DatabaseFactory, migrated_template: str, kafka_bootstrap: str
) -> None:
    histories = sample_events(11)
    rng = random.Random(11)
    one_by_one = [e for history in histories for e in history]
    by_time = sorted(one_by_one, key=lambda e: (e.time, e.version))
    mixed = interleave(rng, histories)
    slices = slices_for(rng, one_by_one)

    async def indicators_of(order_events: list[OrderEvent]) -> dict[Where, JsonDict]:
        own = settings_for(
            await fresh_database("metrics_order", template=migrated_template),
            kafka_bootstrap,
            await fresh_topics(kafka_bootstrap),
        )
        async with metrics_client(own) as client:
            await publish_events(own, order_events)
            await wait_caught_up(client, dispatcher(own), len(order_events))
            return await assert_matches_reference(own, order_events, slices, client)

    # One after the other: apps side by side would share the consumer group (group
    # ids carry no topic prefix) and rebalance each other.
    first = await indicators_of(one_by_one)
    others = [await indicators_of(by_time), await indicators_of(mixed)]
    for other in others:
        # Means may differ in the last bits with the summation order; nothing else.
        for where in slices:
            assert not differences(other[where], first[where]), where


async def test_a_rebuild_from_the_ledger_equals_the_live_indicators(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    rng = random.Random(23)
    order_events = interleave(rng, sample_events(23, count=30))
    slices = slices_for(rng, order_events)
    headers = dispatcher(settings)
    async with (
        running(create_ledger(service_settings(settings, LedgerSettings))),
        metrics_client(settings) as client,
    ):
        await publish_events(settings, order_events)
        await wait_caught_up(client, headers, len(order_events))
        async with asyncio.timeout(30):
            while await ledger_size(engine) < len(order_events):
                await asyncio.sleep(0.1)
        live = await assert_matches_reference(settings, order_events, slices, client)
        live_scores = (
            await client.get(
                "/v1/technicians/scores", params={"window": "all"}, headers=headers
            )
        ).json()

        live_unaccepted = await unaccepted_rows(engine)
        async with engine.begin() as conn:
            applied = await rebuild_from_ledger(conn)
        assert applied == len(order_events)
        # The declines and expiries the scorecards count: rebuilt the same, one
        # row per such event.
        assert await unaccepted_rows(engine) == live_unaccepted
        assert len(live_unaccepted) == sum(
            e.data.TYPE in ("declined", "assignment_expired") for e in order_events
        )

        rebuilt = await assert_matches_reference(settings, order_events, slices, client)
        rebuilt_scores = (
            await client.get(
                "/v1/technicians/scores", params={"window": "all"}, headers=headers
            )
        ).json()
    for where in slices:
        assert not differences(rebuilt[where], live[where]), where
    assert not differences(
        without_provenance(rebuilt_scores), without_provenance(live_scores)
    )


async def unaccepted_rows(engine: AsyncEngine) -> list[tuple[object, ...]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(unaccepted_assignment).order_by(unaccepted_assignment.c.event_id)
        )
        return [tuple(row) for row in rows]


async def ledger_size(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(
            await conn.scalar(text("SELECT count(*) FROM ledger.ledger_entry")) or 0
        )


async def test_the_projector_applying_a_stream_twice_keeps_the_same_facts(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    # Below the consumer's own deduplication (processed_event ids): the fold itself
    # ignores an event at or below an order's last version, so a replay into
    # existing facts (e.g. a rebuild racing the live consumer) changes nothing.
    order_events = interleave(random.Random(5), sample_events(5, count=12))
    projector = IndicatorProjector()

    async def facts() -> tuple[object, ...]:
        async with engine.connect() as conn:
            tables = []
            for table in (
                *(order_state, order_fact, open_order_count, rating, complaint),
                unaccepted_assignment,
            ):
                rows = (
                    await conn.execute(
                        select(table).order_by(*table.primary_key.columns)
                    )
                ).all()
                tables.append(tuple(tuple(r) for r in rows))
            return tuple(tables)

    async with engine.begin() as conn:
        await projector.apply(order_events, conn)
    once = await facts()
    async with engine.begin() as conn:
        await projector.apply(order_events, conn)
    async with engine.begin() as conn:
        for event in order_events:  # one at a time, as small batches would
            await projector.apply([event], conn)
    assert await facts() == once
    async with engine.connect() as conn:
        ratings = await conn.scalar(select(func.count()).select_from(rating))
    assert ratings == sum(e.data.TYPE == "rated" for e in order_events)


async def test_a_rebuild_while_the_ledger_lags_the_consumer_loses_no_event(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    histories = sample_events(31, count=12)
    early = [e for h in histories[:6] for e in h]
    late = [e for h in histories[6:] for e in h]
    ledger_settings = service_settings(settings, LedgerSettings)
    headers = dispatcher(settings)
    async with metrics_client(settings) as client:
        async with running(create_ledger(ledger_settings)):
            await publish_events(settings, early)
            await wait_caught_up(client, headers, len(early))
            async with asyncio.timeout(30):
                while await ledger_size(engine) < len(early):
                    await asyncio.sleep(0.1)
        # The ledger service is down for a while (deploy, outage); metrics is not.
        await publish_events(settings, late)
        await wait_caught_up(client, headers, len(early) + len(late))
        async with engine.begin() as conn:
            await rebuild_from_ledger(conn)  # an operator rebuilds meanwhile
        async with running(create_ledger(ledger_settings)):
            async with asyncio.timeout(30):
                while await ledger_size(engine) < len(early) + len(late):
                    await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)  # anything metrics would still apply, it has
            everything = (await get_indicators(client, headers, window="all"))[
                "indicators"
            ]
    # Both services have every event: the indicators must count every order.
    assert_indicators(everything, reference_indicators([*early, *late]))


# --- complaint attribution -----------------------------------------------------------


async def test_a_complaint_settled_before_completion_belongs_to_the_completing_technician(
    settings: CommonSettings,
) -> None:
    def at(hour: int, minute: int = 0) -> datetime:
        return START.replace(hour=hour, minute=minute)

    order = (
        Timed("tech-1", region=REGIONS[0])
        .created(at(8))
        .assigned(at(8, 5))
        # While tech-1 holds the order, the customer complains and it is settled.
        .complaint_filed(at(8, 10), "late")
        .complaint_resolved(at(8, 40), "late")
    )
    order.story.post(order.story.technician, make_declined("tech-1"), at=at(8, 45))
    order.story.technician = Actor(Role.TECHNICIAN, "tech-2")
    order.assigned(at(9)).accepted(at(9, 5)).arrived(at(10)).diagnosed(at(10, 10))
    order.priced(at(10, 15), 10_000).approved(at(10, 20)).completed(at(11), 10_000)
    headers = dispatcher(settings)
    async with metrics_client(settings) as client:
        published = await publish_events(settings, all_events([order]))
        await wait_caught_up(client, headers, published)
        completing = (await get_indicators(client, headers, technician_id="tech-2"))[
            "indicators"
        ]
    # The reference follows indicators.md: the complaint belongs to tech-2.
    expected = reference_indicators(order.events, Where(technician_id="tech-2"))
    assert expected["complaint_resolution_s"]["count"] == 1
    assert completing["complaint_resolution_s"] == expected["complaint_resolution_s"]
