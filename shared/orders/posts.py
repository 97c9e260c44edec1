"""Event posts: one body shape for every service, checked into an `AppendRequest`.

`POST /v1/orders/{id}/events` (intake and dispatch) and each item of dispatch's
offline batch use the same body: `{id?, type, dataschema?, time?, expected_version?,
data}`. `data` is read in the version `dataschema` names (version 1 when absent: what
every app written before versions could be named sends) and stored as written.
Refusals are domain errors naming the fields at fault; the HTTP edge renders them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from shared.domain.actors import Actor
from shared.domain.errors import (
    FieldError,
    InvalidRequest,
    UnknownEventType,
    UnknownSchema,
    UnsupportedEventType,
)
from shared.domain.events import TYPE_PREFIX, Label, OrderPayload, payload_type
from shared.domain.evolution import (
    FIRST_VERSION,
    ReadPayload,
    Schema,
    parse_schema,
    read_payload,
)
from shared.domain.instants import Instant
from shared.domain.lifecycle import ProposedEvent
from shared.events.canonical import fingerprint
from shared.orders.request import AppendRequest


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
    # No length limit here: any string that names no published version is the
    # same refusal, `unknown_schema` (the body's own limit bounds it).
    dataschema: str | None = Field(
        default=None,
        description="The schema `data` is written in, e.g. "
        "`urn:servicetrail:order.rated:2`; absent: version 1 (what apps written "
        "before versions could be named send). A version never published is a 422 "
        "`unknown_schema`. Stored as the event's `dataschema`.",
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
class TakenPosts:
    """The event types a service takes posts of, and its name for the refusal."""

    service: str
    types: frozenset[str]


@dataclass(frozen=True, slots=True)
class ParsedPost:
    post: EventPost
    schema: Schema
    read: ReadPayload

    @property
    def payload(self) -> OrderPayload:
        """The data as the domain folds it (the newest version)."""
        return self.read.data


def field_errors(err: ValidationError, *, under: str = "") -> tuple[FieldError, ...]:
    """Pydantic's errors as dotted field paths, below `under` if given.

    An error about the whole value (no location) names `under` itself, or "body".
    """
    found = []
    for e in err.errors():
        path = ".".join(str(part) for part in e["loc"] if part != "body")
        field = ".".join(p for p in (under, path) if p) or "body"
        found.append(FieldError(field, e["msg"]))
    return tuple(found)


def parse_post(post: EventPost, *, taken: TakenPosts) -> ParsedPost:
    """Validate `data` against its type's model; the errors name the `data.` fields.

    Raises:
        UnknownEventType: no such event type.
        UnsupportedEventType: a type the service does not take posts of.
        UnknownSchema: `dataschema` names no published version of the type.
        InvalidRequest: `data` is not a valid payload of that version.
    """
    try:
        payload_cls = payload_type(post.type)
    except UnknownEventType as err:
        raise UnknownEventType(
            err.detail, errors=(FieldError("type", err.detail),)
        ) from None
    if payload_cls.TYPE not in taken.types:
        detail = f"{payload_cls.TYPE} events are not posted to {taken.service}."
        raise UnsupportedEventType(detail, errors=(FieldError("type", detail),))
    try:
        schema = parse_schema(payload_cls.TYPE, post.dataschema)
    except UnknownSchema as err:
        raise UnknownSchema(
            err.detail, errors=(FieldError("dataschema", err.detail),)
        ) from None
    try:
        read = read_payload(schema, json.dumps(post.data))
    except ValidationError as err:
        raise InvalidRequest(
            f"The data is not a valid {schema.urn} event.",
            errors=field_errors(err, under="data"),
        ) from None
    return ParsedPost(post, schema, read)


def request_digest(order_id: UUID, parsed: ParsedPost, actor: Actor) -> bytes:
    """What makes two posts of one id "the same request" (expected_version aside)."""
    post = parsed.post
    return fingerprint(
        {
            "order_id": str(order_id),
            "type": TYPE_PREFIX + parsed.payload.TYPE,
            "time": None if post.time is None else post.time.isoformat(),
            "data": (parsed.read.written_as or parsed.payload).model_dump(mode="json"),
            "device_id": post.device_id,
            "device_sequence": post.device_sequence,
            "actor": str(actor),
            # Named only past version 1, so requests stored before versions could
            # be named keep their digests (a retry of one is still a retry).
            **(
                {}
                if parsed.schema.version == FIRST_VERSION
                else {"dataschema": parsed.schema.urn}
            ),
        }
    )


def post_request(
    order_id: UUID,
    post: EventPost,
    *,
    taken: TakenPosts,
    actor: Actor,
    now: datetime,
    traceparent: str | None = None,
) -> AppendRequest:
    """The append a post asks for (idempotent by the post's id).

    Raises:
        UnknownEventType, UnsupportedEventType, UnknownSchema, InvalidRequest:
            see `parse_post`.
    """
    parsed = parse_post(post, taken=taken)
    proposed = ProposedEvent(
        event_id=post.id or uuid4(),
        time=post.time or now,
        actor=actor,
        data=parsed.payload,
        written_as=parsed.read.written_as,
        device_id=post.device_id,
        device_sequence=post.device_sequence,
    )
    return AppendRequest(
        proposed=proposed,
        order_id=order_id,
        request_digest=request_digest(order_id, parsed, actor),
        now=now,
        expected_version=post.expected_version,
        traceparent=traceparent,
        time_from_server=post.time is None,
    )
