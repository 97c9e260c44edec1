"""The period report (`GET /v1/reports`, `servicetrail report`): one model.

JSON is this model; CSV and HTML (`report_render`) are renderings of it.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from services.metrics.schemas import AlertOut, Provenance
from shared.domain.periods import PeriodKind


class ReportFormat(StrEnum):
    JSON = "json"
    CSV = "csv"
    HTML = "html"


class Unit(StrEnum):
    """How a number reads: seconds, a share (0..1), a ratio shown in percent
    (price deviation), a 1..5 score, an NPS (-100..100) or a count."""

    SECONDS = "seconds"
    RATE = "rate"
    RATIO = "ratio"
    SCORE = "score"
    NPS = "nps"
    COUNT = "count"


class ReportPeriod(BaseModel):
    kind: PeriodKind
    label: str = Field(
        description="As `at` names it: 2026-W47, 2026-11, 2026-Q4, 2026."
    )
    start: datetime = Field(description="Inclusive: local midnight, in UTC.")
    end: datetime = Field(description="Exclusive.")
    time_zone: str


class IndicatorChange(BaseModel):
    """One figure of an indicator in the period and the previous one."""

    indicator: str
    statistic: str = Field(description="value, or p50 / p90 of a distribution.")
    unit: Unit
    current: float | None
    previous: float | None
    change: float | None = Field(
        description="current - previous (a rate's change is in shares: 0.02 = 2 pp)."
    )
    current_samples: int
    previous_samples: int


class Breakdown(BaseModel):
    dimension: str = Field(description="region or category.")
    member: str
    indicators: list[IndicatorChange]


class RankedTechnician(BaseModel):
    technician_id: str
    rank: int | None
    composite: float | None
    fuzzy_grade: str | None
    final_completions: int
    insufficient_data: bool
    previous_rank: int | None
    previous_composite: float | None
    composite_change: float | None


class ReportAlert(AlertOut):
    opened_in_period: bool
    closed_in_period: bool
    effect: dict[str, Any] | None = Field(
        description="The measured effect of the alert case's actions; null when "
        "none is known."
    )


class JudgedWeek(BaseModel):
    """One week on a control chart: its value against the centre and limits."""

    week_start: date = Field(description="Local Monday.")
    value: float
    centre: float
    lower: float
    upper: float
    samples: int


class ReportChartPoint(JudgedWeek):
    run_length: int
    signal: bool


class ReportChart(BaseModel):
    indicator: str
    chart: str = Field(description="p (a rate) or individuals (weekly median).")
    scope: str = Field(description="all, or region:<name>.")
    points: list[ReportChartPoint]


class ReportSignal(JudgedWeek):
    indicator: str
    chart: str
    scope: str
    reason: str


class HomogeneityRow(BaseModel):
    member: str
    successes: int
    failures: int


class Homogeneity(BaseModel):
    """Pearson chi-square of a rate across regions (or technicians)."""

    indicator: str
    across: str = Field(description="region or technician_id.")
    rows: list[HomogeneityRow]
    statistic: float | None
    degrees_of_freedom: int | None
    p_value: float | None
    small_expected_counts: bool
    reason: str | None


class Report(BaseModel):
    """Every indicator of a period against the previous period, per region and
    category, the technician ranking, the alerts opened and closed, and the
    stability section (control charts, their signals, homogeneity tests)."""

    period: ReportPeriod
    previous_period: ReportPeriod
    as_of: Provenance
    indicators: list[IndicatorChange]
    by_region: list[Breakdown]
    by_category: list[Breakdown]
    breakdown_truncated: bool = Field(
        description="More regions or categories than a report lists."
    )
    technicians: list[RankedTechnician]
    alerts: list[ReportAlert] = Field(
        description="Raised or cleared in the period, oldest raised first."
    )
    alerts_truncated: bool
    control_charts: list[ReportChart] = Field(
        description="All orders; the weeks starting in the period."
    )
    signals: list[ReportSignal] = Field(
        description="Every signal in the period's weeks, all orders and per region."
    )
    homogeneity: list[Homogeneity]
