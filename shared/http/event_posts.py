"""Posting events to an existing order over HTTP: one body shape for every service.

`POST /v1/orders/{id}/events` (intake and dispatch) and each item of dispatch's
offline batch use the same body: `{id?, type, time?, expected_version?, data}`.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
)

from shared.db.order_writer import OrderWriter, Recorded
from shared.domain.actors import Actor
from shared.domain.errors import UnknownEventType
from shared.domain.events import (
    TYPE_PREFIX,
    Label,
    OrderPayload,
    parse_payload,
    payload_type,
)
from shared.domain.instants import Instant
from shared.domain.lifecycle import ProposedEvent
from shared.events.canonical import fingerprint
from shared.http.problems import Problem, validation_errors


class EventPost(BaseModel):
    """One event for an existing order, as a mobile app posts it."""

    model_config = ConfigDict(
        strict=True, extra="forbid", allow_inf_nan=False, frozen=True
    )

    id: UUID | None = Field(
        default=None,
        description="Idempotency key chosen by the client (CloudEvents id).",
    )
    type: str = Field(
        min_length=1,
        max_length=100,
        description="Short (`accepted`) or full (`servicetrail.order.accepted`) type.",
    )
    time: Instant | None = Field(
        default=None,
        description="When it happened on the device (RFC 3339 with an offset): at "
        "most 5 minutes after the server's clock and MAX_EVENT_AGE (72 h) before "
        "it; defaults to now (never before the order's previous event).",
    )
    expected_version: int | None = Field(
        default=None, ge=0, description="The orderversion the client last saw."
    )
    # The event store's own text rules (no NUL, not blank): PostgreSQL's jsonb cannot
    # hold U+0000, so a lax device_id would fail inside the append (a 500).
    device_id: Label | None = None
    device_sequence: int | None = Field(default=None, ge=0, le=2**53 - 1)
    data: dict[str, JsonValue] = Field(description="The payload of this event type.")


@dataclass(frozen=True, slots=True)
class ParsedPost:
    post: EventPost
    payload: OrderPayload


def parse_post(
    post: EventPost, *, allowed: Collection[str], service: str
) -> ParsedPost:
    """Validate `data` against its type's model; 422 naming the `data.` fields."""
    try:
        payload_cls = payload_type(post.type)
    except UnknownEventType as err:
        raise Problem(
            422,
            "unknown_event_type",
            err.detail,
            errors=[{"field": "type", "message": err.detail}],
        ) from None
    if payload_cls.TYPE not in allowed:
        detail = f"{payload_cls.TYPE} events are not posted to {service}."
        raise Problem(
            422,
            "unsupported_event_type",
            detail,
            errors=[{"field": "type", "message": detail}],
        )
    try:
        payload = parse_payload(payload_cls.TYPE, json.dumps(post.data))
    except ValidationError as err:
        raise Problem(
            422,
            "validation_error",
            f"The data is not a valid {payload_cls.TYPE} event.",
            errors=[
                # A whole-payload rule (total = sum of items) has no field: "data".
                {
                    "field": "data" if e["field"] == "body" else f"data.{e['field']}",
                    "message": e["message"],
                }
                for e in validation_errors(err)
            ],
        ) from None
    return ParsedPost(post, payload)


def request_digest(order_id: UUID, parsed: ParsedPost, actor: Actor) -> bytes:
    """What makes two posts of one id "the same request" (expected_version aside)."""
    post = parsed.post
    return fingerprint(
        {
            "order_id": str(order_id),
            "type": TYPE_PREFIX + parsed.payload.TYPE,
            "time": None if post.time is None else post.time.isoformat(),
            "data": parsed.payload.model_dump(mode="json"),
            "device_id": post.device_id,
            "device_sequence": post.device_sequence,
            "actor": str(actor),
        }
    )


async def record_post(
    writer: OrderWriter,
    order_id: UUID,
    parsed: ParsedPost,
    *,
    actor: Actor,
    now: datetime,
    traceparent: str | None = None,
) -> Recorded:
    """Append a parsed post to the order (idempotent by its id)."""
    post = parsed.post
    proposed = ProposedEvent(
        event_id=post.id or uuid4(),
        time=post.time or now,
        actor=actor,
        data=parsed.payload,
        device_id=post.device_id,
        device_sequence=post.device_sequence,
    )
    return await writer.append(
        proposed,
        order_id=order_id,
        request_digest=request_digest(order_id, parsed, actor),
        now=now,
        expected_version=post.expected_version,
        traceparent=traceparent,
        time_from_server=post.time is None,
    )


class EventRecorded(BaseModel):
    """The answer to an accepted (or retried) event post."""

    order_id: UUID
    orderversion: int
    event: dict[str, Any] = Field(
        description="The stored CloudEvent (structured JSON)."
    )

    @classmethod
    def of(cls, recorded: Recorded) -> EventRecorded:
        return cls(
            order_id=recorded.order_id,
            orderversion=recorded.version,
            event=recorded.envelope,
        )
