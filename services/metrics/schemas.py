"""Metrics request and response models."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from uuid import UUID

from pydantic import BaseModel, Field

from shared.domain.events import Channel
from shared.domain.peak_hours import Period


class Window(StrEnum):
    HOUR = "1h"
    DAY = "24h"
    WEEK = "7d"
    MONTH = "30d"
    ALL = "all"


class ScorecardWindow(StrEnum):
    """A technician's scorecard covers the last week, month or quarter."""

    WEEK = "7d"
    MONTH = "30d"
    QUARTER = "90d"


class Bucket(StrEnum):
    HOUR = "hour"
    DAY = "day"


class PartitionPosition(BaseModel):
    topic: str
    partition: int
    offset: int


class Provenance(BaseModel):
    """What a number reflects, so it can be traced back to the ledger."""

    last_recorded_at: datetime | None = Field(
        description="recordedtime of the last applied event."
    )
    positions: list[PartitionPosition]
    policy_version: str


class Slice(BaseModel):
    window: Window
    start: datetime | None
    end: datetime | None
    region: str | None = None
    category: str | None = None
    urgency: str | None = None
    technician_id: str | None = None
    channel: Channel | None = None
    period: Period | None = None


class Distribution(BaseModel):
    """Seconds; percentiles are nearest-rank over the exact values."""

    count: int
    mean: float | None
    p50: float | None
    p90: float | None
    p95: float | None
    max: float | None


class Rate(BaseModel):
    value: float | None = Field(description="numerator / denominator; null when empty.")
    numerator: int
    denominator: int


class Mean(BaseModel):
    value: float | None
    count: int


class Count(BaseModel):
    value: int


class Indicators(BaseModel):
    response_time_s: Distribution
    arrival_time_s: Distribution
    diagnosis_time_s: Distribution
    resolution_time_s: Distribution
    complaint_resolution_s: Distribution
    first_time_fix_rate: Rate
    resolution_rate: Rate
    rework_rate: Rate
    complaint_rate: Rate
    cancellation_rate: Rate
    price_deviation_mean: Mean
    overrun_rate: Rate
    requote_rate: Rate
    quoted_before_work_rate: Rate
    rating_mean: Mean
    csat: Rate
    nps: Mean = Field(description="100 x (promoters - detractors) / ratings with nps.")
    ratings_count: Count
    sla_accept_rate: Rate
    sla_arrival_rate: Rate
    eta_error_s: Distribution = Field(
        description="first arrival - promised arrival (first accept + its ETA); "
        "negative: early."
    )
    eta_kept_rate: Rate = Field(
        description="Share of arrivals at most the policy's tolerance after the "
        "promised one."
    )
    orders_created: Count
    orders_completed: Count
    orders_open: Count = Field(description="Now: not cancelled, not finally completed.")
    assignments_declined: Count = Field(
        description="Assignments declined (a technician slice: who declined)."
    )
    assignments_expired: Count = Field(
        description="Assignments dispatch expired, left unanswered past the accept "
        "target (a technician slice: the expired technician)."
    )
    orders_unaccepted_overdue: Count = Field(
        description="Now: open orders without an accepted event whose accept target "
        "has passed."
    )


class IndicatorsResponse(BaseModel):
    slice: Slice
    as_of: Provenance
    indicators: Indicators


class TimeseriesPoint(BaseModel):
    bucket_start: datetime
    value: Distribution | Rate | Mean | Count


class TimeseriesResponse(BaseModel):
    indicator: str
    bucket: Bucket
    slice: Slice
    as_of: Provenance
    points: list[TimeseriesPoint]


class AlertOut(BaseModel):
    alert_id: UUID
    rule: str
    scope: str
    state: str
    value: float
    threshold: float
    samples: int
    raised_at: datetime
    cleared_at: datetime | None


class AlertList(BaseModel):
    items: list[AlertOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class FuzzyOut(BaseModel):
    grade: str | None
    score: float | None
    membership: dict[str, float] = Field(description="B = W x R over levels 5..1.")


class TechnicianScore(BaseModel):
    technician_id: str
    final_completions: int
    sub_scores: dict[str, float | None]
    composite: float | None
    fuzzy: FuzzyOut
    insufficient_data: bool
    rank: int | None


class TechnicianScores(BaseModel):
    window: Window
    as_of: Provenance
    items: list[TechnicianScore]


class OrderIds(BaseModel):
    """The orders behind one figure of a scorecard, newest measurement first."""

    order_ids: list[UUID] = Field(description="At most 200.")
    truncated: bool = Field(description="More orders are behind the figure.")


class EtaAccuracy(BaseModel):
    """How well the technician kept the arrival times they promised."""

    eta_kept_rate: Rate
    eta_error_s: Distribution = Field(description="Negative: early.")


class ScorecardCounts(BaseModel):
    orders_accepted: int = Field(description="Orders the technician accepted first.")
    orders_arrived: int = Field(description="Orders the technician visited first.")
    orders_completed: int = Field(
        description="First final completions the technician posted."
    )
    ratings: int
    assignments_declined: int = Field(description="Assignments they declined.")
    assignments_expired: int = Field(
        description="Assignments they left unanswered until dispatch ended them."
    )


class Scorecard(BaseModel):
    """One technician's figures over a window, each with the orders behind it."""

    technician_id: str
    window: ScorecardWindow
    start: datetime = Field(description="Inclusive.")
    end: datetime = Field(description="Exclusive: the server's now.")
    as_of: Provenance
    score: TechnicianScore = Field(
        description="As /v1/technicians/scores lists it for the same window; rank "
        "among every technician with data in it."
    )
    eta: EtaAccuracy
    counts: ScorecardCounts
    orders: dict[str, OrderIds] = Field(
        description="Per figure (quality, attitude, response, efficiency, "
        "satisfaction, fuzzy, eta, accepted, arrived, completed, declined, "
        "expired): its orders."
    )


class SlaTargetsOut(BaseModel):
    accept_minutes: dict[str, float]
    arrive_minutes: dict[str, float]
    eta_kept_tolerance_s: float


class AlertRuleOut(BaseModel):
    name: str
    indicator: str
    statistic: str
    scope: str
    window: timedelta = Field(description="ISO 8601 duration; PT0S: a count now.")
    above: bool
    threshold: float
    min_samples: int
    compare_period: Period | None = Field(
        default=None,
        description="Set: the statistic over this period minus the same over all"
        " hours is compared with the threshold.",
    )


class PeakHoursOut(BaseModel):
    """When the peak period is (the `period=peak|offpeak` slice)."""

    time_zone: str
    weekdays: list[str] = Field(
        description="Peak stretches of every other local day, HH:MM-HH:MM."
    )
    weekend_days: list[str] = Field(description="Whole peak days, e.g. sat, sun.")


class PolicyOut(BaseModel):
    """The indicator policy in force (GET /v1/policy)."""

    policy_version: str
    sla: SlaTargetsOut
    weights: dict[str, float]
    dimension_weights: dict[str, float]
    score_min_samples: int
    pairwise_matrix: list[list[float]] | None = Field(
        description="Rows and columns quality, attitude, response, efficiency,"
        " satisfaction; null when the weights were given directly."
    )
    lambda_max: float | None
    consistency_index: float | None
    consistency_ratio: float | None
    alert_rules: list[AlertRuleOut]
    peak_hours: PeakHoursOut | None = None
