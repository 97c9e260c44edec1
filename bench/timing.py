"""Counts over time, summed across many timed sections: the benchmarks' rates."""

from __future__ import annotations

import math
from dataclasses import dataclass


def rate(count: int, seconds: float) -> float:
    """`count` per second; NaN when no time was measured."""
    return count / seconds if seconds > 0 else math.nan


@dataclass(slots=True)
class Timed:
    """`count` items in `seconds` (summed over many timed sections)."""

    count: int = 0
    seconds: float = 0.0

    def add(self, count: int, seconds: float) -> None:
        self.count += count
        self.seconds += seconds

    @property
    def per_second(self) -> float:
        return rate(self.count, self.seconds)

    @property
    def us_each(self) -> float:
        return 1e6 * self.seconds / self.count if self.count else math.nan
