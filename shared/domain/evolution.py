"""Event evolution: every payload schema ever published, and how old ones are read.

An event's `dataschema` (`urn:servicetrail:order.<type>:<major>`) names the model its
`data` was written in. The policy (README, "Event evolution"):

- An additive, optional change (a new optional field, a new event type) keeps the
  version: what was valid stays valid and means the same. Readers are deployed
  before any writer sends the new field (payloads forbid unknown fields).
- A breaking change (a field removed, renamed, retyped or made required, a meaning
  changed) bumps the version: the type's model in `shared.domain.events` becomes the
  new version, the old model moves here unchanged, and an upcaster from the old
  version to the next one is registered in `UPCASTERS`.
- Consumers read every version ever published: `read_payload` validates the data
  with the model of the version it was written in, then upcasts it step by step to
  the newest model, the only one the domain folds. An unknown version is refused
  (`UnknownSchema`), never guessed.
- Stored bytes never change. The event store and the ledger keep what was written
  (the ledger's hash chain covers those bytes, never an upcast form); upcasting
  happens on every read. `OrderEvent.written_as` keeps the written payload, so an
  envelope made again from an event is byte for byte the stored one.
- A published model or upcaster is never edited nor deleted: the golden stream
  (`tests/golden/`) must import unchanged into every later release.

Pure domain: imports only the stdlib and pydantic, never an I/O framework.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Final, TypeAlias, cast

from pydantic import Field

from shared.domain import errors
from shared.domain.events import (
    PAYLOAD_TYPES,
    TYPE_PREFIX,
    UNDETERMINED_LANGUAGE,
    Dimensions,
    OptionalText,
    OrderPayload,
    Payload,
    Rated,
    RatingComment,
    Stars,
)

# Version 1 is what a client means when it names no version: every client written
# before versions could be named spoke version 1, and its meaning must not change
# under it when a newer version appears.
FIRST_VERSION: Final = 1
_URN: Final = re.compile(r"urn:servicetrail:order\.([a-z_]{1,50}):([1-9][0-9]{0,5})")
MAX_SCHEMA_LENGTH: Final = 200


class RatedV1(Payload):
    """`rated` version 1 (published until version 2): `comment` is a bare string.

    Frozen as published. `Dimensions` has not changed since; if it ever does, its
    version-1 shape is copied here first.
    """

    TYPE = "rated"
    SCHEMA_MAJOR = 1

    score: Stars
    nps: Annotated[int, Field(ge=0, le=10)] | None = None
    dimensions: Dimensions | None = None
    comment: OptionalText | None = None


def rated_1_to_2(old: RatedV1) -> Rated:
    """A version-1 rating as version 2.

    The comment's language was never asked: it is `und` (BCP 47: undetermined),
    which says so rather than guess one from the text. A version-1 comment that is
    empty or blank said nothing: it becomes no comment (version 2 has no empty ones).
    """
    text = old.comment
    return Rated(
        score=old.score,
        nps=old.nps,
        dimensions=old.dimensions,
        comment=None
        if text is None or not text.strip()
        else RatingComment(text=text, language=UNDETERMINED_LANGUAGE),
    )


# Schemas no longer written by today's code but readable for ever.
RETIRED: Final[tuple[type[Payload], ...]] = (RatedV1,)

SchemaKey: TypeAlias = tuple[str, int]
Upcaster: TypeAlias = Callable[[Payload], Payload]

SCHEMAS: Final[Mapping[SchemaKey, type[Payload]]] = MappingProxyType(
    {(cls.TYPE, cls.SCHEMA_MAJOR): cls for cls in (*PAYLOAD_TYPES.values(), *RETIRED)}
)
# (type, n) -> the function from version n to version n + 1.
UPCASTERS: Final[Mapping[SchemaKey, Upcaster]] = MappingProxyType(
    {("rated", 1): cast("Upcaster", rated_1_to_2)}
)


def newest_version(type_name: str) -> int:
    """The version today's code writes for a short type name."""
    return PAYLOAD_TYPES[type_name].SCHEMA_MAJOR


def versions(type_name: str) -> range:
    """Every version of a type ever published, oldest first."""
    return range(FIRST_VERSION, newest_version(type_name) + 1)


def _check_registry() -> None:
    """Each type's versions are gapless, and each old one upcasts to the next."""
    for name in PAYLOAD_TYPES:
        for version in versions(name):
            if (name, version) not in SCHEMAS:
                raise RuntimeError(f"no model for {name} version {version}")
            if version < newest_version(name) and (name, version) not in UPCASTERS:
                raise RuntimeError(f"no upcaster from {name} version {version}")
    for name, version in (*SCHEMAS, *UPCASTERS):
        if name not in PAYLOAD_TYPES or version > newest_version(name):
            raise RuntimeError(f"{name} version {version} is newer than the newest")


_check_registry()


@dataclass(frozen=True, slots=True)
class Schema:
    """One published version of one event type."""

    name: str  # the short type name, e.g. `rated`
    version: int

    @property
    def urn(self) -> str:
        """The CloudEvents `dataschema`, e.g. `urn:servicetrail:order.rated:2`."""
        return f"urn:servicetrail:order.{self.name}:{self.version}"

    @property
    def model(self) -> type[Payload]:
        return SCHEMAS[(self.name, self.version)]


def schema_of(payload: Payload) -> Schema:
    """The schema a payload model is written in."""
    return Schema(payload.TYPE, payload.SCHEMA_MAJOR)


def parse_schema(type_name: str, dataschema: str | None) -> Schema:
    """The schema `dataschema` names for an event of `type_name` (short or full).

    None means version 1 (see FIRST_VERSION).

    Raises:
        errors.UnknownSchema: not a schema URN, another type's, or a version that
            was never published (a newer release's, say).
    """
    short = type_name.removeprefix(TYPE_PREFIX)
    if dataschema is None:
        return Schema(short, FIRST_VERSION)
    found = _URN.fullmatch(dataschema[:MAX_SCHEMA_LENGTH])
    if found is None or len(dataschema) > MAX_SCHEMA_LENGTH:
        raise errors.UnknownSchema(
            f"dataschema {dataschema[:MAX_SCHEMA_LENGTH]!r} is not "
            "urn:servicetrail:order.<type>:<version>"
        )
    named, version = found[1], int(found[2])
    if named != short:
        raise errors.UnknownSchema(
            f"dataschema {dataschema!r} is the schema of {named}, not of {short}"
        )
    if (short, version) not in SCHEMAS:
        known = ", ".join(
            Schema(short, v).urn
            for v in (versions(short) if short in PAYLOAD_TYPES else ())
        )
        raise errors.UnknownSchema(
            f"dataschema {dataschema!r} is not a published version of {short} "
            f"(known: {known})"
        )
    return Schema(short, version)


def upcast(payload: Payload) -> OrderPayload:
    """A payload of any published version as its type's newest model."""
    current = payload
    while newest_version(current.TYPE) > current.SCHEMA_MAJOR:
        current = UPCASTERS[(current.TYPE, current.SCHEMA_MAJOR)](current)
    # The newest model of every type is a member of OrderPayload.
    return cast("OrderPayload", current)


@dataclass(frozen=True, slots=True)
class ReadPayload:
    """An event's data as the domain folds it, and as it was written if older."""

    data: OrderPayload
    written_as: Payload | None


def read_payload(schema: Schema, data_json: bytes | str) -> ReadPayload:
    """Validate `data` with its schema's model and upcast it to the newest.

    Raises:
        pydantic.ValidationError: the data does not match its schema's model.
    """
    written = schema.model.model_validate_json(data_json)
    data = upcast(written)
    return ReadPayload(data, None if data is written else written)


def read_event_data(
    type_name: str, dataschema: str | None, data_json: bytes | str
) -> ReadPayload:
    """`read_payload` for an event's `type` and `dataschema` as they are written.

    Raises:
        errors.UnknownEventType: `type_name` is not an order event type.
        errors.UnknownSchema: see `parse_schema`.
        pydantic.ValidationError: the data does not match its schema's model.
    """
    short = type_name.removeprefix(TYPE_PREFIX)
    if short not in PAYLOAD_TYPES:
        raise errors.UnknownEventType(f"unknown order event type {type_name!r}")
    return read_payload(parse_schema(short, dataschema), data_json)
