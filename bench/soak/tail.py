"""The broker's own share of the lag: a bare consumer tailing the order topic.

The soak's lag runs from a POST's acknowledgement to the consumer's commit, so it
holds the relay, the broker and the consumer. A bare aiokafka consumer with the
services' fetch settings, no group, no database and no work per record, tailing the
same topic in the same run, shows what the broker alone costs at each moment: the
embedded Tansu broker lists every stored record batch of a partition on each fetch
that finds data, so its fetches slow down as the log grows, for any consumer. The
per-event difference between a consumer's commit and this tail's receipt is what the
consumer itself adds.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from shared.events.topics import ORDER_EVENTS
from shared.settings import CommonSettings

# The services' consumer settings (shared.kafka.producer.create_consumer) that bear
# on how soon a record is seen.
MAX_PARTITION_FETCH_BYTES = 4 * 1024 * 1024


class TopicTail:
    """Receipt time (epoch seconds) of every event id on the order topic, from now on.

    Runs its own event loop in a daemon thread, so the soak's synchronous phases go
    on beside it; `received_at` is safe to call from any thread.
    """

    def __init__(self, bootstrap_servers: str, *, topic: str = ORDER_EVENTS) -> None:
        self._bootstrap = bootstrap_servers
        self._topic = topic
        self._received: dict[str, float] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, name="topic-tail", daemon=True
        )

    def start(self, timeout: float = 30.0) -> None:
        """Start tailing from the logs' current ends; return once positioned."""
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            raise RuntimeError(f"the topic tail did not start: {self._error}")

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=10.0)

    def received_at(self, event_ids: Sequence[str]) -> dict[str, float]:
        """When each of `event_ids` reached this tail (absent: not yet)."""
        with self._lock:
            return {i: self._received[i] for i in event_ids if i in self._received}

    def _run(self) -> None:
        try:
            asyncio.run(self._tail())
        except BaseException as err:  # reported by start(), or ends the tail
            self._error = err
            self._ready.set()

    async def _tail(self) -> None:
        settings = CommonSettings()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            enable_auto_commit=False,
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            max_partition_fetch_bytes=MAX_PARTITION_FETCH_BYTES,
            isolation_level="read_committed",
        )
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(self._topic) or set()
            if not partitions:
                await consumer.topics()  # refresh the metadata once
                partitions = consumer.partitions_for_topic(self._topic) or set()
            assigned = [TopicPartition(self._topic, p) for p in sorted(partitions)]
            consumer.assign(assigned)
            await consumer.seek_to_end(*assigned)
            for tp in assigned:
                await consumer.position(tp)
            self._ready.set()
            while not self._stopping.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=5000)
                now = time.time()
                ids = [
                    _event_id(r.value)
                    for records in batch.values()
                    for r in records
                    if r.value is not None
                ]
                with self._lock:
                    self._received.update((i, now) for i in ids if i)
        finally:
            await consumer.stop()


def _event_id(value: bytes) -> str:
    """The CloudEvent's id (the event id), or "" for a record that has none."""
    try:
        envelope = json.loads(value)
    except ValueError:
        return ""
    event_id = envelope.get("id") if isinstance(envelope, dict) else None
    return event_id if isinstance(event_id, str) else ""
