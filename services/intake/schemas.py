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


class ContactErased(BaseModel):
    customer_id: str
    contacts_erased: int
