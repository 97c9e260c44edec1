"""Replaying the order-events topic changes nothing; the ledger replays orders exactly.

Redelivery: every record is published twice, then the ledger restarts having lost
its stored offsets and reads the whole topic again. The three ledger tables must be
identical, row for row, and the history must be what was published, byte for byte.

As of: the state at any instant is the fold of the events whose time is at most
that instant, for a long order with a rejected quote, a re-quote and a follow-up
visit.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import Any, Final
from uuid import UUID

import httpx
import pytest
from pydantic import TypeAdapter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.domain.events import Outcome
from shared.domain.lifecycle import OrderEvent, OrderState, OrderStatus, fold
from shared.events.canonical import canonical_bytes
from shared.events.envelope import format_time
from shared.events.topics import LEDGER_GROUP
from shared.settings import CommonSettings
from tests.api.conftest import running
from tests.builders import T0, Story, happy_path_history
from tests.integration.ledger_io import (
    append_events,
    auditor_headers,
    ledger_app,
    ledger_rows,
    ledger_verdict,
    order_topic,
    publish_events,
    table_snapshot,
    wait_for_size,
)

pytestmark = pytest.mark.integration

STATE: Final = TypeAdapter(OrderState)


def long_story() -> Story:
    """Created .. quote rejected, re-quoted, approved .. follow-up visit .. rated."""
    story = Story()
    story.create()
    story.assign()
    story.accept()
    story.arrive()
    story.diagnose()
    story.price(12_000)
    story.reject()
    story.price(9_000)
    story.approve()
    story.complete(3_000, outcome=Outcome.FOLLOW_UP_REQUIRED)
    story.arrive()
    story.diagnose()
    story.price(12_000)  # the revised quote covers both visits
    story.approve()
    story.complete(9_000)
    story.rate()
    return story


async def stored_records(engine: AsyncEngine, topic: str) -> int:
    """How many records of `topic` the ledger has applied or skipped, per offsets."""
    async with engine.connect() as conn:
        total = await conn.scalar(
            text(
                'SELECT coalesce(sum("offset" + 1), 0) FROM ledger.consumer_offset '
                "WHERE group_id = :group AND topic = :topic"
            ),
            {"group": LEDGER_GROUP, "topic": topic},
        )
    return int(total or 0)


async def wait_for_records(
    engine: AsyncEngine, topic: str, count: int, *, timeout: float = 30.0
) -> None:
    """Until the stored offsets say all `count` records were read."""
    try:
        async with asyncio.timeout(timeout):
            while await stored_records(engine, topic) != count:
                await asyncio.sleep(0.05)
    except TimeoutError:
        seen = await stored_records(engine, topic)
        raise AssertionError(f"offsets cover {seen} of {count} records") from None


async def test_redelivering_the_whole_topic_changes_nothing(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    events = [e for _ in range(3) for e in happy_path_history()]
    events += long_story().history
    headers = auditor_headers(settings)
    topic = order_topic(settings)
    async with running(ledger_app(settings)) as client:
        values = await publish_events(settings, events)
        # At-least-once delivery, at its worst: every record a second time.
        assert await publish_events(settings, events) == values
        await wait_for_size(client, headers, len(events))
        await wait_for_records(engine, topic, 2 * len(events))
        before = await table_snapshot(engine)
        checkpoint = (await client.get("/v1/ledger/checkpoint", headers=headers)).json()
    assert len(before["ledger_entry"]) == len(events)

    # A ledger that lost its offsets reads the topic again from the beginning.
    async with engine.begin() as conn:
        await conn.execute(
            text("DELETE FROM ledger.consumer_offset WHERE group_id = :group"),
            {"group": LEDGER_GROUP},
        )
    async with running(ledger_app(settings)) as client:
        await wait_for_records(engine, topic, 2 * len(events))
        assert await table_snapshot(engine) == before
        again = (await client.get("/v1/ledger/checkpoint", headers=headers)).json()
        assert again == checkpoint
        verdict = await ledger_verdict(client, headers)
        assert verdict["valid"] is True, verdict
        assert verdict["events"] == len(events)
        await assert_history_is_what_was_published(
            client, headers, engine, events, values
        )


async def assert_history_is_what_was_published(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    engine: AsyncEngine,
    events: list[OrderEvent],
    values: list[bytes],
) -> None:
    published = {e.event_id: json.loads(v) for e, v in zip(events, values, strict=True)}
    rows = await ledger_rows(engine)
    assert sorted(r.event_id for r in rows) == sorted(published)
    for row in rows:
        # The hashed bytes are RFC 8785 of exactly the JSON that was published.
        assert row.canonical == canonical_bytes(published[row.event_id]), row.position
    by_order: dict[UUID, list[OrderEvent]] = defaultdict(list)
    for event in events:
        by_order[event.order_id].append(event)
    rows_by_event = {r.event_id: r for r in rows}
    for order_id, stream in by_order.items():
        response = await client.get(f"/v1/orders/{order_id}/history", headers=headers)
        assert response.status_code == 200, response.text
        entries = response.json()["entries"]
        assert [e["event"] for e in entries] == [published[e.event_id] for e in stream]
        for entry, event in zip(entries, stream, strict=True):
            row = rows_by_event[event.event_id]
            assert entry["position"] == row.position
            assert entry["orderversion"] == event.version
            assert entry["chain_hash"] == row.chain_hash.hex()
            assert entry["leaf_hash"] == row.leaf_hash.hex()


def expected_state(history: list[OrderEvent], instant: datetime) -> dict[str, Any]:
    applied = [e for e in history if e.time <= instant]
    state = fold(applied)
    return {
        "events_applied": len(applied),
        "state": None if state is None else STATE.dump_python(state, mode="json"),
    }


async def state_at(
    client: httpx.AsyncClient, headers: dict[str, str], order_id: UUID, as_of: str
) -> dict[str, Any]:
    response = await client.get(
        f"/v1/orders/{order_id}/state", params={"as_of": as_of}, headers=headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_state_as_of_any_instant_is_the_fold_of_the_events_until_then(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    story = long_story()
    history = story.history
    # Another order in the same ledger must not leak into this one's state.
    noise = happy_path_history()
    headers = auditor_headers(settings)
    async with running(ledger_app(settings)) as client:
        await append_events(
            settings, client, headers, [*history, *noise], size_after=len(history) + 9
        )
        instants = [T0 - timedelta(days=1), T0 + timedelta(days=365)]
        for event in history:
            instants += [
                event.time - timedelta(microseconds=1),
                event.time,
                event.time + timedelta(minutes=3),
            ]
        for instant in instants:
            body = await state_at(client, headers, story.order_id, format_time(instant))
            assert body["as_of"] == format_time(instant)
            assert {k: body[k] for k in ("events_applied", "state")} == (
                expected_state(history, instant)
            ), instant

        # The same instant written in another zone is the same instant.
        moment = history[9].time  # the follow-up completion
        shanghai = moment.astimezone(timezone(timedelta(hours=8))).isoformat()
        body = await state_at(client, headers, story.order_id, shanghai)
        assert body["events_applied"] == 10
        assert body["state"]["status"] == OrderStatus.ACCEPTED
        assert body["state"]["follow_ups"] == 1

        # Spot checks of what an auditor would ask.
        after_rejection = await state_at(
            client, headers, story.order_id, format_time(history[6].time)
        )
        assert after_rejection["state"]["status"] == OrderStatus.DIAGNOSED
        assert after_rejection["state"]["current_quote"] is None
        after_requote = await state_at(
            client, headers, story.order_id, format_time(history[8].time)
        )
        assert after_requote["state"]["approved_quote"]["total"] == 9_000
        assert after_requote["state"]["quotes_count"] == 2
        at_the_end = await state_at(
            client, headers, story.order_id, format_time(history[-1].time)
        )
        assert at_the_end["state"]["status"] == OrderStatus.COMPLETED
        assert at_the_end["state"]["visits"] == 2
        assert at_the_end["state"]["rated"] is True


async def test_as_of_without_a_time_zone_is_refused_as_not_rfc_3339(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    history = happy_path_history()
    headers = auditor_headers(settings)
    async with running(ledger_app(settings)) as client:
        await append_events(settings, client, headers, history, size_after=len(history))
        response = await client.get(
            f"/v1/orders/{history[0].order_id}/state",
            params={"as_of": "2026-03-02T09:30:00"},
            headers=headers,
        )
        assert response.status_code == 422, response.text
