"""The backlog figures of `/metrics` and `/readyz`: outbox rows and consumer lag.

They are measured when asked, not by a loop of their own: the relay is not running
when its backlog matters most (the broker is down), and a consumer stuck in a
transaction cannot report on itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from shared.kafka.lag import PartitionLag
from shared.outbox.backlog import BACKLOG_COUNT_CAP, OutboxBacklog

logger = logging.getLogger(__name__)

T = TypeVar("T")

OutboxSource = Callable[[], Awaitable[OutboxBacklog]]
LagSource = Callable[[], Awaitable[Sequence[PartitionLag]]]

MEASURE_TIMEOUT_SECONDS: Final = 2.0
# Several Prometheus servers and load balancers asking at once share one measurement.
REUSE_SECONDS: Final = 1.0


@dataclass(frozen=True, slots=True)
class Backlog:
    """What the service's outboxes and consumers owe, as measured at `measured_at`."""

    outboxes: Sequence[OutboxBacklog] = ()
    consumers: Sequence[PartitionLag] = ()
    measured_at: float = 0.0


class Reused(Generic[T]):
    """One measurement shared by every asker for `seconds`; one measures at a time.

    Probes and scrapes arrive in floods (several load balancers and Prometheus
    servers); each flood costs the database and broker one measurement a second.
    """

    def __init__(self, *, seconds: float = REUSE_SECONDS) -> None:
        self._seconds = seconds
        self._latest: T | None = None
        self._latest_at = float("-inf")
        self._lock = asyncio.Lock()

    async def get(self, measure: Callable[[], Awaitable[T]]) -> T:
        async with self._lock:
            if self._latest is None or (
                time.monotonic() - self._latest_at >= self._seconds
            ):
                self._latest = await measure()
                self._latest_at = time.monotonic()
            return self._latest


class BacklogMonitor:
    """Measures a service's outboxes and consumer groups, at most once a second.

    A source that cannot answer (database or broker down) is left out: its gauges
    disappear, and the readiness checks already say what is unreachable.
    """

    def __init__(
        self,
        *,
        outboxes: Sequence[OutboxSource] = (),
        consumers: Sequence[LagSource] = (),
    ) -> None:
        self._outboxes = list(outboxes)
        self._consumers = list(consumers)
        self._reused: Reused[Backlog] = Reused()

    async def measure(self) -> Backlog:
        return await self._reused.get(self._measure)

    async def _measure(self) -> Backlog:
        outboxes = await asyncio.gather(
            *(_bounded(source()) for source in self._outboxes)
        )
        consumers = await asyncio.gather(
            *(_bounded(source()) for source in self._consumers)
        )
        return Backlog(
            outboxes=[o for o in outboxes if o is not None],
            consumers=[p for lags in consumers if lags is not None for p in lags],
            measured_at=time.time(),
        )


async def _bounded(measurement: Awaitable[T]) -> T | None:
    try:
        return await asyncio.wait_for(measurement, MEASURE_TIMEOUT_SECONDS)
    except Exception as err:  # a probe failing must not fail the scrape
        logger.debug("backlog measurement failed: %s", err)
        return None


def backlog_json(backlog: Backlog) -> dict[str, Any]:
    """The figures for `/readyz`: per outbox, and per consumer group and partition."""
    groups: dict[str, dict[str, Any]] = {}
    for p in backlog.consumers:
        group = groups.setdefault(p.group, {"lag": 0, "partitions": []})
        group["lag"] += p.lag
        group["partitions"].append(
            {
                "topic": p.topic,
                "partition": p.partition,
                "lag": p.lag,
                "last_applied_record_age_seconds": None
                if p.last_applied_record_time is None
                else round(
                    max(0.0, backlog.measured_at - p.last_applied_record_time), 3
                ),
            }
        )
    return {
        "outboxes": {
            o.outbox: {
                "unpublished": o.unpublished,
                "oldest_age_seconds": round(o.oldest_age_seconds, 3),
            }
            for o in backlog.outboxes
        },
        "consumers": groups,
    }


def backlog_gauges(backlog: Backlog) -> bytes:
    """The figures as Prometheus gauges (labels: outbox; group, topic, partition)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_BacklogCollector(backlog))
    return generate_latest(registry)


class _BacklogCollector(Collector):
    def __init__(self, backlog: Backlog) -> None:
        self._backlog = backlog

    def collect(self) -> Iterable[GaugeMetricFamily]:
        unpublished = GaugeMetricFamily(
            "servicetrail_outbox_unpublished_messages",
            "Outbox rows not yet acknowledged by the broker "
            f"(counted up to {BACKLOG_COUNT_CAP}).",
            labels=["outbox"],
        )
        oldest = GaugeMetricFamily(
            "servicetrail_outbox_oldest_unpublished_age_seconds",
            "Age of the oldest unpublished outbox row (0 when none).",
            labels=["outbox"],
        )
        for o in self._backlog.outboxes:
            unpublished.add_metric([o.outbox], o.unpublished)
            oldest.add_metric([o.outbox], o.oldest_age_seconds)
        lag = GaugeMetricFamily(
            "servicetrail_consumer_lag_records",
            "Records on the broker that the group has not applied (stored offsets).",
            labels=["group", "topic", "partition"],
        )
        applied = GaugeMetricFamily(
            "servicetrail_consumer_last_applied_record_timestamp_seconds",
            "Record time of the last record this replica applied, per partition.",
            labels=["group", "topic", "partition"],
        )
        for p in self._backlog.consumers:
            labels = [p.group, p.topic, str(p.partition)]
            lag.add_metric(labels, p.lag)
            if p.last_applied_record_time is not None:
                applied.add_metric(labels, p.last_applied_record_time)
        yield from (unpublished, oldest, lag, applied)
