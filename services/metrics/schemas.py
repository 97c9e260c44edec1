"""Metrics request and response models."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from shared.domain.alert_case import CaseState, CaseText, OwnerId
from shared.domain.events import Channel
from shared.domain.instants import Instant
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
    """A time series' buckets, in UTC: weeks start on Monday 00:00 UTC."""

    HOUR = "hour"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


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
    alert_ack_time_s: Distribution = Field(
        description="Alert raised -> acknowledged, at the acknowledgement; sliced "
        "only by the alert's scope (region, technician_id)."
    )
    alert_close_time_s: Distribution = Field(
        description="Alert raised -> its case closed, at the close; sliced only by "
        "the alert's scope (region, technician_id)."
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


class DrilldownRow(BaseModel):
    """One measurement behind an indicator's number."""

    order_id: UUID
    created_at: datetime
    at: datetime = Field(
        description="When the indicator counts the row (its window's time)."
    )
    region: str
    category: str
    urgency: str
    channel: str | None
    technician_id: str | None = Field(
        description="Whom a technician_id slice charges the row to."
    )
    status: str = Field(
        description="waiting, accepted, arrived, diagnosed, completed, reopened or "
        "cancelled, as metrics' facts tell."
    )
    value: float | None = Field(
        description="A duration's seconds, a mean's value or an NPS score; null for "
        "rates and counts."
    )
    in_numerator: bool | None = Field(description="Rates: counted as a hit.")
    in_denominator: bool | None = Field(description="Rates: always true.")


class DrilldownPage(BaseModel):
    """GET /v1/indicators/orders: the rows behind one indicator of a slice, newest
    first. A rate's rows are its denominator, a distribution's its count."""

    indicator: str
    kind: str = Field(description="distribution, rate, mean, count or nps.")
    slice: Slice
    as_of: Provenance
    items: list[DrilldownRow]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class DashboardConfig(BaseModel):
    """GET /dashboard/config: the services the dashboard's page calls besides
    metrics (null: not configured, the page leaves their panels out)."""

    intake_url: str | None
    ledger_url: str | None


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
    case_state: CaseState = Field(
        default=CaseState.UNACKNOWLEDGED,
        description="The alert's case: unacknowledged, acknowledged or closed.",
    )
    owner: str | None = None
    actions: int = Field(default=0, description="Corrective actions opened.")
    open_actions: int = Field(default=0, description="Actions not closed yet.")


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


class CalendarOut(BaseModel):
    """A business calendar: working hours per weekday in a time zone, minus
    holidays (a weekday left out has none; 24x7 is 00:00-24:00 every day)."""

    time_zone: str
    hours: dict[str, list[str]]
    holidays: list[date]


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
    sla_calendars: dict[str, CalendarOut] = Field(
        description="Per urgency, the calendar its accept and arrive clocks count in."
    )
    sla_pause_while_quoted: bool = Field(
        description="Whether the clocks pause while a quote waits on the customer."
    )
    peak_hours: PeakHoursOut | None = None


# --- alert cases (api.md v2) -----------------------------------------------------------


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OwnerIn(_Step):
    owner: OwnerId


class ActionIn(_Step):
    text: CaseText
    due: Instant = Field(description="RFC 3339; between now and a year ahead.")
    owner: OwnerId


class ActionCloseIn(_Step):
    result: CaseText


class CaseCloseIn(_Step):
    resolution: CaseText


class WindowOut(BaseModel):
    start: datetime = Field(description="Inclusive.")
    end: datetime = Field(description="Exclusive.")


class EffectOut(BaseModel):
    """The alert's indicator over the rule's window length before the action opened
    against the same length after it closed (indicators.md v2)."""

    indicator: str | None = None
    test: str | None = Field(
        default=None, description="two_proportion_z or mann_whitney_u."
    )
    statistic: str | None = Field(
        default=None, description="rate, or median of the durations."
    )
    before: float | None = None
    after: float | None = None
    difference: float | None = Field(default=None, description="after - before.")
    p_value: float | None = Field(
        default=None, description="Two-sided; null when untestable."
    )
    samples_before: int = 0
    samples_after: int = 0
    before_window: WindowOut | None = None
    after_window: WindowOut | None = None
    complete: bool = Field(
        default=False,
        description="The after window has fully passed (otherwise it ends now).",
    )
    reason: str | None = Field(description="Why there is no test (or no value).")


class ActionOut(BaseModel):
    action_id: UUID
    text: str
    due: datetime
    owner: str
    opened_at: datetime
    opened_by: str
    closed_at: datetime | None
    closed_by: str | None
    result: str | None
    effect: EffectOut | None = Field(
        default=None, description="Once the action is closed."
    )


class CaseEventOut(BaseModel):
    event_id: UUID = Field(description="Also the id of its CloudEvent.")
    version: int
    type: str
    actor: str
    time: datetime
    data: dict[str, Any]


class AlertCaseOut(BaseModel):
    """GET /v1/alerts/{id}: the alert, its case as the fold of its steps, each
    closed action's measured effect, and the history of steps."""

    alert: AlertOut
    state: CaseState
    version: int
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    owner: str | None
    closed_at: datetime | None
    closed_by: str | None
    resolution: str | None
    ack_time_s: float | None
    close_time_s: float | None
    actions: list[ActionOut]
    history: list[CaseEventOut]


class ClockSegment(BaseModel):
    """A [start, end) stretch of time the clock counted."""

    start: datetime
    end: datetime
    seconds: float


class ClockPause(BaseModel):
    """A wait on the customer the clock did not count (until null: still)."""

    since: datetime
    until: datetime | None


class SlaVerdict(StrEnum):
    MET = "met"
    BREACHED = "breached"
    RUNNING = "running"
    # Left out of the rate: cancelled by the deadline, or (arrive clock) diagnosed
    # remotely by then; held by an open wait on the customer; or a target the
    # calendar cannot fit in its horizon (ten years).
    CANCELLED = "cancelled"
    REMOTE = "remote"
    PAUSED = "paused"
    NEVER_DUE = "never_due"


class SlaClockOut(BaseModel):
    """One SLA clock of an order, with what explains its verdict."""

    started_at: datetime
    target_s: float
    calendar: CalendarOut
    reached_at: datetime | None
    # Counted until the step was reached, the order cancelled, or now.
    segments: list[ClockSegment]
    pauses: list[ClockPause]
    elapsed_s: float
    deadline: datetime | None = Field(
        description="The last instant that still meets the target; null while an "
        "open wait on the customer holds the clock."
    )
    verdict: SlaVerdict


class OrderSla(BaseModel):
    """GET /v1/orders/{order_id}/sla: the order's accept and arrive clocks."""

    order_id: UUID
    urgency: str
    created_at: datetime
    as_of: datetime
    policy_version: str
    pause_while_quoted: bool
    accept: SlaClockOut | None
    arrive: SlaClockOut | None
