"""The event store: gapless versions under concurrency, idempotency, the outbox."""

from __future__ import annotations

import asyncio
import dataclasses
from uuid import uuid4

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.event_store import (
    AlreadyStored,
    Appended,
    VersionTaken,
    append_event,
    load_stream,
    order_event,
    outbox_message,
)
from shared.domain.lifecycle import OrderEvent, fold
from shared.events.envelope import to_cloudevent
from shared.events.topics import SOURCE_INTAKE
from tests.builders import happy_path_history

pytestmark = pytest.mark.integration


async def store(
    engine: AsyncEngine, event: OrderEvent, *, digest: bytes = b"d"
) -> object:
    async with engine.begin() as conn:
        return await append_event(
            conn,
            event,
            envelope=to_cloudevent(event, source=SOURCE_INTAKE),
            request_digest=digest,
        )


async def count(engine: AsyncEngine, table: object) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table)) or 0)  # type: ignore[arg-type]  # any table


async def test_a_stored_history_folds_back_to_the_same_state(
    engine: AsyncEngine,
) -> None:
    history = happy_path_history()
    for event in history:
        assert isinstance(await store(engine, event), Appended)
    async with engine.connect() as conn:
        stored = await load_stream(conn, history[0].order_id)
    assert [s.event for s in stored] == history
    assert fold(s.event for s in stored) == fold(history)
    assert await count(engine, outbox_message) == len(history)


async def test_of_twenty_concurrent_writers_of_one_version_exactly_one_wins(
    engine: AsyncEngine,
) -> None:
    created, assigned = happy_path_history()[:2]
    await store(engine, created)
    rivals = [dataclasses.replace(assigned, event_id=uuid4()) for _ in range(20)]
    outcomes = await asyncio.gather(*(store(engine, e) for e in rivals))
    assert sum(isinstance(o, Appended) for o in outcomes) == 1
    losers = [o for o in outcomes if not isinstance(o, Appended)]
    assert all(isinstance(o, VersionTaken) and o.current_version == 2 for o in losers)
    assert await count(engine, order_event) == 2
    assert await count(engine, outbox_message) == 2


async def test_a_retried_event_id_is_answered_with_the_stored_event(
    engine: AsyncEngine,
) -> None:
    created = happy_path_history()[0]
    await store(engine, created, digest=b"first")
    retry = await store(engine, created, digest=b"first")
    reuse = await store(engine, created, digest=b"other request")
    assert isinstance(retry, AlreadyStored)
    assert retry.same_request
    assert retry.stored.event == created
    assert isinstance(reuse, AlreadyStored)
    assert not reuse.same_request
    assert await count(engine, order_event) == 1
    assert await count(engine, outbox_message) == 1
