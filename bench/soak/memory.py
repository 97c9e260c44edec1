"""Resident memory of every part of the stack, sampled in a thread, and its trend.

A service, the broker and the load generator are single processes: their RSS is what
they hold. PostgreSQL is a postmaster with a backend per connection, all mapping the
same shared buffers: summing their RSS would count those buffers once per backend, so
its figure is the sum of PSS (each shared page divided among the processes mapping
it), which adds up to what the server really occupies.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import psutil

MB: Final = 1024.0 * 1024.0
POSTGRES: Final = "postgres"


@dataclass(frozen=True, slots=True)
class Sample:
    """MB per part of the stack at `at` (seconds since the soak started)."""

    at: float
    mb: Mapping[str, float]


def _process_mb(pid: int) -> float:
    try:
        return float(psutil.Process(pid).memory_info().rss) / MB
    except psutil.Error:
        return math.nan


def _tree_pss_mb(pid: int) -> float:
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return math.nan
    total = 0.0
    for process in processes:
        try:
            info = process.memory_full_info()
        except psutil.Error:
            continue  # a backend that exited meanwhile holds nothing any more
        total += float(getattr(info, "pss", info.rss))
    return total / MB


def measure(roots: Mapping[str, int]) -> dict[str, float]:
    """MB per part now: RSS of one process, PSS of PostgreSQL's process tree."""
    return {
        name: _tree_pss_mb(pid) if name == POSTGRES else _process_mb(pid)
        for name, pid in roots.items()
    }


@dataclass
class MemorySampler:
    """Samples `roots` every `every` seconds in a daemon thread until `stop()`."""

    roots: Mapping[str, int]
    every: float
    samples: list[Sample] = field(default_factory=list)
    _origin: float = field(default_factory=time.monotonic)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._origin = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self.samples.append(
                Sample(time.monotonic() - self._origin, measure(self.roots))
            )
            if self._stop.wait(self.every):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def between(self, start: float, end: float) -> dict[str, float]:
        """The median MB per part over the samples taken in [start, end)."""
        return _medians([s for s in list(self.samples) if start <= s.at < end])


def _medians(samples: Sequence[Sample]) -> dict[str, float]:
    names = {name for sample in samples for name in sample.mb}
    result: dict[str, float] = {}
    for name in sorted(names):
        values = [
            s.mb[name] for s in samples if not math.isnan(s.mb.get(name, math.nan))
        ]
        result[name] = statistics.median(values) if values else math.nan
    return result


@dataclass(frozen=True, slots=True)
class Growth:
    """One part's memory after warm-up: early vs late median, and the slope."""

    name: str
    early_mb: float
    late_mb: float
    slope_mb_per_minute: float
    limit_mb: float

    @property
    def growth_mb(self) -> float:
        return self.late_mb - self.early_mb

    @property
    def flat(self) -> bool:
        return self.growth_mb <= self.limit_mb


def growth(
    samples: Sequence[Sample],
    *,
    warmup: float,
    end: float,
    window: float,
    limit_mb: float,
    limit_fraction: float,
) -> list[Growth]:
    """Per part: the median over the first `window` s after warm-up, against the
    median over the last `window` s, and a least-squares slope over all of it.

    Medians, because one sample can catch a burst (a batch being parsed, a garbage
    collection pending). The limit is the larger of `limit_mb` and `limit_fraction`
    of the early figure: a big process drifts by more MB for the same reason.
    """
    after = [s for s in samples if s.at >= warmup]
    early = _medians([s for s in after if s.at < warmup + window])
    late = _medians([s for s in after if s.at >= end - window])
    result = []
    for name in sorted(early):
        points = [
            (s.at / 60.0, s.mb[name])
            for s in after
            if not math.isnan(s.mb.get(name, math.nan))
        ]
        slope = (
            statistics.linear_regression(*zip(*points, strict=True)).slope
            if len(points) >= 2
            else math.nan
        )
        result.append(
            Growth(
                name=name,
                early_mb=early[name],
                late_mb=late.get(name, math.nan),
                slope_mb_per_minute=slope,
                limit_mb=max(limit_mb, limit_fraction * early[name]),
            )
        )
    return result
