"""Live indicators: recomputed once per change, fanned out to SSE clients.

The consumer signals each applied batch; one task recomputes the headline indicators
(debounced) and hands the same snapshot to every subscriber, so a hundred dashboards
cost one query, not a hundred. Prometheus gets them only when
METRICS_EXPOSE_INDICATORS is on (`/metrics` has no token).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncEngine

from services.metrics.catalog import SliceFilter
from services.metrics.policy import IndicatorPolicy
from services.metrics.queries import compute_indicators, provenance

logger = logging.getLogger(__name__)

EVENTS_APPLIED: Final = Counter(
    "servicetrail_metrics_events_applied_total",
    "Order events applied to the indicators.",
)
LATE_EVENTS: Final = Counter(
    "servicetrail_metrics_late_events_total",
    "Events recorded more than 5 minutes after they happened (offline sync): counted "
    "in the window of their own `time`.",
)
FUTURE_EVENTS: Final = Counter(
    "servicetrail_metrics_future_dated_events_total",
    "Events whose `time` is after their `recordedtime` (device clock ahead): counted "
    "as reported, within the allowed skew.",
)
DEBOUNCE_SECONDS: Final = 0.25
# A recomputation scans every order, so its cost grows with them; waiting this many
# times its duration before the next keeps the stream under ~20% of a database core
# whatever the size (at 100,000 orders: about one snapshot a second), where a fixed
# debounce starved the ingest path in the soak benchmark.
IDLE_PER_BUSY: Final = 4.0


def headline_gauges(values: dict[str, Any]) -> bytes:
    """The headline indicators as Prometheus gauges (labels: indicator, statistic)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_HeadlineCollector(values))
    return generate_latest(registry)


class _HeadlineCollector(Collector):
    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values

    def collect(self) -> Iterable[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "servicetrail_indicator",
            "Headline quality indicators over all time (rates 0..1, times in seconds).",
            labels=["indicator", "statistic"],
        )
        for name, value in self._values.items():
            for statistic in ("value", "p50", "p90", "mean", "count"):
                number = value.get(statistic)
                if isinstance(number, int | float):
                    gauge.add_metric([name, statistic], number)
        yield gauge


class LiveIndicators:
    """Recomputes on change; subscribers receive every new snapshot."""

    def __init__(self, engine: AsyncEngine, *, policy: IndicatorPolicy) -> None:
        self._engine = engine
        self._policy = policy
        self._changed = asyncio.Event()
        self._last_cost = 0.0  # seconds the last recomputation took
        self._subscribers: set[asyncio.Queue[str]] = set()
        self.latest: str | None = None
        self.values: dict[str, Any] = {}

    def notify(self) -> None:
        """Called by the consumer after each applied batch."""
        self._changed.set()

    async def run(self) -> None:
        self._changed.set()  # a first snapshot at start-up
        while True:
            await self._changed.wait()
            await asyncio.sleep(max(DEBOUNCE_SECONDS, IDLE_PER_BUSY * self._last_cost))
            self._changed.clear()
            began = time.monotonic()
            try:
                async with self._engine.connect() as conn:
                    values = await compute_indicators(
                        conn, SliceFilter(), self._policy.catalog
                    )
                    as_of = await provenance(conn, policy_version=self._policy.version)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("live indicators not recomputed")
                continue
            finally:
                self._last_cost = time.monotonic() - began
            self.values = values
            snapshot = json.dumps(
                {
                    "at": datetime.now(UTC).isoformat(),
                    "window": "all",
                    "indicators": values,
                    "as_of": as_of.model_dump(mode="json"),
                },
                default=str,
            )
            if snapshot != self.latest:
                self.latest = snapshot
                for queue in list(self._subscribers):
                    if queue.full():
                        # A slow reader skips stale snapshots, never the latest.
                        with contextlib.suppress(asyncio.QueueEmpty):
                            queue.get_nowait()
                    queue.put_nowait(snapshot)

    def prometheus(self) -> bytes:
        """The latest headline indicators in Prometheus text format."""
        return headline_gauges(self.values)

    async def stream(self, heartbeat_seconds: float = 15.0) -> AsyncIterator[str]:
        """Server-sent events: the current snapshot, then each new one."""
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=16)
        self._subscribers.add(queue)
        try:
            if self.latest is not None:
                yield f"event: indicators\ndata: {self.latest}\n\n"
            while True:
                try:
                    snapshot = await asyncio.wait_for(queue.get(), heartbeat_seconds)
                except TimeoutError:
                    yield ": heartbeat\n\n"
                    continue
                yield f"event: indicators\ndata: {snapshot}\n\n"
        finally:
            self._subscribers.discard(queue)
