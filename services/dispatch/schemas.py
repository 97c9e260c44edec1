"""Dispatch HTTP request and response models (the edge only)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from shared.domain.events import Identifier, Label, Reason
from shared.domain.instants import Instant
from shared.orders.posts import EventPost

MAX_BATCH: int = 500


class StrictRequest(BaseModel):
    model_config = ConfigDict(
        strict=True, extra="forbid", allow_inf_nan=False, frozen=True
    )


class TechnicianIn(StrictRequest):
    technician_id: Identifier
    name: Label
    skills: list[Label] = Field(min_length=1, max_length=100, description="Categories.")
    regions: list[Label] = Field(min_length=1, max_length=100)
    certifications: list[Label] = Field(default_factory=list, max_length=100)
    active: bool = True


class TechnicianOut(BaseModel):
    technician_id: str
    name: str
    skills: list[str]
    regions: list[str]
    certifications: list[str]
    active: bool
    registered_at: datetime
    updated_at: datetime


class TechnicianList(BaseModel):
    items: list[TechnicianOut]


class AssignRequest(StrictRequest):
    """Manual assignment; without `technician_id` the engine picks."""

    id: UUID | None = None
    technician_id: Identifier | None = None
    reason: Reason = "assigned by a dispatcher"
    # The same bounds as every event `time` (a dispatcher's console syncing late,
    # or a backdated demo history): refused past the skew or MAX_EVENT_AGE.
    time: Instant | None = Field(
        default=None,
        description="When the dispatcher assigned (RFC 3339 with an offset): at most "
        "5 minutes after the server's clock and MAX_EVENT_AGE (72 h) before it; "
        "defaults to now (never before the order's previous event).",
    )
    expected_version: int | None = Field(default=None, ge=0)


class BatchItem(EventPost):
    """One event of an offline batch: a post plus the order it belongs to."""

    order_id: UUID


class BatchRequest(StrictRequest):
    events: list[dict[str, JsonValue]] = Field(min_length=1, max_length=MAX_BATCH)


class BatchResult(BaseModel):
    index: int
    id: UUID | None
    order_id: UUID | None
    status: Literal["stored", "duplicate", "rejected"]
    orderversion: int | None = None
    problem: dict[str, Any] | None = None


class BatchResponse(BaseModel):
    results: list[BatchResult]


class UnassignableOrder(BaseModel):
    """An order that waits with no eligible technician, and its open alert."""

    order_id: UUID
    alert_id: UUID
    category: str | None
    region: str | None
    urgency: str | None
    waiting_since: datetime = Field(validation_alias="raised_at")


class UnassignableList(BaseModel):
    items: list[UnassignableOrder]
