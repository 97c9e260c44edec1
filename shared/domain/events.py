"""Order event payloads: one frozen, strict pydantic model per event type of events.md.

Each model is both the validation contract of an event's `data` and the domain value
the lifecycle folds. Payloads arrive as JSON (HTTP bodies, Kafka records, stored
rows) and are validated with `model_validate_json`, whose strict mode still accepts
enum values, UUIDs and RFC 3339 times as JSON strings.

Sequences are tuples, not lists: a recorded fact must not change after it was
validated, and `frozen=True` alone would leave a list mutable. On the wire they are
ordinary JSON arrays.

Pure domain: imports only the stdlib and pydantic, never an I/O framework.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Annotated, ClassVar, Final, Self, TypeAlias, cast
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from shared.domain import errors
from shared.domain.actors import MAX_ID_LENGTH
from shared.domain.currencies import is_currency

TYPE_PREFIX: Final = "servicetrail.order."

MAX_LIST_ITEMS: Final = 100
MAX_TEXT: Final = 2000
# Money stays within what JavaScript clients read exactly (2**53 - 1), and far inside
# PostgreSQL's bigint, so no consumer ever rounds a price.
MAX_AMOUNT: Final = 2**53 - 1
MAX_QUANTITY: Final = 1_000_000
MAX_ETA_MINUTES: Final = 7 * 24 * 60


def _storable(value: str) -> str:
    # PostgreSQL text and jsonb cannot hold U+0000: refuse it at the edge rather than
    # fail later inside the event store's transaction.
    if "\x00" in value:
        raise ValueError("must not contain the NUL character")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


def _one_token(value: str) -> str:
    if value.split() != [value]:  # str.split() splits on any Unicode whitespace
        raise ValueError("must not contain whitespace")
    return value


def _iso_4217(value: str) -> str:
    if not is_currency(value):
        raise ValueError(f"{value!r} is not an ISO 4217 currency code")
    return value


_Storable = AfterValidator(_storable)
_NotBlank = AfterValidator(_not_blank)
_OneToken = AfterValidator(_one_token)

# Opaque identifiers chosen by other systems: customers, technicians, vault refs.
# Token subjects become `customer_id` and `technician_id`: they fit (see actors.py).
Identifier: TypeAlias = Annotated[
    str, Field(min_length=1, max_length=MAX_ID_LENGTH), _Storable, _OneToken
]
# Object-store keys or URLs of evidence photos: longer than ids, still one token.
Reference: TypeAlias = Annotated[
    str, Field(min_length=1, max_length=1000), _Storable, _OneToken
]
# Short human labels: categories, regions, fault codes, part names.
Label: TypeAlias = Annotated[
    str, Field(min_length=1, max_length=200), _Storable, _NotBlank
]
# Why something happened: a sentence, not an essay.
Reason: TypeAlias = Annotated[
    str, Field(min_length=1, max_length=500), _Storable, _NotBlank
]
# Free text a person must write (descriptions, summaries, complaints).
Text: TypeAlias = Annotated[
    str, Field(min_length=1, max_length=MAX_TEXT), _Storable, _NotBlank
]
# Free text that may be left empty (notes, rating comments).
OptionalText: TypeAlias = Annotated[str, Field(max_length=MAX_TEXT), _Storable]
Currency: TypeAlias = Annotated[str, AfterValidator(_iso_4217)]
Amount: TypeAlias = Annotated[int, Field(ge=0, le=MAX_AMOUNT)]
Quantity: TypeAlias = Annotated[int, Field(ge=1, le=MAX_QUANTITY)]
Stars: TypeAlias = Annotated[int, Field(ge=1, le=5)]


class Urgency(StrEnum):
    NORMAL = "normal"
    URGENT = "urgent"
    EMERGENCY = "emergency"


class Channel(StrEnum):
    APP = "app"
    WEB = "web"
    PHONE = "phone"
    MINI_PROGRAM = "mini_program"


class AssignmentMethod(StrEnum):
    AUTO = "auto"
    MANUAL = "manual"


class PriceItemKind(StrEnum):
    LABOR = "labor"
    PART = "part"
    CALLOUT = "callout"
    OTHER = "other"


class Outcome(StrEnum):
    FIXED = "fixed"
    NOT_FIXED = "not_fixed"
    FOLLOW_UP_REQUIRED = "follow_up_required"

    @property
    def is_final(self) -> bool:
        """A final completion ends the service; a follow-up needs another visit."""
        return self is not Outcome.FOLLOW_UP_REQUIRED


class Value(BaseModel):
    """A frozen, strict value: the base of payloads and of the values inside them."""

    # strict: no lax coercion, so "5" or true is never an int, a number never a
    # datetime; a client's type error surfaces as a 422, not as a silently stored
    # guess. allow_inf_nan=False: JSON's NaN/Infinity extensions are refused.
    # frozen + extra="forbid": a fact is immutable and carries only known fields.
    model_config = ConfigDict(
        frozen=True, extra="forbid", strict=True, allow_inf_nan=False
    )


class Payload(Value):
    """The `data` of one order event type."""

    TYPE: ClassVar[str]
    SCHEMA_MAJOR: ClassVar[int] = 1


class PriceItem(Value):
    kind: PriceItemKind
    description: Text
    quantity: Quantity
    unit_price: Amount

    @property
    def amount(self) -> int:
        """quantity x unit_price, in minor units."""
        return self.quantity * self.unit_price


PriceItems: TypeAlias = Annotated[
    tuple[PriceItem, ...], Field(max_length=MAX_LIST_ITEMS)
]
Labels: TypeAlias = Annotated[tuple[Label, ...], Field(max_length=MAX_LIST_ITEMS)]
References: TypeAlias = Annotated[
    tuple[Reference, ...], Field(max_length=MAX_LIST_ITEMS)
]


def items_total(items: Iterable[PriceItem]) -> int:
    """Sum of quantity x unit_price, in minor units."""
    return sum(item.amount for item in items)


class Location(Value):
    lat: Annotated[float, Field(ge=-90.0, le=90.0)]
    lon: Annotated[float, Field(ge=-180.0, le=180.0)]


class Dimensions(Value):
    """Per-dimension ratings, 1..5; a customer may rate only some of them."""

    attitude: Stars | None = None
    professionalism: Stars | None = None
    communication: Stars | None = None
    punctuality: Stars | None = None
    price_fairness: Stars | None = None


class Created(Payload):
    TYPE = "created"

    customer_id: Identifier
    category: Label
    region: Label
    urgency: Urgency
    description: Text
    warranty: bool
    channel: Channel
    # Opaque key into the contact vault; the event never carries a phone or address.
    contact_ref: Identifier


class Assigned(Payload):
    TYPE = "assigned"

    technician_id: Identifier
    method: AssignmentMethod
    reason: Reason


class Declined(Payload):
    TYPE = "declined"

    technician_id: Identifier
    reason: Reason


class AssignmentExpired(Payload):
    """Dispatch's own fact: the assignee let the accept target pass without answering.

    It names the assignment it ends, so a late expiry of an older assignment can be
    told apart from one of the current assignment.
    """

    TYPE = "assignment_expired"

    technician_id: Identifier
    assigned_event_id: UUID


class Accepted(Payload):
    TYPE = "accepted"

    technician_id: Identifier
    eta_minutes: Annotated[int, Field(ge=0, le=MAX_ETA_MINUTES)]


class Arrived(Payload):
    TYPE = "arrived"

    technician_id: Identifier
    location: Location | None = None


class Diagnosed(Payload):
    TYPE = "diagnosed"

    fault_code: Label
    summary: Text
    parts_needed: Labels
    remote: bool


class Priced(Payload):
    TYPE = "priced"

    currency: Currency
    items: Annotated[PriceItems, Field(min_length=1)]
    total: Amount

    @model_validator(mode="after")
    def _total_is_sum_of_items(self) -> Self:
        expected = items_total(self.items)
        if self.total != expected:
            raise ValueError(
                f"total {self.total} must equal the sum of quantity x unit_price "
                f"over items, {expected}"
            )
        return self


class QuoteApproved(Payload):
    TYPE = "quote_approved"

    quote_event_id: UUID


class QuoteRejected(Payload):
    TYPE = "quote_rejected"

    quote_event_id: UUID


class Completed(Payload):
    TYPE = "completed"

    outcome: Outcome
    currency: Currency
    final_items: PriceItems
    final_total: Amount
    parts_used: Labels
    notes: OptionalText = ""
    evidence: References

    @model_validator(mode="after")
    def _final_total_is_sum_of_items(self) -> Self:
        expected = items_total(self.final_items)
        if self.final_total != expected:
            raise ValueError(
                f"final_total {self.final_total} must equal the sum of "
                f"quantity x unit_price over final_items, {expected}"
            )
        return self


# A BCP 47 language tag as RFC 5646 writes it (`zh`, `zh-Hans-CN`, `en-GB`, `und`):
# a 2-3 letter language then subtags of 1-8 letters or digits. Well-formedness only,
# no registry lookup: a tag a newer registry adds must not be refused.
LanguageTag: TypeAlias = Annotated[
    str,
    Field(min_length=2, max_length=35, pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$"),
]
UNDETERMINED_LANGUAGE: Final = "und"  # BCP 47's own tag for "not known"


class RatingComment(Value):
    """A rating's free text and the language it is written in (for text analysis)."""

    text: Text
    language: LanguageTag


class Rated(Payload):
    """`rated` version 2: `comment` is `{text, language}` (version 1: a bare string).

    Breaking, hence a new `dataschema`: the shape of `comment` changed and its
    language is required. Version 1 is read through `shared.domain.evolution`.
    """

    TYPE = "rated"
    SCHEMA_MAJOR = 2

    score: Stars
    nps: Annotated[int, Field(ge=0, le=10)] | None = None
    dimensions: Dimensions | None = None
    comment: RatingComment | None = None


class Cancelled(Payload):
    TYPE = "cancelled"

    reason: Reason


class Reopened(Payload):
    TYPE = "reopened"

    reason: Reason


class ComplaintFiled(Payload):
    TYPE = "complaint_filed"

    complaint_id: Identifier
    category: Label
    text: Text


class ComplaintResolved(Payload):
    TYPE = "complaint_resolved"

    complaint_id: Identifier
    resolution: Text


OrderPayload: TypeAlias = (
    Created
    | Assigned
    | Declined
    | AssignmentExpired
    | Accepted
    | Arrived
    | Diagnosed
    | Priced
    | QuoteApproved
    | QuoteRejected
    | Completed
    | Rated
    | Cancelled
    | Reopened
    | ComplaintFiled
    | ComplaintResolved
)

PAYLOAD_TYPES: Final[Mapping[str, type[Payload]]] = MappingProxyType(
    {
        cls.TYPE: cls
        for cls in (
            Created,
            Assigned,
            Declined,
            AssignmentExpired,
            Accepted,
            Arrived,
            Diagnosed,
            Priced,
            QuoteApproved,
            QuoteRejected,
            Completed,
            Rated,
            Cancelled,
            Reopened,
            ComplaintFiled,
            ComplaintResolved,
        )
    }
)


def payload_type(name: str) -> type[Payload]:
    """The payload class for a short (`accepted`) or full CloudEvents type name.

    Raises:
        errors.UnknownEventType: `name` is neither.
    """
    short = name.removeprefix(TYPE_PREFIX)
    try:
        return PAYLOAD_TYPES[short]
    except KeyError:
        raise errors.UnknownEventType(f"unknown order event type {name!r}") from None


def full_type(payload_cls: type[Payload]) -> str:
    """The CloudEvents `type`, e.g. `servicetrail.order.accepted`."""
    return f"{TYPE_PREFIX}{payload_cls.TYPE}"


def dataschema(payload_cls: type[Payload]) -> str:
    """The CloudEvents `dataschema`, e.g. `urn:servicetrail:order.accepted:1`."""
    return f"urn:servicetrail:order.{payload_cls.TYPE}:{payload_cls.SCHEMA_MAJOR}"


def parse_payload(name: str, data_json: bytes | str) -> OrderPayload:
    """Validate an event's JSON `data` strictly against the model of its type.

    Raises:
        errors.UnknownEventType: `name` is not an order event type.
        pydantic.ValidationError: the data does not match the model.
    """
    payload = payload_type(name).model_validate_json(data_json)
    # Every class in PAYLOAD_TYPES is a member of OrderPayload (a unit test checks).
    return cast("OrderPayload", payload)
