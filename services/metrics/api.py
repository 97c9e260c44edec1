"""Metrics HTTP routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Final
from uuid import UUID, uuid4

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParameter
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from sqlalchemy.ext.asyncio import AsyncConnection

from services.metrics import cases, drilldown, queries, scorecard, scores, sla_explain
from services.metrics.drilldown import DEFAULT_LIMIT, MAX_LIMIT
from services.metrics.live import LiveIndicators
from services.metrics.policy import IndicatorPolicy, policy_out
from services.metrics.report import build_report
from services.metrics.report_render import MEDIA_TYPES, render
from services.metrics.report_schemas import Report, ReportFormat
from services.metrics.schemas import (
    ActionCloseIn,
    ActionIn,
    AlertCaseOut,
    AlertList,
    Bucket,
    CaseCloseIn,
    DashboardConfig,
    DrilldownPage,
    IndicatorsResponse,
    OrderSla,
    OwnerIn,
    PolicyOut,
    Scorecard,
    ScorecardWindow,
    Slice,
    TechnicianScores,
    TimeseriesResponse,
    Window,
)
from services.metrics.settings import MetricsSettings
from shared.domain.actors import MAX_SUBJECT_LENGTH, SUBJECT_CHARSET, Actor, Role
from shared.domain.alert_case import (
    Acknowledged,
    ActionClosed,
    ActionOpened,
    CaseStep,
    Closed,
    Owned,
)
from shared.domain.errors import Forbidden
from shared.domain.events import Channel
from shared.domain.instants import Instant
from shared.domain.peak_hours import Period
from shared.domain.periods import PeriodKind, parse_period
from shared.http.deps import AppSettings, CurrentCaller, DbConnection, actor_with_role

router = APIRouter(prefix="/v1", tags=["indicators"])
dashboard_router = APIRouter(tags=["dashboard"])
DASHBOARD: Final = Path(__file__).with_name("static") / "dashboard.html"

Manager = Annotated[Actor, Depends(actor_with_role(Role.DISPATCHER, Role.AUDITOR))]
# Alert cases take steps by dispatchers (and admins) only (api.md v2).
CaseWorker = Annotated[Actor, Depends(actor_with_role(Role.DISPATCHER))]
# A technician reads their own scorecard; dispatchers (and admins) anyone's.
FieldStaff = Annotated[
    Actor, Depends(actor_with_role(Role.TECHNICIAN, Role.DISPATCHER))
]
# Technician ids are token subjects (api.md v2).
TechnicianId = Annotated[
    str,
    PathParameter(
        min_length=1,
        max_length=MAX_SUBJECT_LENGTH,
        pattern=rf"^[{SUBJECT_CHARSET}]+$",
    ),
]
# PostgreSQL text cannot hold NUL: refused here (422), not by the driver (a 500).
NO_NUL: Final = r"^[^\x00]*$"
Label = Annotated[str | None, Query(min_length=1, max_length=200, pattern=NO_NUL)]
# RFC 3339 with an offset, in UTC: no bound can overflow in date arithmetic.
Since = Annotated[Instant | None, Query(alias="from")]
Until = Annotated[Instant | None, Query(alias="to")]


async def get_live(request: Request) -> LiveIndicators:
    live: LiveIndicators = request.state.live
    return live


async def get_policy(request: Request) -> IndicatorPolicy:
    policy: IndicatorPolicy = request.state.policy
    return policy


Policy = Annotated[IndicatorPolicy, Depends(get_policy)]
# A report's `at` (shared.domain.periods): its forms only, checked again there.
ReportAt = Annotated[
    str | None,
    Query(
        min_length=4,
        max_length=10,
        pattern=r"^[0-9]{4}(-(W[0-9]{2}|Q[0-9]|[0-9]{2}(-[0-9]{2})?))?$",
        description="2026-W47 (week), 2026-11 (month), 2026-Q4 (quarter), 2026 "
        "(year), or a day 2026-11-18 in the period; default: the last complete one.",
    ),
]


@dataclass(frozen=True, slots=True)
class SliceAt:
    """A requested slice and the instant its window ends (the server's now)."""

    slice: Slice
    now: datetime


def requested_slice(default: Window) -> Callable[..., Awaitable[SliceAt]]:
    """A dependency: the slice the query parameters name, its window ending now."""

    async def requested(
        window: Window = default,
        start: Since = None,
        end: Until = None,
        region: Label = None,
        category: Label = None,
        urgency: Label = None,
        technician_id: Label = None,
        channel: Channel | None = None,
        period: Period | None = None,
    ) -> SliceAt:
        now = datetime.now(UTC)
        slice_ = queries.resolve_slice(
            window,
            start=start,
            end=end,
            now=now,
            region=region,
            category=category,
            urgency=urgency,
            technician_id=technician_id,
            channel=channel,
            period=period,
        )
        return SliceAt(slice_, now)

    return requested


AllTime = Annotated[SliceAt, Depends(requested_slice(Window.ALL))]
LastWeek = Annotated[SliceAt, Depends(requested_slice(Window.WEEK))]
IndicatorName = Annotated[str, Query(min_length=1, max_length=100, pattern=NO_NUL)]


@router.get("/indicators", response_model=IndicatorsResponse)
async def indicators(
    conn: DbConnection, policy: Policy, _: Manager, asked: AllTime
) -> IndicatorsResponse:
    """Every indicator of indicators.md for one slice, with provenance."""
    return await queries.get_indicators(conn, asked.slice, policy=policy, now=asked.now)


@router.get("/indicators/orders", response_model=DrilldownPage)
async def indicator_orders(
    conn: DbConnection,
    policy: Policy,
    _: Manager,
    asked: AllTime,
    indicator: IndicatorName,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=1000, pattern=NO_NUL)] = None,
) -> DrilldownPage:
    """The rows behind one indicator's number for the same slice as
    `/v1/indicators`: each order with its slice fields, stage and contribution (a
    duration's seconds; for a rate, whether it counts in the numerator; every row is
    in the denominator). Newest measurement first, paged with `limit` and `cursor`;
    also `orders_open` and `orders_unaccepted_overdue` (now, no window)."""
    return await drilldown.get_drilldown(
        conn,
        indicator,
        asked.slice,
        policy=policy,
        now=asked.now,
        cursor=cursor,
        limit=limit,
    )


@router.get("/indicators/timeseries", response_model=TimeseriesResponse)
async def timeseries(
    conn: DbConnection,
    policy: Policy,
    _: Manager,
    asked: LastWeek,
    indicator: IndicatorName,
    bucket: Bucket = Bucket.HOUR,
) -> TimeseriesResponse:
    """One indicator per hour, day, week or month."""
    return await queries.get_timeseries(
        conn, indicator, asked.slice, bucket, policy=policy, now=asked.now
    )


@router.get(
    "/technicians/scores", response_model=TechnicianScores, tags=["technicians"]
)
async def technician_scores(
    conn: DbConnection,
    policy: Policy,
    _: Manager,
    window: Window = Window.MONTH,
) -> TechnicianScores:
    """Per technician: sub-scores, composite, fuzzy grade and membership, rank."""
    now = datetime.now(UTC)
    slice_ = queries.resolve_slice(window, start=None, end=None, now=now)
    return await scores.get_scores(conn, slice_, policy=policy, now=now)


@router.get(
    "/technicians/{technician_id}/scorecard",
    response_model=Scorecard,
    tags=["technicians"],
)
async def technician_scorecard(
    technician_id: TechnicianId,
    conn: DbConnection,
    policy: Policy,
    actor: FieldStaff,
    window: ScorecardWindow = ScorecardWindow.MONTH,
) -> Scorecard:
    """One technician's sub-scores, composite, fuzzy grade, ETA accuracy and
    counts over the last 7, 30 or 90 days, with the order ids behind each figure.

    Another technician's scorecard is 403, as another technician's orders are in
    dispatch.
    """
    if actor.role is Role.TECHNICIAN and actor.id != technician_id:
        raise Forbidden("Technicians see only their own scorecard.")
    return await scorecard.get_scorecard(
        conn, technician_id, window, now=datetime.now(UTC), policy=policy
    )


@router.get("/policy", response_model=PolicyOut, tags=["policy"])
async def indicator_policy(policy: Policy, _: Manager) -> PolicyOut:
    """The indicator policy in force: SLA targets, weights (with the pairwise
    matrix and its consistency when they came from one), alert rules and the
    `policy_version` every answer names."""
    return policy_out(policy)


@router.get("/orders/{order_id}/sla", response_model=OrderSla, tags=["indicators"])
async def order_sla_clocks(
    order_id: UUID, conn: DbConnection, policy: Policy, _: Manager
) -> OrderSla:
    """The order's accept and arrive SLA clocks under the policy's business
    calendars: started_at, target, calendar, the counted segments, the pauses
    (waits on the customer), elapsed time, deadline and verdict, as the censored
    SLA rates count them."""
    return await sla_explain.order_sla(conn, order_id, policy, datetime.now(UTC))


@router.get("/alerts", response_model=AlertList, tags=["alerts"])
async def alerts(
    conn: DbConnection,
    _: Manager,
    state: Annotated[str | None, Query(pattern="^(open|cleared)$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=500, pattern=NO_NUL)] = None,
) -> AlertList:
    """Quality alerts, newest first, paged with `limit` and `cursor`."""
    return await queries.list_alerts(conn, state=state, limit=limit, cursor=cursor)


@router.get("/alerts/{alert_id}", response_model=AlertCaseOut, tags=["alerts"])
async def alert_case(
    alert_id: UUID, conn: DbConnection, policy: Policy, _: Manager
) -> AlertCaseOut:
    """One alert with its case (the fold of its steps), each closed action's
    measured effect and the history of steps. Readable by whoever reads the alert
    list (dispatchers, auditors, admins); only dispatchers and admins take steps."""
    return await cases.get_case(conn, alert_id, policy=policy, now=datetime.now(UTC))


async def _step(
    conn: AsyncConnection,
    policy: IndicatorPolicy,
    alert_id: UUID,
    step: CaseStep,
    actor: Actor,
) -> AlertCaseOut:
    return await cases.take_step(
        conn, alert_id, step, actor=str(actor), policy=policy, now=datetime.now(UTC)
    )


@router.post(
    "/alerts/{alert_id}/acknowledge", response_model=AlertCaseOut, tags=["alerts"]
)
async def acknowledge_alert(
    alert_id: UUID, conn: DbConnection, policy: Policy, actor: CaseWorker
) -> AlertCaseOut:
    """The caller acknowledges the alert (once: again is 409)."""
    return await _step(conn, policy, alert_id, Acknowledged(), actor)


@router.post("/alerts/{alert_id}/owner", response_model=AlertCaseOut, tags=["alerts"])
async def own_alert(
    alert_id: UUID, body: OwnerIn, conn: DbConnection, policy: Policy, actor: CaseWorker
) -> AlertCaseOut:
    """Name (or change) the case's owner, until the case is closed."""
    return await _step(conn, policy, alert_id, Owned(owner=body.owner), actor)


@router.post(
    "/alerts/{alert_id}/actions",
    response_model=AlertCaseOut,
    status_code=201,
    tags=["alerts"],
)
async def open_action(
    alert_id: UUID,
    body: ActionIn,
    conn: DbConnection,
    policy: Policy,
    actor: CaseWorker,
) -> AlertCaseOut:
    """A corrective action on an acknowledged, open case; its id is the server's."""
    step = ActionOpened(
        action_id=uuid4(), text=body.text, due=body.due, owner=body.owner
    )
    return await _step(conn, policy, alert_id, step, actor)


@router.post(
    "/alerts/{alert_id}/actions/{action_id}/close",
    response_model=AlertCaseOut,
    tags=["alerts"],
)
async def close_action(
    alert_id: UUID,
    action_id: UUID,
    body: ActionCloseIn,
    conn: DbConnection,
    policy: Policy,
    actor: CaseWorker,
) -> AlertCaseOut:
    """Close an open action with its result; its effect is measured from then."""
    step = ActionClosed(action_id=action_id, result=body.result)
    return await _step(conn, policy, alert_id, step, actor)


@router.post("/alerts/{alert_id}/close", response_model=AlertCaseOut, tags=["alerts"])
async def close_alert_case(
    alert_id: UUID,
    body: CaseCloseIn,
    conn: DbConnection,
    policy: Policy,
    actor: CaseWorker,
) -> AlertCaseOut:
    """Close the case with a resolution (every action closed first)."""
    return await _step(
        conn, policy, alert_id, Closed(resolution=body.resolution), actor
    )


def report_response(report: Report, format_: ReportFormat) -> Response:
    """The report in the asked format (JSON is the model itself)."""
    headers = {}
    if format_ is ReportFormat.CSV:
        name = f"servicetrail-report-{report.period.label}.csv"
        headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return Response(
        render(report, format_), media_type=MEDIA_TYPES[format_], headers=headers
    )


@router.get(
    "/reports",
    response_model=Report,
    tags=["reports"],
    responses={200: {"content": {"text/csv": {}, "text/html": {}}}},
)
async def report(
    conn: DbConnection,
    policy: Policy,
    settings: AppSettings,
    _: Manager,
    period: PeriodKind,
    at: ReportAt = None,
    format_: Annotated[ReportFormat, Query(alias="format")] = ReportFormat.JSON,
) -> Response:
    """Every indicator of a week, month, quarter or year against the previous one,
    per region and category; the technician ranking; alerts; stability."""
    assert isinstance(settings, MetricsSettings)
    zone, now = settings.report_zone(), datetime.now(UTC)
    chosen = parse_period(period, at, today=now.astimezone(zone).date())
    built = await build_report(conn, chosen, policy=policy, zone=zone, now=now)
    return report_response(built, format_)


@router.get("/stream", response_class=StreamingResponse)
async def stream(
    _: Manager,
    caller: CurrentCaller,
    live: Annotated[LiveIndicators, Depends(get_live)],
) -> StreamingResponse:
    """Server-sent events: the headline indicators each time they change.

    The stream ends when the caller's token expires; a caller holds at most
    MAX_STREAMS_PER_CALLER at once (429 beyond).
    """
    return StreamingResponse(
        live.subscribe(str(caller.actor), until=caller.expires_at),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@dashboard_router.get("/dashboard/config", response_model=DashboardConfig)
async def dashboard_config(settings: AppSettings) -> DashboardConfig:
    """Where the dashboard's page finds intake and the ledger (no token needed:
    these are addresses, and each service checks the token it is sent)."""
    assert isinstance(settings, MetricsSettings)
    return DashboardConfig(
        intake_url=settings.dashboard_intake_url.rstrip("/") or None,
        ledger_url=settings.dashboard_ledger_url.rstrip("/") or None,
    )


@dashboard_router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def dashboard() -> HTMLResponse:
    """The live quality dashboard, with its drill-down (tile -> orders -> order).

    Its API calls carry the token of the URL fragment (`#token=`): a dispatcher's
    reads metrics, an order's timeline (intake) and ledger history. The ledger's
    verify and inclusion proof are auditor-only, as they stay: the page sends them
    the fragment's `auditor=` token when given, and otherwise says it needs one.
    """
    return HTMLResponse(DASHBOARD.read_text(encoding="utf-8"))
