"""Settings of the dispatch service (technician side)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, field_validator

from services.dispatch.domain import (
    DEFAULT_ACCEPT_TARGETS,
    DEFAULT_MAX_OPEN_ORDERS,
    DEFAULT_MIN_SAMPLES,
    DEFAULT_SCORE_FLOOR,
    AssignmentPolicy,
)
from shared.domain.events import Urgency
from shared.settings import CommonSettings


class DispatchSettings(CommonSettings):
    port: int = 8002
    run_outbox_relay: bool = True
    # Auto-assignment: the order-event consumer, the quality-score consumer and the
    # expiry sweep.
    run_assignment_consumer: bool = True
    # Open orders (assigned .. approved) a technician may hold before the engine
    # stops offering them more.
    max_open_orders: int = Field(default=DEFAULT_MAX_OPEN_ORDERS, ge=1, le=10_000)
    # Minutes an assignment may wait for `accepted` before it expires, per urgency
    # (fractions allowed: tests use seconds). Defaults: indicators.md's accept SLA.
    accept_targets_minutes: dict[Urgency, float] = Field(
        default_factory=lambda: {
            urgency: target.total_seconds() / 60
            for urgency, target in DEFAULT_ACCEPT_TARGETS.items()
        }
    )
    # How often expired assignments and waiting orders are looked at.
    assignment_sweep_interval_seconds: float = Field(default=15.0, gt=0, le=3600)
    # A technician whose 30-day composite is below the floor, with at least
    # `score_min_samples` final completions, gets orders only when nobody else can.
    score_floor: float = Field(default=DEFAULT_SCORE_FLOOR, ge=0, le=100)
    score_min_samples: int = Field(default=DEFAULT_MIN_SAMPLES, ge=0, le=1_000_000)

    @field_validator("accept_targets_minutes")
    @classmethod
    def _every_urgency_positive(
        cls, value: dict[Urgency, float]
    ) -> dict[Urgency, float]:
        missing = set(Urgency) - set(value)
        if missing:
            raise ValueError(f"accept targets missing for {sorted(missing)}")
        if any(not 0 < minutes <= 7 * 24 * 60 for minutes in value.values()):
            raise ValueError("accept targets must be within (0, 10080] minutes")
        return value

    def assignment_policy(self) -> AssignmentPolicy:
        """The engine's limits as configured."""
        return AssignmentPolicy(
            max_open_orders=self.max_open_orders,
            score_floor=self.score_floor,
            min_samples=self.score_min_samples,
            accept_targets={
                urgency: timedelta(minutes=minutes)
                for urgency, minutes in self.accept_targets_minutes.items()
            },
        )
