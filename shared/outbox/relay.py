"""The outbox relay: publishes stored events to Kafka at least once, in order.

Correctness notes:
- It selects rows still marked unpublished, never "ids after the last one sent": ids
  are taken before commit, so a transaction holding a lower id can commit after a
  higher one; a high-water mark would skip it forever.
- Each order's events keep their order: an order's next event is only appended after
  its previous one committed, so its outbox id is higher; rows go out in id order and
  are marked published only after the broker acknowledged them, and only up to the
  first failure, so a failed send is retried before anything after it is marked.
- Exactly one relay publishes at a time (a session advisory lock): two relays would
  interleave and reorder an order's events.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Callable
from datetime import timedelta
from typing import Final

from aiokafka import AIOKafkaProducer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.db.base import EVENT_STORE_SCHEMA
from shared.events.envelope import KAFKA_HEADERS

logger = logging.getLogger(__name__)

RELAY_LOCK_KEY: Final = 0x5E_77_1C_E7_0A_11  # arbitrary, fixed: "the relay" lock


def relay_lock_key(schema: str) -> int:
    """One leader per outbox: the event store's, and metrics' alerts outbox."""
    return RELAY_LOCK_KEY + zlib.crc32(schema.encode())


class OutboxRelay:
    """Moves outbox rows to Kafka; run `run()` as a background task."""

    def __init__(
        self,
        engine: AsyncEngine,
        producer_factory: Callable[[], AIOKafkaProducer],
        *,
        batch_size: int = 2000,
        poll_interval: timedelta = timedelta(milliseconds=20),
        topic_prefix: str = "",
        schema: str = EVENT_STORE_SCHEMA,
    ) -> None:
        self._engine = engine
        self._producer_factory = producer_factory
        self.producer: AIOKafkaProducer | None = None
        self._batch_size = batch_size
        self._topic_prefix = topic_prefix
        self._lock_key = relay_lock_key(schema)
        self._select_batch = text(
            f"SELECT id, topic, key, value FROM {schema}.outbox_message "  # noqa: S608
            "WHERE published_at IS NULL ORDER BY id LIMIT :limit"
        )
        self._mark_published = text(
            f"UPDATE {schema}.outbox_message SET published_at = now() "  # noqa: S608
            "WHERE id = ANY(:ids)"
        )
        self._count_backlog = text(
            f"SELECT count(*) FROM {schema}.outbox_message "  # noqa: S608
            "WHERE published_at IS NULL"
        )
        self._poll_seconds = poll_interval.total_seconds()
        self.published_total = 0
        self.is_leader = False

    async def run(self) -> None:
        """Connect, wait for leadership, publish until cancelled; heal from failures.

        The broker may be down when the service starts or at any time later: events
        are still accepted (the outbox is the durable truth) and drain once it is back.
        """
        while True:
            producer = self._producer_factory()
            try:
                await producer.start()
                self.producer = producer
                async with self._engine.connect() as lock_conn:
                    await self._lead(lock_conn)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                logger.warning("outbox relay interrupted (%s); retrying in 1 s", err)
                await asyncio.sleep(1.0)
            finally:
                self.is_leader = False
                self.producer = None
                await producer.stop()

    async def _lead(self, lock_conn: AsyncConnection) -> None:
        # Standby relays poll the lock: PostgreSQL offers no wake-up on release.
        while not await self._try_lock(lock_conn):  # noqa: ASYNC110
            await asyncio.sleep(1.0)
        self.is_leader = True
        logger.info("outbox relay is the leader")
        while True:
            sent = await self.publish_batch()
            if sent < self._batch_size:
                await asyncio.sleep(self._poll_seconds)

    async def _try_lock(self, lock_conn: AsyncConnection) -> bool:
        # The lock lives as long as this connection: a dead relay frees it at once.
        locked = await lock_conn.scalar(
            text("SELECT pg_try_advisory_lock(:key)"), {"key": self._lock_key}
        )
        await lock_conn.commit()
        return bool(locked)

    async def publish_batch(self) -> int:
        """Publish one batch of unpublished rows; return how many were acknowledged."""
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(self._select_batch, {"limit": self._batch_size})
            ).all()
            await conn.commit()
        if not rows:
            return 0
        assert self.producer is not None, "publish_batch runs inside run()"
        pending = [
            await self.producer.send(
                self._topic_prefix + row.topic,
                value=bytes(row.value),
                key=row.key.encode(),
                headers=KAFKA_HEADERS,
            )
            for row in rows
        ]
        outcomes = await asyncio.gather(*pending, return_exceptions=True)
        acked: list[int] = []
        failure: BaseException | None = None
        for row, outcome in zip(rows, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                failure = outcome
                break
            acked.append(row.id)
        if acked:
            async with self._engine.begin() as conn:
                await conn.execute(self._mark_published, {"ids": acked})
            self.published_total += len(acked)
        if failure is not None:
            raise failure
        return len(acked)

    async def backlog(self) -> int:
        """How many outbox rows wait to be published."""
        async with self._engine.connect() as conn:
            value = await conn.scalar(self._count_backlog)
        return int(value or 0)
