"""Reconciliation re-publishes what a lost broker never delivered, and only that."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ledger.app import create_app as create_ledger
from services.ledger.settings import LedgerSettings
from shared.db.reconcile import missing_from_consumers, requeue_missing
from shared.domain.actors import Role
from shared.events.topics import ORDER_EVENTS
from shared.kafka.producer import create_producer
from shared.outbox.relay import OutboxRelay
from shared.settings import CommonSettings
from tests.api.conftest import bearer, running
from tests.builders import happy_path_history
from tests.fixtures.stack import service_settings
from tests.integration.store_io import append_stored

pytestmark = pytest.mark.integration
NO_GRACE = timedelta(0)


async def test_events_a_lost_broker_dropped_reach_the_ledger_after_reconciliation(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    histories = [happy_path_history() for _ in range(3)]
    async with engine.begin() as conn:
        for history in histories:
            for event in history:
                await append_stored(conn, event)
        # What a broker restart leaves behind: acknowledged by the old broker,
        # marked published, gone from its memory, never seen by the ledger.
        await conn.execute(
            text("UPDATE event_store.outbox_message SET published_at = now()")
        )
    total = sum(len(h) for h in histories)
    async with engine.connect() as conn:
        assert len(await missing_from_consumers(conn, grace=NO_GRACE)) == total
    async with engine.begin() as conn:
        assert await requeue_missing(conn, topic=ORDER_EVENTS, grace=NO_GRACE) == total
    async with engine.connect() as conn:
        # Queued but not yet sent: nothing more to queue (no double queueing).
        assert await missing_from_consumers(conn, grace=NO_GRACE) == []

    relay = OutboxRelay(
        engine,
        lambda: create_producer(settings),
        poll_interval=timedelta(milliseconds=10),
        topic_prefix=settings.kafka_topic_prefix,
    )
    auditor = bearer(settings)(Role.AUDITOR, "a-1")
    relay_task = asyncio.create_task(relay.run())
    try:
        async with running(
            create_ledger(service_settings(settings, LedgerSettings))
        ) as ledger:
            async with asyncio.timeout(30):
                while True:
                    verified = await ledger.get("/v1/ledger/verify", headers=auditor)
                    result = json.loads(verified.text.splitlines()[-1])["result"]
                    if result["events"] == total:
                        break
                    await asyncio.sleep(0.2)
            assert result["valid"], result
            for history in histories:
                order = (
                    await ledger.get(
                        f"/v1/orders/{history[0].order_id}/history", headers=auditor
                    )
                ).json()
                assert [e["orderversion"] for e in order["entries"]] == list(
                    range(1, len(history) + 1)
                )
    finally:
        relay_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await relay_task
    async with engine.connect() as conn:
        assert await missing_from_consumers(conn, grace=NO_GRACE) == []
