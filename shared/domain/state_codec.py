"""OrderState <-> JSON: the folded state the event store keeps beside each order.

A write decides from the stored state instead of folding the whole stream, so the
codec must be exact: `decode(encode(state)) == state` for every state `fold` can
produce. `decode` is total: anything it cannot read exactly (another format
version, a missing or extra field, a wrong type) raises `StateFormatError`, and the
store then rebuilds the state from the stream, which stays the source of truth.

Pure domain: imports only the stdlib and pydantic, never an I/O framework.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import fields
from datetime import datetime
from types import MappingProxyType
from typing import Final, TypeAlias
from uuid import UUID

from pydantic import TypeAdapter, ValidationError

from shared.domain.events import Outcome, PriceItem, Urgency
from shared.domain.lifecycle import OrderState, OrderStatus, Quote

# Bump when OrderState's fields or their meaning change: stored states of another
# format are rebuilt from their streams, never misread.
STATE_FORMAT: Final = 2
FORMAT_KEY: Final = "format"

Json: TypeAlias = "str | int | bool | list[Json] | dict[str, Json] | None"


class StateFormatError(ValueError):
    """The JSON is not a state of this format: rebuild it from the stream."""


_PRICE_ITEMS: Final = TypeAdapter(tuple[PriceItem, ...])


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise StateFormatError(f"expected a string, got {value!r}")
    return value


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise StateFormatError(f"expected an integer, got {value!r}")
    return value


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise StateFormatError(f"expected a boolean, got {value!r}")
    return value


def _instant(value: object) -> datetime:
    parsed = datetime.fromisoformat(_text(value))
    if parsed.utcoffset() is None:
        raise StateFormatError(f"expected an instant with an offset, got {value!r}")
    return parsed


def _labels(value: object) -> frozenset[str]:
    if not isinstance(value, list):
        raise StateFormatError(f"expected a list, got {value!r}")
    return frozenset(_text(item) for item in value)


def _quote_json(quote: Quote) -> Json:
    return {
        "event_id": str(quote.event_id),
        "currency": quote.currency,
        "total": quote.total,
        "items": _PRICE_ITEMS.dump_python(quote.items, mode="json"),
    }


def _quote(value: object) -> Quote:
    if not isinstance(value, dict) or set(value) != {
        "event_id",
        "currency",
        "total",
        "items",
    }:
        raise StateFormatError(f"expected a quote, got {value!r}")
    # JSON mode: a strict model reads enums from their JSON strings.
    items = _PRICE_ITEMS.validate_json(json.dumps(value["items"]))
    return Quote(
        UUID(_text(value["event_id"])),
        _text(value["currency"]),
        _int(value["total"]),
        items,
    )


Encode: TypeAlias = Callable[[object], Json]
Decode: TypeAlias = Callable[[object], object]


def _optional(encode: Encode, decode: Decode) -> tuple[Encode, Decode]:
    return (
        lambda v: None if v is None else encode(v),
        lambda v: None if v is None else decode(v),
    )


def _same(value: object) -> Json:
    assert value is None or isinstance(value, str | int | bool)
    return value


def _iso(value: object) -> Json:
    assert isinstance(value, datetime)
    return value.isoformat()


def _sorted(value: object) -> Json:
    assert isinstance(value, frozenset)
    return sorted(value)


def _value(value: object) -> Json:
    assert isinstance(value, OrderStatus | Urgency | Outcome)
    return value.value


def _quote_of(value: object) -> Json:
    assert isinstance(value, Quote)
    return _quote_json(value)


_TEXT: Final = (_same, _text)
_OPTIONAL_TEXT: Final = _optional(_same, _text)
_INT: Final = (_same, _int)
_BOOL: Final = (_same, _bool)
_INSTANT: Final = (_iso, _instant)
_OPTIONAL_INSTANT: Final = _optional(_iso, _instant)
_LABELS: Final = (_sorted, _labels)
_OPTIONAL_OUTCOME: Final = _optional(_value, lambda v: Outcome(_text(v)))
_OPTIONAL_QUOTE: Final = _optional(_quote_of, _quote)

# One (encode, decode) pair per OrderState field; a field without one fails the
# round-trip test, so a new field cannot be silently dropped.
FIELD_CODECS: Final[Mapping[str, tuple[Encode, Decode]]] = MappingProxyType(
    {
        "order_id": (str, lambda v: UUID(_text(v))),
        "version": _INT,
        "status": (_value, lambda v: OrderStatus(_text(v))),
        "customer_id": _OPTIONAL_TEXT,
        "category": _OPTIONAL_TEXT,
        "region": _OPTIONAL_TEXT,
        "urgency": _optional(_value, lambda v: Urgency(_text(v))),
        "warranty": _BOOL,
        "created_at": _OPTIONAL_INSTANT,
        "last_event_at": _INSTANT,
        "technician_id": _OPTIONAL_TEXT,
        "declined_by": _LABELS,
        "expired_for": _LABELS,
        "assigned_event_id": _optional(str, lambda v: UUID(_text(v))),
        "assigned_at": _OPTIONAL_INSTANT,
        "first_assigned_at": _OPTIONAL_INSTANT,
        "first_accepted_at": _OPTIONAL_INSTANT,
        "promised_arrival": _OPTIONAL_INSTANT,
        "first_arrived_at": _OPTIONAL_INSTANT,
        "first_diagnosed_at": _OPTIONAL_INSTANT,
        "first_completed_at": _OPTIONAL_INSTANT,
        "first_outcome": _OPTIONAL_OUTCOME,
        "first_completed_by": _OPTIONAL_TEXT,
        "first_completed_recorded_at": _OPTIONAL_INSTANT,
        "completed_at": _OPTIONAL_INSTANT,
        "cancelled_at": _OPTIONAL_INSTANT,
        "reopened_at": _OPTIONAL_INSTANT,
        "visits": _INT,
        "follow_ups": _INT,
        "current_quote": _OPTIONAL_QUOTE,
        "approved_quote": _OPTIONAL_QUOTE,
        "quotes_count": _INT,
        "charged_total": _INT,
        "final_total": _optional(_same, _int),
        "final_currency": _OPTIONAL_TEXT,
        "final_outcome": _OPTIONAL_OUTCOME,
        "rated": _BOOL,
        "reopen_count": _INT,
        "open_complaints": _LABELS,
        "all_complaints": _LABELS,
    }
)
_KEYS: Final = frozenset({FORMAT_KEY, *FIELD_CODECS})


def encode_state(state: OrderState) -> dict[str, Json]:
    """The state as a JSON object (with its format version)."""
    encoded: dict[str, Json] = {FORMAT_KEY: STATE_FORMAT}
    for f in fields(state):
        encode, _ = FIELD_CODECS[f.name]
        encoded[f.name] = encode(getattr(state, f.name))
    return encoded


def decode_state(value: object) -> OrderState:
    """The state a JSON object encodes; StateFormatError when it is not exact."""
    if not isinstance(value, dict) or value.get(FORMAT_KEY) != STATE_FORMAT:
        raise StateFormatError(f"not an order state of format {STATE_FORMAT}")
    if set(value) != _KEYS:
        raise StateFormatError(f"fields {sorted(set(value) ^ _KEYS)} differ")
    try:
        decoded = {
            name: decode(value[name]) for name, (_, decode) in FIELD_CODECS.items()
        }
        return OrderState(**decoded)  # type: ignore[arg-type]  # checked per field
    except StateFormatError:
        raise
    except (TypeError, ValueError, ValidationError) as err:
        raise StateFormatError(str(err)) from None
