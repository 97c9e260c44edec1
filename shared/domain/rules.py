"""The configurable limits the lifecycle enforces on every write (events.md, "Rules").

A `Policy` is plain data passed into `lifecycle.decide`; settings build one at the
edge. Money comparisons use exact rational arithmetic on integer minor units, never
floats.

Pure domain: imports only the stdlib, never an I/O framework, and reads no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction


@dataclass(frozen=True, slots=True)
class Policy:
    """Limits of the write rules. The defaults are the ones events.md states."""

    # How far a final total may exceed the approved quote's total before the
    # technician must post a revised `priced` and get it approved (5%: "no hidden
    # fees"). A Fraction keeps the comparison exact; build it from a Decimal setting
    # with `Fraction(Decimal("0.05"))`.
    price_tolerance: Fraction = Fraction(5, 100)
    # How far ahead of the server's clock a device-reported `time` may be (5 min):
    # phone clocks drift, but an event must not claim to come from the future.
    max_clock_skew: timedelta = timedelta(minutes=5)
    # How far behind the server's clock a device-reported `time` may be (72 h): the
    # offline-sync grace; older history is not accepted as a new write.
    max_event_age: timedelta = timedelta(hours=72)
    # How long after the first final completion (as recorded by the server) the
    # customer may reopen the order (30 days).
    warranty_window: timedelta = timedelta(days=30)
    # How many events one order may hold, so that no order grows without bound (a
    # real order has a few dozen; a loop of complaints or re-quotes would not stop).
    max_events_per_order: int = 1000

    def __post_init__(self) -> None:
        if self.price_tolerance < 0:
            raise ValueError("price_tolerance must not be negative")
        if self.max_clock_skew < timedelta(0):
            raise ValueError("max_clock_skew must not be negative")
        if self.warranty_window < timedelta(0):
            raise ValueError("warranty_window must not be negative")
        if self.max_event_age < timedelta(0):
            raise ValueError("max_event_age must not be negative")
        if self.max_events_per_order < 1:
            raise ValueError("max_events_per_order must be at least 1")

    def within_price_tolerance(self, final_total: int, approved_total: int) -> bool:
        """Whether final_total <= approved_total x (1 + price_tolerance), exactly."""
        tolerance = self.price_tolerance
        # Cross-multiplied so that only integers are compared: with 5% this is
        # final_total * 100 <= approved_total * 105.
        return final_total * tolerance.denominator <= approved_total * (
            tolerance.denominator + tolerance.numerator
        )

    def latest_acceptable_time(self, now: datetime) -> datetime:
        """The latest event `time` a write arriving at `now` may carry."""
        return _shifted(now, self.max_clock_skew)

    def earliest_acceptable_time(self, now: datetime) -> datetime:
        """The earliest event `time` a write arriving at `now` may carry."""
        return _shifted(now, -self.max_event_age)

    def holds_another_event(self, version: int) -> bool:
        """Whether an order at `version` may take one more event."""
        return version < self.max_events_per_order

    def within_warranty_window(self, completed_at: datetime, at: datetime) -> bool:
        """Whether `at` is within the warranty window after a final completion."""
        return at - completed_at <= self.warranty_window


def _shifted(moment: datetime, delta: timedelta) -> datetime:
    # Total: a bound past datetime's range is the range's end (no OverflowError).
    try:
        return moment + delta
    except OverflowError:
        if delta > timedelta(0):
            return datetime.max.replace(tzinfo=moment.tzinfo)
        return datetime.min.replace(tzinfo=moment.tzinfo)
