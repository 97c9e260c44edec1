"""Percentiles and the figures each phase reports."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted values; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True, slots=True)
class Distribution:
    count: int
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Distribution:
        ordered = sorted(values)
        return cls(
            count=len(ordered),
            p50=percentile(ordered, 50),
            p90=percentile(ordered, 90),
            p99=percentile(ordered, 99),
            max=ordered[-1] if ordered else math.nan,
        )

    def describe(self, unit: str = "ms") -> str:
        return (
            f"p50 {self.p50:.1f} {unit}, p90 {self.p90:.1f} {unit}, "
            f"p99 {self.p99:.1f} {unit}, max {self.max:.1f} {unit} (n={self.count})"
        )


@dataclass(frozen=True, slots=True)
class ThroughputFigures:
    """A closed-loop run against one endpoint."""

    name: str
    requests_per_second: float
    latency_ms: Distribution
    errors: dict[str, int]
    client_cpu_percent: float
    server_cpu_percent: dict[str, float] = field(default_factory=dict)

    @property
    def server_cpu_ms_per_request(self) -> float:
        """CPU of the server process per answered request: unlike requests/s, it
        hardly changes when other processes compete for the cores."""
        percent = self.server_cpu_percent.get(self.name, math.nan)
        if not self.requests_per_second:
            return math.nan
        return 10.0 * percent / self.requests_per_second


@dataclass(frozen=True, slots=True)
class LagFigures:
    """The open-loop run and the ledger's view of it."""

    target_rate: float
    achieved_rate: float
    post_latency_ms: Distribution
    errors: dict[str, int]
    late_starts: int
    # recorded_at (intake, before commit) -> ledger appended_at
    commit_to_ledger_ms: Distribution
    # client's ack time -> ledger appended_at
    ack_to_ledger_ms: Distribution
    missing: int  # acknowledged but not in the ledger when we gave up waiting


@dataclass(frozen=True, slots=True)
class RelayFigures:
    """One backlog through each stage alone (`bench.ingest.relay`), events/s."""

    backlog: int
    events_per_second: float  # the relay
    raw_drain_events_per_second: float  # a bare producer over the same rows
    ledger_events_per_second: float  # the ledger consuming the relay's records
    cpu_percent: dict[str, float] = field(default_factory=dict)  # while relaying
