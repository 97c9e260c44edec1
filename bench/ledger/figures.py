"""What each phase of the ledger benchmark measured (plain data, JSON-serialisable)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

from bench.ingest.stats import Distribution
from bench.timing import Timed, rate

TARGET_APPEND_EPS: Final = 10_000.0
TARGET_VERIFY_EPS: Final = 50_000.0
TARGET_HISTORY_P99_MS: Final = 20.0


@dataclass(slots=True)
class Segment:
    """A slice of the load: entries [first, first + count) appended in `seconds`."""

    first: int
    count: int
    seconds: float
    cpu_seconds: float = 0.0  # this process's CPU in those transactions
    batches: int = 0
    # Statement kind -> seconds within this segment (see AppendFigures.statements).
    statements: dict[str, float] = field(default_factory=dict)
    handle_seconds: float = 0.0
    commit_seconds: float = 0.0

    @property
    def per_second(self) -> float:
        return rate(self.count, self.seconds)

    @property
    def per_cpu_second(self) -> float:
        return rate(self.count, self.cpu_seconds)


@dataclass(slots=True)
class AppendFigures:
    batch_size: int
    # Inside the transactions (pool checkout, handle, commit): the append rate.
    appended: Timed = field(default_factory=Timed)
    # This process's CPU inside those transactions (time.process_time): robust to
    # other processes taking the cores, and the one-core ceiling of the appender.
    appended_cpu: Timed = field(default_factory=Timed)
    handle: Timed = field(default_factory=Timed)
    commit: Timed = field(default_factory=Timed)
    # Work of the real consumer outside `handle` (Kafka-free here): parse_record,
    # in CPU seconds of this process.
    parse: Timed = field(default_factory=Timed)
    generate: Timed = field(default_factory=Timed)
    wall_seconds: float = 0.0
    batch_ms: Distribution | None = None
    segments: list[Segment] = field(default_factory=list)
    # SQL statement kind -> (executions, seconds), from SQLAlchemy's cursor events.
    statements: dict[str, Timed] = field(default_factory=dict)
    # The same rows, read back after each batch, inserted into plain tables.
    raw_executemany: Timed = field(default_factory=Timed)
    raw_copy: Timed = field(default_factory=Timed)
    raw_with_indexes: bool = True
    stopped_early: bool = False
    mean_value_bytes: float = 0.0
    mean_canonical_bytes: float = 0.0

    @property
    def last_segment(self) -> Segment | None:
        return self.segments[-1] if self.segments else None


@dataclass(slots=True)
class CpuFigures:
    """CPU (process time) of the per-event steps, over a sample of the same events."""

    parse_record: Timed = field(default_factory=Timed)
    json_loads: Timed = field(default_factory=Timed)
    canonical: Timed = field(
        default_factory=Timed
    )  # canonical_from_json, as the consumer
    sha256_once: Timed = field(default_factory=Timed)  # 1 hash over canonical bytes
    sha256_appender: Timed = field(default_factory=Timed)  # leaf + chain + 1 node
    auditor_add: Timed = field(default_factory=Timed)  # LedgerAuditor.add in memory
    canonical_mb_per_s: float = math.nan


@dataclass(slots=True)
class VerifyFigures:
    verify: Timed = field(default_factory=Timed)
    verify_cpu: Timed = field(default_factory=Timed)  # this process's CPU
    valid: bool = False
    findings: list[str] = field(default_factory=list)
    iter_entries: Timed = field(default_factory=Timed)
    fetch_only: Timed = field(default_factory=Timed)


@dataclass(slots=True)
class HistoryFigures:
    events: int
    direct_ms: Distribution
    sql_ms: Distribution  # order_entries alone: the query and Entry objects
    http_ms: Distribution | None = None
    http_error: str | None = None


@dataclass(slots=True)
class Results:
    entries_requested: int
    orders: int
    batch: int
    fsync: bool
    database: str
    append: AppendFigures | None = None
    cpu: CpuFigures = field(default_factory=CpuFigures)
    verify: VerifyFigures | None = None
    history: HistoryFigures | None = None
    # Phase -> percent of one core per process tree, plus "other processes".
    cpu_percent: dict[str, dict[str, float]] = field(default_factory=dict)
    ledger_size: int = 0
    profiled: bool = False
    notes: list[str] = field(default_factory=list)
