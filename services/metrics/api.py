"""Metrics HTTP routes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from services.metrics import queries
from services.metrics.schemas import IndicatorsResponse, Window
from services.metrics.settings import MetricsSettings
from shared.domain.actors import Actor, Role
from shared.http.deps import AppSettings, DbConnection, actor_with_role

router = APIRouter(prefix="/v1", tags=["indicators"])

Manager = Annotated[Actor, Depends(actor_with_role(Role.DISPATCHER, Role.AUDITOR))]
Label = Annotated[str | None, Query(max_length=100)]


@router.get("/indicators", response_model=IndicatorsResponse)
async def indicators(
    conn: DbConnection,
    settings: AppSettings,
    _: Manager,
    window: Window = Window.ALL,
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
    region: Label = None,
    category: Label = None,
    urgency: Label = None,
    technician_id: Label = None,
) -> IndicatorsResponse:
    """Every indicator of indicators.md for one slice, with provenance."""
    assert isinstance(settings, MetricsSettings)
    slice_ = queries.resolve_slice(
        window,
        start=start,
        end=end,
        now=datetime.now(UTC),
        region=region,
        category=category,
        urgency=urgency,
        technician_id=technician_id,
    )
    return await queries.get_indicators(
        conn, slice_, policy_version=settings.indicator_policy_version
    )
