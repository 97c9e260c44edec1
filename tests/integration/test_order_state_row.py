"""The state kept beside each order: always fold(stream), rebuilt when unusable.

Each story is decided step by step in memory (tests.builders.Story), then written
through the order writer, which decides every step again from the stored state: a
stored state that differed from the fold would refuse a step or store another
event. After each lifecycle the stored state must equal the fold of the stream.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Final
from uuid import UUID

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.engine import DriverPool
from shared.db.event_store import load_state, load_stream
from shared.db.order_summary import order_summary
from shared.domain import errors
from shared.domain.events import Outcome
from shared.domain.lifecycle import OrderEvent, OrderState, ProposedEvent, fold
from shared.domain.rules import Policy
from shared.domain.state_codec import STATE_FORMAT, decode_state, encode_state
from shared.events.topics import SOURCE_INTAKE
from shared.orders.request import AppendRequest, Recorded
from shared.orders.writer import OrderWriter
from tests.builders import (
    Story,
    make_complaint_filed,
    make_complaint_resolved,
)

pytestmark = pytest.mark.integration

# The stories run on a fixed past clock (tests.builders.T0): the writer is asked
# to decide at each event's own `now`.
POLICY: Final = Policy()


def happy(story: Story) -> None:
    story.create()
    story.to_approved()
    story.complete()
    story.rate()


def cancelled_after_decline(story: Story) -> None:
    story.create()
    story.assign()
    story.decline()
    story.assign(Story().technician)
    story.cancel()


def rejected_quote_and_follow_up(story: Story) -> None:
    story.create()
    story.to_diagnosed()
    story.price()
    story.reject()
    story.price(9_000)
    story.approve()
    story.complete(9_000, outcome=Outcome.FOLLOW_UP_REQUIRED)
    story.arrive()
    story.diagnose()
    story.price(18_000)  # the revised quote covers both visits
    story.approve()
    story.complete(9_000, outcome=Outcome.NOT_FIXED)


def warranty_reopened_with_complaints(story: Story) -> None:
    story.create(warranty=True)
    story.to_diagnosed()
    story.complete(0)
    filed = make_complaint_filed()
    story.post(story.customer, filed)
    story.post(story.dispatcher, make_complaint_resolved(filed.complaint_id))
    story.post(story.customer, make_complaint_filed())
    story.reopen()
    story.assign()
    story.accept()
    story.diagnose(remote=True)


LIFECYCLES: Final[dict[str, Callable[[Story], None]]] = {
    "happy": happy,
    "cancelled-after-decline": cancelled_after_decline,
    "rejected-quote-and-follow-up": rejected_quote_and_follow_up,
    "warranty-reopened-with-complaints": warranty_reopened_with_complaints,
}


@pytest.fixture
def writer(driver_pool: DriverPool) -> OrderWriter:
    return OrderWriter(driver_pool, policy=POLICY, source=SOURCE_INTAKE)


async def write(writer: OrderWriter, event: OrderEvent) -> Recorded:
    """Append `event` again through the writer, decided at its own `now`."""
    proposed = ProposedEvent(
        event_id=event.event_id, time=event.time, actor=event.actor, data=event.data
    )
    return await writer.append(
        AppendRequest(
            proposed=proposed,
            order_id=event.order_id,
            request_digest=event.event_id.bytes,
            now=event.recorded_at,
            new_order=event.version == 1,
        )
    )


async def stored_and_folded(
    pool: DriverPool, order_id: UUID
) -> tuple[OrderState, OrderState | None]:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT state::text AS state FROM event_store.order_summary "
            "WHERE order_id = $1",
            order_id,
        )
        assert row is not None
        stored = decode_state(json.loads(row["state"]))
        return stored, fold(s.event for s in await load_stream(conn, order_id))


@pytest.mark.parametrize("lifecycle", LIFECYCLES.values(), ids=LIFECYCLES.keys())
async def test_the_stored_state_is_the_fold_of_the_stream_after_each_lifecycle(
    writer: OrderWriter, driver_pool: DriverPool, lifecycle: Callable[[Story], None]
) -> None:
    story = Story()
    lifecycle(story)
    for event in story.history:
        recorded = await write(writer, event)
        assert recorded.version == event.version
        assert recorded.state is not None
        stored, folded = await stored_and_folded(driver_pool, story.order_id)
        assert stored == folded == recorded.state
    assert stored == story.current


async def set_state(engine: AsyncEngine, order_id: UUID, state: object) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            update(order_summary)
            .where(order_summary.c.order_id == order_id)
            .values(state=state)
        )


async def stored_json(engine: AsyncEngine, order_id: UUID) -> object:
    async with engine.connect() as conn:
        return await conn.scalar(
            select(order_summary.c.state).where(order_summary.c.order_id == order_id)
        )


@pytest.mark.parametrize(
    "unusable",
    [
        pytest.param(lambda _: None, id="missing"),
        pytest.param(lambda _: {"format": STATE_FORMAT + 1}, id="other-format"),
        # A writer that keeps no state (an older release) moved the order on.
        pytest.param(lambda earlier: encode_state(earlier), id="stale"),
    ],
)
async def test_an_unusable_state_is_rebuilt_from_the_stream(
    writer: OrderWriter,
    driver_pool: DriverPool,
    engine: AsyncEngine,
    unusable: Callable[[OrderState], object],
) -> None:
    story = Story()
    story.create()
    earlier = story.current
    story.to_approved()
    for event in story.history:
        await write(writer, event)
    await set_state(engine, story.order_id, unusable(earlier))

    async with driver_pool.acquire() as conn:
        assert await load_state(conn, story.order_id) == story.current
    # The next write decides on the rebuilt state (a completion needs the approved
    # quote) and stores the state after it.
    completed = story.complete()
    recorded = await write(writer, completed)
    assert recorded.version == completed.version
    assert await stored_json(engine, story.order_id) == encode_state(story.current)
    stored, folded = await stored_and_folded(driver_pool, story.order_id)
    assert stored == folded == story.current


async def test_a_retry_is_answered_without_reading_the_state(
    writer: OrderWriter, engine: AsyncEngine
) -> None:
    story = Story()
    created = story.create()
    first = await write(writer, created)
    # Even an unreadable state does not matter to a retry of a stored id.
    await set_state(engine, story.order_id, {"format": "garbage"})
    again = await write(writer, created)
    assert again.duplicate
    assert again.envelope == first.envelope


async def test_a_post_to_an_order_without_events_is_not_found(
    writer: OrderWriter,
) -> None:
    story = Story()
    story.create()
    assigned = story.assign()  # the created was never stored
    with pytest.raises(errors.OrderNotFound):
        await write(writer, assigned)
