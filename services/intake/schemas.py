"""HTTP request and response models of intake (the edge only)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.domain.events import Channel, Urgency


class StrictRequest(BaseModel):
    """Request bodies: strict JSON, unknown fields refused, no NaN/Infinity."""

    model_config = ConfigDict(
        strict=True, extra="forbid", allow_inf_nan=False, frozen=True
    )


class ContactIn(StrictRequest):
    """Personal contact data: stored in the contact vault, never in an event."""

    name: str = Field(min_length=1, max_length=200)
    phone: str = Field(min_length=3, max_length=40, pattern=r"^[0-9+()\-. ]+$")
    address: str = Field(min_length=1, max_length=500)


class CreateOrderRequest(StrictRequest):
    """`POST /v1/orders`: the `created` data, an optional client id and time, contact."""

    id: UUID | None = Field(
        default=None,
        description="Idempotency key chosen by the client (CloudEvents id).",
    )
    time: AwareDatetime | None = Field(
        default=None, description="When it happened on the device; defaults to now."
    )
    customer_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="Defaults to the caller; only dispatchers and admins name another.",
    )
    category: str = Field(min_length=1, max_length=100)
    region: str = Field(min_length=1, max_length=100)
    urgency: Urgency
    description: str = Field(max_length=2000)
    warranty: bool
    channel: Channel
    contact: ContactIn | None = None
    contact_ref: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="An existing contact vault reference, instead of `contact`.",
    )


class OrderCreatedResponse(BaseModel):
    order_id: UUID
    orderversion: int
    event: dict[str, Any] = Field(
        description="The stored CloudEvent (structured JSON)."
    )
