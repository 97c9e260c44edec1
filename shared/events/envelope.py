"""The CloudEvents 1.0 envelope of every order event (structured JSON mode).

We build and parse the JSON ourselves because it is on the hot path, and prove in the
tests that the stock `cloudevents` SDK parses every record we publish (Kafka binding,
structured content mode).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, Union
from uuid import UUID, uuid4

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    TypeAdapter,
    ValidationError,
    create_model,
)

from shared.domain.actors import MAX_ACTOR_LENGTH, Actor
from shared.domain.events import (
    PAYLOAD_TYPES,
    TYPE_PREFIX,
    Payload,
    dataschema,
    payload_type,
)
from shared.domain.evolution import ReadPayload, read_event_data, schema_of
from shared.domain.lifecycle import OrderEvent
from shared.events.canonical import canonical_from_json
from shared.events.topics import CLOUDEVENTS_CONTENT_TYPE

SPECVERSION: Final = "1.0"
DATA_CONTENT_TYPE: Final = "application/json"
KAFKA_HEADERS: Final = [("content-type", CLOUDEVENTS_CONTENT_TYPE.encode())]


class Envelope(BaseModel):
    """A parsed CloudEvents envelope of an order event, validated strictly."""

    model_config = ConfigDict(frozen=True, extra="allow", strict=True)

    specversion: Literal["1.0"]
    id: UUID
    source: str = Field(min_length=1, max_length=200)
    type: str = Field(pattern=r"^servicetrail\.order\.[a-z_]+$")
    subject: UUID
    time: AwareDatetime
    datacontenttype: Literal["application/json"]
    dataschema: str
    data: dict[str, JsonValue]
    orderversion: int = Field(ge=1)
    recordedtime: AwareDatetime
    # Any `role:id` whose id fits an event's Identifier (a token subject always does).
    actor: str = Field(min_length=3, max_length=MAX_ACTOR_LENGTH)
    traceparent: str | None = None
    deviceid: str | None = None
    devicesequence: int | None = None
    correlationid: str | None = None
    causationid: str | None = None


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, microsecond precision (what PostgreSQL keeps)."""
    return (
        moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    )


def to_cloudevent(
    event: OrderEvent, *, source: str, traceparent: str | None = None
) -> dict[str, Any]:
    """The structured-mode JSON object of a recorded order event.

    `data` and `dataschema` are the payload as it was written (`written_as`, when
    that is an older version than the folded `data`).
    """
    written = event.data if event.written_as is None else event.written_as
    envelope: dict[str, Any] = {
        "specversion": SPECVERSION,
        "id": str(event.event_id),
        "source": source,
        "type": TYPE_PREFIX + written.TYPE,
        "subject": str(event.order_id),
        "time": format_time(event.time),
        "datacontenttype": DATA_CONTENT_TYPE,
        "dataschema": schema_of(written).urn,
        "data": written.model_dump(mode="json"),
        "orderversion": event.version,
        "recordedtime": format_time(event.recorded_at),
        "actor": str(event.actor),
    }
    optional = {
        "traceparent": traceparent,
        "deviceid": event.device_id,
        "devicesequence": event.device_sequence,
        "correlationid": event.correlation_id,
        "causationid": event.causation_id,
    }
    envelope.update({k: v for k, v in optional.items() if v is not None})
    return envelope


def encode(envelope: dict[str, Any]) -> bytes:
    """The envelope's RFC 8785 bytes: what is published and what the ledger hashes.

    UTF-8, non-ASCII text as written (Chinese is not escaped). Published in this one
    spelling, a record's bytes are its canonical bytes: consumers check it against
    the stored digest without canonicalising it again. Raises ValueError for what
    RFC 8785 cannot write (integers beyond 2**53 - 1, NaN): no consumer could read
    those exactly.
    """
    # orjson writes the dict and canonical_from_json settles it: several times faster
    # than canonical_bytes' guarded C `json` round trip, and exactly RFC 8785.
    return canonical_from_json(orjson.dumps(envelope))


def parse_envelope(value: bytes | str) -> Envelope:
    """Validate a structured-mode record value. Raises pydantic.ValidationError."""
    return Envelope.model_validate_json(value)


def to_order_event(envelope: Envelope) -> OrderEvent:
    """Rebuild the domain event; the payload is re-validated against the model of
    its `dataschema` and upcast to the newest (UnknownSchema if none)."""
    payload_type(envelope.type)  # fail early with UnknownEventType
    return _order_event(
        envelope,
        read_event_data(envelope.type, envelope.dataschema, json.dumps(envelope.data)),
    )


def _order_event(envelope: Envelope, read: ReadPayload) -> OrderEvent:
    return OrderEvent(
        event_id=envelope.id,
        order_id=envelope.subject,
        version=envelope.orderversion,
        time=envelope.time,
        recorded_at=envelope.recordedtime,
        actor=Actor.parse(envelope.actor),
        data=read.data,
        written_as=read.written_as,
        correlation_id=envelope.correlationid,
        causation_id=envelope.causationid,
        device_id=envelope.deviceid,
        device_sequence=envelope.devicesequence,
    )


# One envelope model per event type, its `data` typed by the payload's model and
# `type` the tag: a record is validated in one pass, its payload straight from the
# record's JSON (no dict built, re-encoded and parsed again). Private: the envelope's
# contract (`Envelope`, asyncapi) keeps `data` as a JSON object.
# Only the newest version of each type takes this path (its `dataschema` is fixed):
# older versions are refused here and read by `to_order_event`, which upcasts them.
def _typed_envelope(short: str, payload_cls: type[Payload]) -> type[Envelope]:
    tag: Any = Literal[f"{TYPE_PREFIX}{short}"]  # a runtime-built literal type
    schema: Any = Literal[dataschema(payload_cls)]
    return create_model(
        f"_{short.title()}Envelope",
        __base__=Envelope,
        type=(tag, ...),
        dataschema=(schema, ...),
        data=(payload_cls, ...),
    )


_TYPED_ENVELOPES: Any = Union[  # noqa: UP007 - a union of a runtime tuple of models
    tuple(_typed_envelope(short, cls) for short, cls in PAYLOAD_TYPES.items())
]
_TYPED_ENVELOPE: Final[TypeAdapter[Any]] = TypeAdapter(
    Annotated[_TYPED_ENVELOPES, Field(discriminator="type")]
)


def parse_order_event(value: bytes | str) -> OrderEvent:
    """`to_order_event(parse_envelope(value))` in one validation pass.

    Accepts exactly what that accepts and builds the same event: the typed envelope
    runs the same field validators and the payload's model on the same JSON; whatever
    it refuses is handed to the two-step path, which raises its usual error
    (pydantic.ValidationError, UnknownEventType, ValueError). About half the cost.
    """
    try:
        typed = _TYPED_ENVELOPE.validate_json(value)
    except ValidationError:
        return to_order_event(parse_envelope(value))
    return _order_event(typed, ReadPayload(typed.data, None))


QUALITY_SOURCE: Final = "/servicetrail/metrics"
QUALITY_TYPE_PREFIX: Final = "servicetrail.quality."


def quality_alert_cloudevent(
    name: str,
    *,
    subject: str,
    time: datetime,
    data: dict[str, Any],
    source: str = QUALITY_SOURCE,
    event_id: UUID | None = None,
) -> dict[str, Any]:
    """The structured-mode JSON object of a quality event (`alert_raised`, ...).

    `event_id`: a deterministic id, for events their producer may emit twice.
    """
    return {
        "specversion": SPECVERSION,
        "id": str(uuid4() if event_id is None else event_id),
        "source": source,
        "type": QUALITY_TYPE_PREFIX + name,
        "subject": subject,
        "time": format_time(time),
        "datacontenttype": DATA_CONTENT_TYPE,
        "dataschema": f"urn:servicetrail:quality.{name}:1",
        "data": data,
    }
