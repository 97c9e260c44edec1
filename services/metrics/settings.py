"""Settings of the metrics service (quality side).

The indicator policy (SLA targets, scoring weights, alert rules) is configurable as
indicators.md asks: each field reads a JSON value from its environment variable,
e.g. `SLA_ACCEPT_MINUTES='{"emergency": 10, "urgent": 60, "normal": 240}'` or
`ALERT_RULES='[{"name": "slow_response", "indicator": "response_time_s", ...}]'`.

SLA clocks follow business calendars per urgency (`SLA_CALENDARS`, see
`CalendarSetting`) and may pause while a quote waits on the customer
(`SLA_PAUSE_WHILE_QUOTED`); the defaults (24x7, no pause) keep created_at + target.

The sub-score weights are given either directly (`SCORE_WEIGHTS`) or as a pairwise
judgement matrix (`SCORE_PAIRWISE`, shared.domain.pairwise), never both: a matrix
whose consistency ratio is 0.10 or more is refused at start.
"""

from __future__ import annotations

from datetime import timedelta
from fractions import Fraction
from typing import Annotated, Literal, Self, TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.metrics.catalog import CATALOG_DEFAULT
from services.metrics.clocks import (
    MAX_HOLIDAYS,
    MAX_STRETCHES_PER_DAY,
    calendar_from_content,
)
from services.metrics.domain import DEFAULT_RULES, DEFAULT_SLA, NOW, NOW_COUNTS, Kind
from shared.domain.events import Urgency
from shared.domain.pairwise import PairwiseResult, consistent_weights
from shared.domain.peak_hours import DEFAULT_PEAK_HOURS, PeakHours, Period
from shared.domain.scoring import (
    DEFAULT_DIMENSION_WEIGHTS,
    DEFAULT_WEIGHTS,
    Dimension,
    SubScore,
)
from shared.domain.sla_clock import BusinessCalendar
from shared.settings import CommonSettings

Minutes = dict[Urgency, float]
# clocks.WEEKDAYS
Weekday: TypeAlias = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
# A judgement is a number or a fraction written "1/3" (what a decimal cannot be).
Judgement: TypeAlias = float | Annotated[str, Field(pattern=r"^[1-9](/[1-9])?$")]
# Bounded loosely here; pairwise.checked_matrix says what a 5x5 matrix must be.
PairwiseRows: TypeAlias = Annotated[
    list[Annotated[list[Judgement], Field(max_length=25)]], Field(max_length=25)
]


class AlertRuleSetting(BaseModel):
    """One alert rule: `indicator`'s `statistic` per `scope` over `window`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    indicator: str
    statistic: Literal["value", "p50", "p90", "p95", "mean", "max"]
    scope: Literal["region", "category", "urgency", "technician_id"]
    # Positive, or 0 ("now") for a count kept now (orders_unaccepted_overdue).
    window: timedelta
    above: bool
    threshold: float
    min_samples: int = Field(ge=1)
    # Compare the statistic over a period with the same over all hours.
    compare_period: Period | None = None

    @model_validator(mode="after")
    def _measurable(self) -> Self:
        if self.indicator in NOW_COUNTS:
            if self.compare_period is not None:
                raise ValueError(f"{self.indicator} is a value now: no period")
            if self.statistic != "value" or self.window != NOW:
                raise ValueError(f"{self.indicator} is a value now: window 0")
            if self.scope == "technician_id":
                raise ValueError(f"{self.indicator} has no technician_id scope")
            return self
        indicator = CATALOG_DEFAULT.get(self.indicator)
        if indicator is None:
            raise ValueError(f"unknown indicator {self.indicator!r}")
        distribution = indicator.kind is Kind.DISTRIBUTION
        if distribution == (self.statistic == "value"):
            raise ValueError(
                f"{self.indicator} has no {self.statistic!r}: use "
                + ("p50, p90, p95, mean or max" if distribution else "value")
            )
        if self.window <= timedelta(0):
            raise ValueError("window must be positive")
        return self


class CalendarSetting(BaseModel):
    """An urgency's business calendar (SLA_CALENDARS), e.g. `{"time_zone":
    "Asia/Shanghai", "hours": {"mon": ["09:00-18:00"], ...}, "holidays":
    ["2026-10-01"]}`; a weekday left out has no working time."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    time_zone: str = Field(min_length=1, max_length=64)
    hours: dict[Weekday, Annotated[list[str], Field(max_length=MAX_STRETCHES_PER_DAY)]]
    holidays: Annotated[list[str], Field(max_length=MAX_HOLIDAYS)] = []

    @model_validator(mode="after")
    def _valid(self) -> Self:
        self.calendar()  # a bad zone, hours or holiday is refused at start
        return self

    def calendar(self) -> BusinessCalendar:
        """The calendar these settings describe."""
        return calendar_from_content(self.model_dump())


class PeakHoursSetting(BaseModel):
    """PEAK_HOURS='{"time_zone": "Asia/Shanghai", "weekdays": ["18:00-08:00"],
    "weekend_days": ["sat", "sun"]}': peak stretches of every day that is not a
    weekend day (a range may wrap past midnight), and whole peak days."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    time_zone: str = Field(default=DEFAULT_PEAK_HOURS.time_zone, max_length=64)
    weekdays: list[str] = Field(default_factory=lambda: ["18:00-08:00"], max_length=24)
    weekend_days: list[str] = Field(
        default_factory=lambda: DEFAULT_PEAK_HOURS.day_names(), max_length=7
    )

    @model_validator(mode="after")
    def _valid(self) -> Self:
        self.peak_hours()  # the domain's checks: zone, HH:MM ranges, day names
        return self

    def peak_hours(self) -> PeakHours:
        return PeakHours.parse(self.time_zone, self.weekdays, self.weekend_days)


def _positive(minutes: Minutes, name: str) -> Minutes:
    if set(minutes) != set(Urgency) or any(m <= 0 for m in minutes.values()):
        raise ValueError(f"{name} needs a positive target for each of {list(Urgency)}")
    return minutes


class MetricsSettings(CommonSettings):
    port: int = 8004
    run_consumer: bool = True
    alert_interval_seconds: float = 10.0
    # Names the policy in every answer's provenance (with a digest of its content).
    indicator_policy_label: str = "indicators.md"
    sla_accept_minutes: Minutes = Field(
        default_factory=lambda: {Urgency(k): v for k, v in DEFAULT_SLA.accept.items()}
    )
    sla_arrive_minutes: Minutes = Field(
        default_factory=lambda: {Urgency(k): v for k, v in DEFAULT_SLA.arrive.items()}
    )
    # eta_kept_rate: an arrival at most this many seconds after the promised one
    # keeps the ETA (ETA_KEPT_TOLERANCE_S; a day at most).
    eta_kept_tolerance_s: float = Field(
        default=DEFAULT_SLA.eta_kept_s, ge=0, le=86_400, allow_inf_nan=False
    )
    # SLA_CALENDARS: per urgency, the business calendar its accept and arrive
    # clocks count in (indicators.md v2); an urgency left out runs 24x7.
    sla_calendars: dict[Urgency, CalendarSetting] = Field(default_factory=dict)
    # SLA_PAUSE_WHILE_QUOTED: the clocks pause while the order waits on the
    # customer (`quoted` until the quote is approved or rejected).
    sla_pause_while_quoted: bool = False
    score_weights: dict[SubScore, float] = Field(
        default_factory=lambda: dict(DEFAULT_WEIGHTS)
    )
    dimension_weights: dict[Dimension, float] = Field(
        default_factory=lambda: dict(DEFAULT_DIMENSION_WEIGHTS)
    )
    # SCORE_PAIRWISE='[[1, 2, 3, 5, 8], [0.5, 1, 2, 3, 4], ...]': 5 rows over
    # quality, attitude, response, efficiency, satisfaction; the weights are then its
    # principal eigenvector (SCORE_WEIGHTS must be left unset).
    score_pairwise: PairwiseRows | None = None
    score_min_samples: int = Field(default=5, ge=0)
    # Callers' limits on the live stream: each holds a connection and a queue.
    max_streams_per_caller: int = Field(default=4, ge=1)
    # `/metrics` answers without a token: the headline business indicators appear
    # there only when a deployment says its scrapes are private (they are on the
    # token-protected `/v1/indicators` and `/v1/stream` anyway).
    metrics_expose_indicators: bool = False
    # Where the dashboard's page finds intake (an order's timeline) and the ledger
    # (its entries, verify result and inclusion proof); empty: the page leaves them
    # out. Those services must list the dashboard's origin in CORS_ALLOW_ORIGINS.
    dashboard_intake_url: str = Field(default="", pattern=r"^(https?://\S+)?$")
    dashboard_ledger_url: str = Field(default="", pattern=r"^(https?://\S+)?$")
    # Reports' period boundaries and the control charts' weeks: local midnights
    # (Mondays) in this IANA time zone (REPORT_TIME_ZONE; indicators.md v2's
    # peak-period default).
    report_time_zone: str = "Asia/Shanghai"
    # The control charts judge complete weeks: evaluated this often, not on every
    # alert round (CONTROL_CHART_INTERVAL_SECONDS).
    control_chart_interval_seconds: float = Field(default=600.0, gt=0)

    peak_hours: PeakHoursSetting = Field(default_factory=PeakHoursSetting)
    alert_rules: list[AlertRuleSetting] = Field(
        default_factory=lambda: [
            AlertRuleSetting(
                name=rule.name,
                indicator=rule.indicator,
                statistic=rule.statistic,
                scope=rule.scope,
                window=rule.window,
                above=rule.above,
                threshold=rule.threshold,
                min_samples=rule.min_samples,
                compare_period=rule.compare_period,
            )
            for rule in DEFAULT_RULES
        ]
    )

    @model_validator(mode="after")
    def _complete_targets(self) -> Self:
        _positive(self.sla_accept_minutes, "sla_accept_minutes")
        _positive(self.sla_arrive_minutes, "sla_arrive_minutes")
        names = [rule.name for rule in self.alert_rules]
        if len(names) != len(set(names)):
            raise ValueError("alert rule names must be unique")
        if self.score_pairwise is not None and "score_weights" in self.model_fields_set:
            raise ValueError("give SCORE_WEIGHTS or SCORE_PAIRWISE, not both")
        self.pairwise()  # refuses an invalid or inconsistent matrix at start
        return self

    @field_validator("report_time_zone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r}") from None
        return name

    def report_zone(self) -> ZoneInfo:
        return ZoneInfo(self.report_time_zone)

    def pairwise(self) -> PairwiseResult | None:
        """What SCORE_PAIRWISE gives (None when the weights are given directly)."""
        if self.score_pairwise is None:
            return None
        return consistent_weights(
            [
                [float(Fraction(j)) if isinstance(j, str) else j for j in row]
                for row in self.score_pairwise
            ]
        )
