"""HTTP request and response models of intake (the edge only)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from shared.domain.events import Channel, Identifier, Label, Reason, Text, Urgency
from shared.domain.instants import Instant


class StrictRequest(BaseModel):
    """Request bodies: strict JSON, unknown fields refused, no NaN/Infinity."""

    model_config = ConfigDict(
        strict=True, extra="forbid", allow_inf_nan=False, frozen=True
    )


class ContactIn(StrictRequest):
    """Personal contact data: stored in the contact vault, never in an event."""

    name: Label
    phone: str = Field(min_length=3, max_length=40, pattern=r"^[0-9+()\-. ]+$")
    address: Reason


class CreateOrderRequest(StrictRequest):
    """`POST /v1/orders`: the `created` data, an optional client id and time, contact."""

    id: UUID | None = Field(
        default=None,
        description="Idempotency key chosen by the client (CloudEvents id).",
    )
    time: Instant | None = Field(
        default=None,
        description="When it happened on the device (RFC 3339 with an offset): at "
        "most 5 minutes after the server's clock and MAX_EVENT_AGE (72 h) before "
        "it; defaults to now.",
    )
    # The same field types as the `created` payload: whatever passes here can be
    # stored in the event.
    customer_id: Identifier | None = Field(
        default=None,
        description="Defaults to the caller; only dispatchers and admins name another.",
    )
    category: Label
    region: Label
    urgency: Urgency
    description: Text
    warranty: bool
    channel: Channel
    contact: ContactIn | None = None
    contact_ref: UUID | None = Field(
        default=None,
        description="Instead of `contact`: the `contact_ref` of one of the same "
        "customer's earlier orders (the vault must still hold it).",
    )


class OrderCreatedResponse(BaseModel):
    order_id: UUID
    orderversion: int
    event: dict[str, Any] = Field(
        description="The stored CloudEvent (structured JSON)."
    )


class QuoteView(BaseModel):
    event_id: UUID
    currency: str
    total: int = Field(description="Integer minor units (cents / fen).")


class FinalPriceView(BaseModel):
    currency: str | None
    total: int
    outcome: str | None


class StageTimes(BaseModel):
    created_at: datetime | None
    first_assigned_at: datetime | None
    first_accepted_at: datetime | None
    first_arrived_at: datetime | None
    first_diagnosed_at: datetime | None
    first_completed_at: datetime | None
    completed_at: datetime | None
    cancelled_at: datetime | None
    reopened_at: datetime | None
    last_event_at: datetime


class OrderView(BaseModel):
    """An order's current state, folded from its events."""

    order_id: UUID
    status: str
    orderversion: int
    customer_id: str | None
    technician_id: str | None
    category: str | None
    region: str | None
    urgency: str | None
    warranty: bool
    times: StageTimes
    visits: int
    current_quote: QuoteView | None
    approved_quote: QuoteView | None
    final_price: FinalPriceView | None
    rated: bool
    reopen_count: int
    open_complaints: list[str]
    eta: datetime | None = Field(
        default=None,
        description="When the technician expects to arrive: the first `accepted`'s "
        "time plus its `eta_minutes` (null until accepted).",
    )


class TechnicianRef(BaseModel):
    technician_id: str
    name: str | None = Field(
        description="From dispatch's technician registry; null when it is unknown "
        "or the registry cannot be read."
    )


class PriceLine(BaseModel):
    kind: str
    description: str
    quantity: int
    unit_price: int = Field(description="Integer minor units.")
    amount: int = Field(description="quantity x unit_price, integer minor units.")


class PriceLines(BaseModel):
    currency: str
    items: list[PriceLine]
    total: int = Field(description="Integer minor units (the sum of the amounts).")


class QuoteLines(PriceLines):
    """A `priced` quote; approvals and rejections name it by `event_id`."""

    event_id: UUID


class CompletionView(PriceLines):
    """The final price and items of a `completed`, with its outcome."""

    outcome: str
    parts_used: list[str]
    notes: str


class RequestView(BaseModel):
    """What the customer asked for (`created`), without the contact reference."""

    category: str
    region: str
    urgency: str
    description: str
    warranty: bool
    channel: str


class DiagnosisView(BaseModel):
    fault_code: str
    summary: str
    parts_needed: list[str]
    remote: bool


class RatingView(BaseModel):
    score: int
    nps: int | None
    dimensions: dict[str, int]
    comment: str | None
    comment_language: str | None = Field(
        default=None,
        description="BCP 47 tag of the comment; `und` for ratings of version 1, "
        "which never asked it.",
    )


class ComplaintView(BaseModel):
    complaint_id: str
    category: str | None = None
    text: str | None = None
    resolution: str | None = None


class TimelineEntry(BaseModel):
    """One event as the customer may see it: only the part its `type` fills."""

    type: str = Field(description="The short event type, e.g. `accepted`.")
    time: datetime
    orderversion: int
    technician: TechnicianRef | None = None
    eta: datetime | None = Field(
        default=None, description="On `accepted`: its time plus `eta_minutes`."
    )
    request: RequestView | None = None
    diagnosis: DiagnosisView | None = None
    quote: QuoteLines | None = None
    quote_event_id: UUID | None = Field(
        default=None, description="On `quote_approved`/`quote_rejected`."
    )
    completion: CompletionView | None = None
    rating: RatingView | None = None
    reason: str | None = Field(
        default=None, description="Why it was cancelled or reopened."
    )
    complaint: ComplaintView | None = None
    note: str | None = Field(
        default=None,
        description="A plain sentence where the event has no data to show "
        "(`assignment_expired`).",
    )


class OrderTimeline(BaseModel):
    """`GET /v1/orders/{order_id}/timeline`: a summary, then every event in order."""

    order_id: UUID
    status: str
    orderversion: int
    technician: TechnicianRef | None = Field(
        description="The technician currently on the order."
    )
    eta: datetime | None = Field(
        description="The first `accepted`'s time plus its `eta_minutes`."
    )
    final_price: FinalPriceView | None
    rating: int | None
    entries: list[TimelineEntry]


class ContactErased(BaseModel):
    customer_id: str
    contacts_erased: int
