"""The soak's broker baseline: a bare consumer tailing a topic from its ends."""

from __future__ import annotations

import asyncio
import time

import pytest

from bench.soak.tail import TopicTail
from services.stack.broker import create_topics
from tests.builders import happy_path_history
from tests.fixtures.kafka import random_topic_name
from tests.integration.kafka_io import publish, record_value

pytestmark = pytest.mark.integration


async def test_the_tail_receives_the_event_ids_published_after_it_started(
    kafka_bootstrap: str,
) -> None:
    topic = random_topic_name("tail")
    await create_topics(kafka_bootstrap, {topic: 3})
    before, *after = happy_path_history()
    await publish(
        kafka_bootstrap, topic, [(str(before.order_id), record_value(before))]
    )
    tail = TopicTail(kafka_bootstrap, topic=topic)
    tail.start()
    try:
        started = time.time()
        await publish(
            kafka_bootstrap,
            topic,
            [(str(e.order_id), record_value(e)) for e in after]
            + [("not-an-event", b"not json")],
        )
        wanted = [str(e.event_id) for e in after]
        async with asyncio.timeout(15):
            while len(tail.received_at(wanted)) < len(wanted):
                await asyncio.sleep(0.05)
        received = tail.received_at([*wanted, str(before.event_id)])
    finally:
        tail.stop()
    # Only what arrived after the start, each stamped when it was received.
    assert sorted(received) == sorted(wanted)
    assert all(started <= at <= time.time() for at in received.values())
