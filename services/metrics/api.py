"""Metrics HTTP routes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Final

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParameter
from fastapi.responses import HTMLResponse, StreamingResponse

from services.metrics import queries, scorecard, scores
from services.metrics.live import LiveIndicators
from services.metrics.policy import IndicatorPolicy, policy_out
from services.metrics.schemas import (
    AlertList,
    Bucket,
    IndicatorsResponse,
    PolicyOut,
    Scorecard,
    ScorecardWindow,
    TechnicianScores,
    TimeseriesResponse,
    Window,
)
from shared.domain.actors import MAX_SUBJECT_LENGTH, SUBJECT_CHARSET, Actor, Role
from shared.domain.errors import Forbidden
from shared.domain.events import Channel
from shared.domain.instants import Instant
from shared.domain.peak_hours import Period
from shared.http.deps import CurrentCaller, DbConnection, actor_with_role

router = APIRouter(prefix="/v1", tags=["indicators"])
dashboard_router = APIRouter(tags=["dashboard"])
DASHBOARD: Final = Path(__file__).with_name("static") / "dashboard.html"

Manager = Annotated[Actor, Depends(actor_with_role(Role.DISPATCHER, Role.AUDITOR))]
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


@router.get("/indicators", response_model=IndicatorsResponse)
async def indicators(
    conn: DbConnection,
    policy: Policy,
    _: Manager,
    window: Window = Window.ALL,
    start: Since = None,
    end: Until = None,
    region: Label = None,
    category: Label = None,
    urgency: Label = None,
    technician_id: Label = None,
    channel: Channel | None = None,
    period: Period | None = None,
) -> IndicatorsResponse:
    """Every indicator of indicators.md for one slice, with provenance."""
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
    return await queries.get_indicators(conn, slice_, policy=policy, now=now)


@router.get("/indicators/timeseries", response_model=TimeseriesResponse)
async def timeseries(
    conn: DbConnection,
    policy: Policy,
    _: Manager,
    indicator: Annotated[str, Query(min_length=1, max_length=100, pattern=NO_NUL)],
    bucket: Bucket = Bucket.HOUR,
    window: Window = Window.WEEK,
    start: Since = None,
    end: Until = None,
    region: Label = None,
    category: Label = None,
    urgency: Label = None,
    technician_id: Label = None,
    channel: Channel | None = None,
    period: Period | None = None,
) -> TimeseriesResponse:
    """One indicator per hour or day."""
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
    return await queries.get_timeseries(
        conn, indicator, slice_, bucket, policy=policy, now=now
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


@dashboard_router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def dashboard() -> HTMLResponse:
    """The live quality dashboard (its API calls carry the token from the URL fragment)."""
    return HTMLResponse(DASHBOARD.read_text(encoding="utf-8"))
