"""What each phase of the metrics benchmark measured (plain data, JSON-serialisable)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

from bench.ingest.stats import Distribution
from bench.timing import Timed, rate

TARGET_APPLY_EPS: Final = 10_000.0
TARGET_MEMORY_GROWTH_MB: Final = 50.0
TARGET_QUERY_P99_MS: Final = 50.0
MB: Final = 1024 * 1024


@dataclass(slots=True)
class Segment:
    """Events [first, first + count) applied in `seconds` (`cpu_seconds` of ours)."""

    first: int
    count: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    rss_mb: float = math.nan  # after the segment, after gc.collect()
    distinct_orders_per_batch: float = 0.0

    @property
    def per_second(self) -> float:
        return rate(self.count, self.seconds)


@dataclass(slots=True)
class MemoryPoint:
    """This process after `events` applied events (after gc.collect())."""

    events: int
    rss_mb: float
    python_objects: int


@dataclass(slots=True)
class ApplyFigures:
    """The apply phase. Per transaction: pool checkout, BEGIN (the first statement
    starts it, as the consumer's own reads do), apply(), COMMIT, release."""

    batch_size: int
    window: int
    applied: Timed = field(default_factory=Timed)  # whole transactions
    applied_cpu: Timed = field(default_factory=Timed)  # this process's CPU in them
    begin: Timed = field(default_factory=Timed)  # BEGIN + SELECT 1 via SQLAlchemy
    apply_call: Timed = field(default_factory=Timed)
    generate: Timed = field(default_factory=Timed)  # the event stream (not counted)
    wall_seconds: float = 0.0
    batch_ms: Distribution | None = None
    segments: list[Segment] = field(default_factory=list)
    memory: list[MemoryPoint] = field(default_factory=list)
    # Seconds per statement kind as asyncpg timed it (round trip, argument encoding
    # and result decoding), from its query logger.
    statements: dict[str, Timed] = field(default_factory=dict)
    orders: int = 0
    ratings: int = 0
    complaints: int = 0
    late_events: int = 0
    shapes: dict[str, int] = field(default_factory=dict)
    stopped_early: bool = False

    def memory_at(self, events: int) -> MemoryPoint | None:
        """The first point at or after `events`."""
        return next((m for m in self.memory if m.events >= events), None)


@dataclass(slots=True)
class CpuFigures:
    """Single-core CPU of apply()'s per-event and per-row steps, on samples."""

    model_validate: Timed = field(default_factory=Timed)  # stored JSON -> OrderFacts
    apply_event: Timed = field(default_factory=Timed)
    model_dump_json: Timed = field(default_factory=Timed)  # OrderFacts -> stored
    fact_row: Timed = field(default_factory=Timed)  # order_fact's columns


@dataclass(slots=True)
class QueryFigures:
    name: str
    calls: int
    ms: Distribution
    stopped_early: bool = False
    error: str | None = None


@dataclass(slots=True)
class PlanFigures:
    """EXPLAIN (ANALYZE, BUFFERS) of one statement a query runs."""

    query: str
    statement: str
    execution_ms: float
    planning_ms: float
    scans: list[str]  # "Seq Scan on order_fact (rows 100000)" ...
    text: str = ""


@dataclass(slots=True)
class ServiceFigures:
    """`python -m services.metrics` consuming a Kafka backlog."""

    events: int
    produced_seconds: float = math.nan
    applied: int = 0
    seconds: float = math.nan  # first progress -> all applied (or the time limit)
    seconds_from_start: float = math.nan
    rss_start_mb: float = math.nan  # ready, before the backlog is consumed
    rss_points: list[tuple[int, float]] = field(default_factory=list)  # (applied, MB)
    rss_peak_mb: float = math.nan
    cpu_percent: dict[str, float] = field(default_factory=dict)
    stopped_early: bool = False
    stalled: bool = False
    log_excerpt: str = ""
    error: str | None = None

    @property
    def per_second(self) -> float:
        return rate(self.applied, self.seconds)


@dataclass(slots=True)
class Results:
    events_requested: int
    batch: int
    fsync: bool
    database: str
    apply: ApplyFigures | None = None
    cpu: CpuFigures = field(default_factory=CpuFigures)
    queries: list[QueryFigures] = field(default_factory=list)
    plans: list[PlanFigures] = field(default_factory=list)
    service: ServiceFigures | None = None
    table_sizes_mb: dict[str, float] = field(default_factory=dict)
    cpu_percent: dict[str, dict[str, float]] = field(default_factory=dict)
    profiled: bool = False
    notes: list[str] = field(default_factory=list)
