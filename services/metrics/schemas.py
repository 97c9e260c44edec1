"""Metrics request and response models."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field


class Window(StrEnum):
    HOUR = "1h"
    DAY = "24h"
    WEEK = "7d"
    MONTH = "30d"
    ALL = "all"


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


class Indicators(BaseModel):
    orders_created: int


class IndicatorsResponse(BaseModel):
    slice: Slice
    as_of: Provenance
    indicators: Indicators
