"""Consumer lag: records on the broker that a group has not applied yet, per partition.

The applied position is the offset stored in the database with the effect (not the
group's Kafka offset, which is never committed), so every replica of a service
reports the whole group's lag, including partitions another replica holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.tracking import TrackingTables


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """One partition of one group: records waiting, and the last applied one's time."""

    group: str
    topic: str
    partition: int
    lag: int
    # The producer's clock (Unix seconds); None if this replica applied none yet.
    last_applied_record_time: float | None


async def measure_lag(
    engine: AsyncEngine,
    consumer: AIOKafkaConsumer,
    *,
    tracking: TrackingTables,
    group: str,
    topics: Sequence[str],
    last_applied_record_time: Mapping[TopicPartition, float],
) -> list[PartitionLag]:
    """The lag of `group` on every partition of `topics` the broker knows."""
    partitions = [
        TopicPartition(topic, partition)
        for topic in topics
        for partition in sorted(consumer.partitions_for_topic(topic) or ())
    ]
    if not partitions:
        return []
    # A plain read, not the consumer's FOR UPDATE: a probe must never wait for a
    # batch in progress, nor hold it up.
    table = tracking.consumer_offset
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(table.c.topic, table.c.partition, table.c.offset).where(
                table.c.group_id == group
            )
        )
        applied = {TopicPartition(r.topic, r.partition): r.offset for r in rows}
    ends = await consumer.end_offsets(partitions)
    # The embedded broker (Tansu) answers a log's end as its last batch's first
    # offset + 1, short by the rest of that batch; the high watermark of a fetch is
    # right. This member has one for the partitions it is assigned.
    assigned = consumer.assignment()
    for tp in partitions:
        highwater = consumer.highwater(tp) if tp in assigned else None
        if highwater is not None:
            ends[tp] = max(ends[tp], highwater)
    never_applied = [tp for tp in partitions if tp not in applied]
    # A partition never applied is read from its first record, which retention may
    # have moved past offset 0.
    starts = await consumer.beginning_offsets(never_applied) if never_applied else {}
    return [
        PartitionLag(
            group=group,
            topic=tp.topic,
            partition=tp.partition,
            # Stored offsets past the end mean the broker lost records (a restarted
            # in-memory broker); "nothing waiting" is still the truth for this gauge.
            lag=max(0, ends[tp] - (applied[tp] + 1 if tp in applied else starts[tp])),
            last_applied_record_time=last_applied_record_time.get(tp),
        )
        for tp in partitions
    ]
