"""Settings of the metrics service (quality side)."""

from __future__ import annotations

from shared.settings import CommonSettings


class MetricsSettings(CommonSettings):
    port: int = 8004
    run_consumer: bool = True
    # Bumped whenever SLA targets or weights change, so numbers say what they reflect.
    indicator_policy_version: str = "2025-01-default"
    alert_interval_seconds: float = 10.0
