"""The event store: gapless versions under concurrency, idempotency, the outbox."""

from __future__ import annotations

import asyncio
import dataclasses
from uuid import uuid4

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.engine import driver_of
from shared.db.event_store import (
    Appended,
    NotAppended,
    find_event,
    load_stream,
    order_event,
    outbox_message,
)
from shared.db.order_summary import order_summary
from shared.domain.lifecycle import OrderEvent, fold
from tests.builders import happy_path_history
from tests.integration.store_io import append_stored

pytestmark = pytest.mark.integration


async def store(
    engine: AsyncEngine, event: OrderEvent, *, digest: bytes = b"d"
) -> Appended | NotAppended:
    async with engine.begin() as conn:
        return await append_stored(conn, event, digest=digest)


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
        stored = await load_stream(await driver_of(conn), history[0].order_id)
    assert [s.event for s in stored] == history
    assert fold(s.event for s in stored) == fold(history)
    assert await count(engine, outbox_message) == len(history)
    assert await count(engine, order_summary) == 1


async def test_of_twenty_concurrent_writers_of_one_version_exactly_one_wins(
    engine: AsyncEngine,
) -> None:
    created, assigned = happy_path_history()[:2]
    await store(engine, created)
    rivals = [dataclasses.replace(assigned, event_id=uuid4()) for _ in range(20)]
    outcomes = await asyncio.gather(*(store(engine, e) for e in rivals))
    assert sum(isinstance(o, Appended) for o in outcomes) == 1
    assert sum(isinstance(o, NotAppended) for o in outcomes) == 19
    assert await count(engine, order_event) == 2
    assert await count(engine, outbox_message) == 2


async def test_an_event_id_is_stored_once_with_its_request_digest(
    engine: AsyncEngine,
) -> None:
    created = happy_path_history()[0]
    assert isinstance(await store(engine, created, digest=b"first"), Appended)
    assert isinstance(await store(engine, created, digest=b"first"), NotAppended)
    async with engine.connect() as conn:
        stored = await find_event(await driver_of(conn), created.event_id)
    assert stored is not None
    assert stored.event == created
    assert stored.request_digest == b"first"
    assert await count(engine, order_event) == 1
    assert await count(engine, outbox_message) == 1
