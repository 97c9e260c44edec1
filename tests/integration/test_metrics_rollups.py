"""The daily rollups answer exactly what the facts answer, on random windows.

Random valid histories (metrics_io) are folded by the projector in random batches, so
the rollups are kept by deltas (reopens, late completions, complaints settled later);
then random windows, with partial days at either edge or inside one day, and slices
are answered from the rollups and by the brute-force scan of the facts, and must agree
(the scan itself is held to the brute-force reference by the other metrics tests).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import pytest
from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.metrics.catalog import ALERT_CASE_CATALOG, CATALOG_DEFAULT
from services.metrics.consumer import IndicatorProjector
from services.metrics.domain import DEFAULT_SLA, SlaTargets, SliceFilter, sla_json
from services.metrics.policy import IndicatorPolicy
from services.metrics.queries import scan_indicators
from services.metrics.rollup import (
    INDICATOR_ROLLUPS,
    RATING_ROLLUPS,
    rolled_indicators,
)
from services.metrics.schemas import Slice, Window
from services.metrics.scores import get_scores
from services.metrics.store import rollup_policy
from shared.domain.events import Channel
from shared.domain.lifecycle import OrderEvent
from shared.settings import CommonSettings
from tests.integration.metrics_io import (
    Where,
    assert_indicators,
    differences,
    interleave,
    random_histories,
    reference_indicators,
)

pytestmark = pytest.mark.integration

START: Final = datetime(2026, 3, 2, 17, tzinfo=UTC)
TECHNICIANS: Final = ("tech-1", "tech-2", "tech-3")
REGIONS: Final = ("pudong", "minhang")
CATEGORIES: Final = ("washing_machine", "air_conditioner")


def random_window(rng: random.Random) -> tuple[datetime | None, datetime | None]:
    """Bounds at random minutes, whole midnights, inside one day, or open."""

    def moment() -> datetime:
        at = START + timedelta(minutes=rng.randint(-600, 6 * 24 * 60))
        return at.replace(hour=0, minute=0) if rng.random() < 0.25 else at

    start = None if rng.random() < 0.15 else moment()
    end = None if rng.random() < 0.15 else moment()
    if start is not None and end is not None and end < start:
        start, end = end, start
    if start is not None and rng.random() < 0.2:
        end = start + timedelta(hours=rng.randint(1, 20))  # often inside one day
    return start, end


def random_slice(rng: random.Random) -> dict[str, Any]:
    return rng.choice(
        [
            {},
            {"region": rng.choice(REGIONS)},
            {"category": rng.choice(CATEGORIES)},
            {"urgency": rng.choice(("normal", "urgent", "emergency"))},
            {"technician_id": rng.choice(TECHNICIANS)},
            {"channel": rng.choice(list(Channel)).value},
        ]
    )


def module_histories(
    rng: random.Random, orders: int, **options: Any
) -> list[list[OrderEvent]]:
    """Random histories over this module's technicians, regions and categories."""
    return random_histories(
        rng,
        orders,
        start=START,
        technicians=TECHNICIANS,
        regions=REGIONS,
        categories=CATEGORIES,
        **options,
    )


async def fold_in_random_batches(
    engine: AsyncEngine,
    rng: random.Random,
    *,
    orders: int,
    spread: timedelta,
    batch: int,
) -> list[OrderEvent]:
    """Random histories folded by the projector in batches of random sizes (up to
    `batch`), as the consumer's: the rollups are kept by deltas. The events."""
    events = interleave(rng, module_histories(rng, orders, spread=spread))
    projector = IndicatorProjector()
    position = 0
    while position < len(events):
        size = rng.randint(1, batch)
        async with engine.begin() as conn:
            await projector.apply(events[position : position + size], conn)
        position += size
    return events


async def both_ways(
    conn: AsyncConnection, where: SliceFilter, sla: SlaTargets = DEFAULT_SLA
) -> tuple[dict[str, Any], dict[str, Any]]:
    rolled = await rolled_indicators(conn, where, CATALOG_DEFAULT, sla)
    assert rolled is not None, f"{where} is not served by the rollups"
    return rolled, await scan_indicators(conn, where, CATALOG_DEFAULT)


async def test_rollups_equal_the_facts_on_random_windows_and_slices(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    rng = random.Random(12)
    events = await fold_in_random_batches(
        engine, rng, orders=60, spread=timedelta(days=5), batch=40
    )
    projector = IndicatorProjector()
    # Applying everything again (a redelivery below the consumer's dedup) is a no-op.
    async with engine.begin() as conn:
        await projector.apply(events, conn)

    async with engine.connect() as conn:
        rolled, scanned = await both_ways(conn, SliceFilter())
        assert_indicators(rolled, scanned, "all time")
        assert rolled["orders_created"]["value"] == 60
        # Two dimensions at once are not rolled up: the facts answer.
        two = SliceFilter(region=REGIONS[0], urgency="normal")
        assert await rolled_indicators(conn, two, CATALOG_DEFAULT, DEFAULT_SLA) is None
        for _ in range(60):
            start, end = random_window(rng)
            where = SliceFilter(start=start, end=end, **random_slice(rng))
            rolled, scanned = await both_ways(conn, where)
            assert_indicators(rolled, scanned, f"{where}")
            reference = reference_indicators(
                events, Where(start=start, end=end, **random_slice_of(where))
            )
            # Counts "now" and the alert cases' indicators are not rolled up.
            for unrolled in (
                "orders_open",
                "orders_unaccepted_overdue",
                *ALERT_CASE_CATALOG,
            ):
                reference.pop(unrolled, None)
            assert_indicators(
                {k: v for k, v in rolled.items() if k in reference},
                reference,
                f"reference {where}",
            )


def random_long_window(rng: random.Random) -> tuple[datetime, datetime]:
    """Up to four weeks, from a random minute, midnight or Monday."""
    start = START + timedelta(minutes=rng.randint(-2 * 24 * 60, 20 * 24 * 60))
    if rng.random() < 0.3:
        start = start.replace(hour=0, minute=0)
        if rng.random() < 0.5:
            start -= timedelta(days=start.weekday())
    return start, start + timedelta(minutes=rng.randint(0, 28 * 24 * 60))


async def test_rollups_equal_the_facts_on_windows_of_whole_weeks(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    # Windows of up to four weeks read whole weeks from the weekly rollups, the days
    # around them from the daily ones: kept by the same deltas, they must agree.
    rng = random.Random(21)
    await fold_in_random_batches(
        engine, rng, orders=80, spread=timedelta(days=24), batch=60
    )
    policy = IndicatorPolicy()
    facts_only = IndicatorPolicy(
        sla=SlaTargets(accept={**DEFAULT_SLA.accept, "-": 1}, arrive=DEFAULT_SLA.arrive)
    )
    weeks_read = 0
    for _ in range(40):
        start, end = random_long_window(rng)
        weeks_read += end - start >= timedelta(days=13)
        where = SliceFilter(start=start, end=end, **random_slice(rng))
        async with engine.connect() as conn:
            rolled, scanned = await both_ways(conn, where)
        assert_indicators(rolled, scanned, f"{where}")
        slice_ = Slice(window=Window.ALL, start=start, end=end)
        async with engine.connect() as conn:
            scores = await get_scores(conn, slice_, policy=policy)
        async with engine.connect() as conn:
            from_facts = await get_scores(conn, slice_, policy=facts_only)
        assert not differences(
            [s.model_dump(mode="json") for s in scores.items],
            [s.model_dump(mode="json") for s in from_facts.items],
        ), f"scores {start} {end}"
    assert weeks_read >= 10


def random_slice_of(where: SliceFilter) -> dict[str, Any]:
    return {
        name: getattr(where, name)
        for name in ("region", "category", "urgency", "technician_id", "channel")
        if getattr(where, name) is not None
    }


async def fold_random_histories(
    engine: AsyncEngine, *, seed: int, orders: int
) -> random.Random:
    """Fold `orders` random histories, interleaved; the generator, to draw on."""
    rng = random.Random(seed)
    histories = module_histories(rng, orders)
    async with engine.begin() as conn:
        await IndicatorProjector().apply(interleave(rng, histories), conn)
    return rng


async def test_scores_from_rollups_equal_scores_from_the_facts(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    rng = await fold_random_histories(engine, seed=7, orders=50)
    policy = IndicatorPolicy()
    windows = [random_window(rng) for _ in range(12)]
    # No whole hour, no whole day: the partial hours alone; and all time.
    windows += [
        (START + timedelta(minutes=5), START + timedelta(minutes=35)),
        (START + timedelta(minutes=50), START + timedelta(minutes=70)),
        (None, None),
    ]

    async def scores_all() -> list[Any]:
        found = []
        for start, end in windows:
            slice_ = Slice(window=Window.ALL, start=start, end=end)
            async with engine.connect() as conn:
                found.append(await get_scores(conn, slice_, policy=policy))
        return [[s.model_dump(mode="json") for s in scores.items] for scores in found]

    rolled = await scores_all()
    # Rollups counted under other SLA targets do not serve: the facts answer.
    async with engine.begin() as conn:
        await conn.execute(
            update(rollup_policy).values(
                sla=sla_json(SlaTargets(accept={"normal": 1.0}, arrive={}))
            )
        )
    scanned = await scores_all()
    assert any(rolled), "no window had scores"
    assert not differences(rolled, scanned)


async def test_incomplete_rollups_are_not_read(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    # After an upgrade of a database that held facts, the rollups miss those facts:
    # until a rebuild marks them complete, the answers must come from the facts.
    await fold_random_histories(engine, seed=11, orders=30)
    slice_ = Slice(window=Window.ALL, start=None, end=None)
    policy = IndicatorPolicy()

    async def scores() -> list[Any]:
        async with engine.connect() as conn:
            found = await get_scores(conn, slice_, policy=policy)
        return [s.model_dump(mode="json") for s in found.items]

    expected = await scores()
    async with engine.begin() as conn:
        for table in (*INDICATOR_ROLLUPS, *RATING_ROLLUPS):
            await conn.execute(delete(table))
    assert await scores() != expected, "emptied rollups should answer differently"
    async with engine.begin() as conn:
        await conn.execute(update(rollup_policy).values(complete=False))

    assert await scores() == expected
