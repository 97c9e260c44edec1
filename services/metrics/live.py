"""Live indicators: recomputed once per change, fanned out to SSE clients.

The consumer signals each applied batch; one task recomputes the headline indicators
(debounced) and hands the same snapshot to every subscriber, so a hundred dashboards
cost one query, not a hundred. Prometheus gets them only when
METRICS_EXPOSE_INDICATORS is on (`/metrics` has no token).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
import weakref
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
from shared.http.problems import Problem

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
# When a caller at its stream limit may try again.
STREAM_RETRY_SECONDS: Final = 5


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


class _StreamSlot:
    """One of a caller's open streams, given back exactly once however it ends."""

    def __init__(self, streams: collections.Counter[str], caller: str) -> None:
        self._streams = streams
        self._caller = caller
        self._held = True
        streams[caller] += 1

    def release(self) -> None:
        if self._held:
            self._held = False
            self._streams[self._caller] -= 1
            if not self._streams[self._caller]:
                del self._streams[self._caller]


class LiveIndicators:
    """Recomputes on change; subscribers receive every new snapshot."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        policy: IndicatorPolicy,
        streams_per_caller: int = 4,
    ) -> None:
        self._engine = engine
        self._streams_per_caller = streams_per_caller
        self._policy = policy
        self._changed = asyncio.Event()
        self._last_cost = 0.0  # seconds the last recomputation took
        self._subscribers: set[asyncio.Queue[str]] = set()
        self._streams: collections.Counter[str] = collections.Counter()  # per caller
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
                        conn, SliceFilter(), self._policy.catalog, sla=self._policy.sla
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

    def subscribe(
        self, caller: str, *, until: float, heartbeat_seconds: float = 15.0
    ) -> AsyncIterator[str]:
        """The caller's stream of server-sent events, ending at `until` (its token's
        `exp`): the current snapshot, then each new one.

        Raises:
            Problem: 429 when the caller already has its limit of streams open; each
                holds a connection and a queue, so one caller cannot exhaust them.
        """
        if self._streams[caller] >= self._streams_per_caller:
            raise Problem(
                429,
                "too_many_streams",
                f"At most {self._streams_per_caller} open streams per caller; "
                "close one first.",
                headers={"Retry-After": str(STREAM_RETRY_SECONDS)},
            )
        # Taken now, before the response starts, so the caller's next request sees it;
        # given back when the stream ends, or when it is dropped unstarted (a client
        # gone before the first byte), which runs no `finally` of the generator.
        slot = _StreamSlot(self._streams, caller)
        stream = self._stream(
            until=until, heartbeat_seconds=heartbeat_seconds, slot=slot
        )
        weakref.finalize(stream, slot.release)
        return stream

    async def _stream(
        self, *, until: float, heartbeat_seconds: float, slot: _StreamSlot
    ) -> AsyncIterator[str]:
        # The deadline is checked between waits, not by a timeout around the
        # generator: a timeout spanning a `yield` would cancel the server's send.
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=16)
        self._subscribers.add(queue)
        try:
            if self.latest is not None:
                yield f"event: indicators\ndata: {self.latest}\n\n"
            while (remaining := until - time.time()) > 0:
                try:
                    snapshot = await asyncio.wait_for(
                        queue.get(), min(heartbeat_seconds, remaining)
                    )
                except TimeoutError:
                    yield ": heartbeat\n\n"
                    continue
                yield f"event: indicators\ndata: {snapshot}\n\n"
            # The token expired: say so, so the dashboard reconnects with a new one.
            yield "event: expired\ndata: {}\n\n"
        finally:
            self._subscribers.discard(queue)
            slot.release()
