"""`parse_header`: the typed header of a record, or PoisonRecord for a hostile one.

The header is all the ledger reads from a record (the store check vouches for the
rest), so every field it takes is checked for its type here, and it must agree with
the full parse on every valid record.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord

from shared.events.envelope import encode
from shared.kafka.consumer import (
    PoisonRecord,
    TrackingConsumer,
    parse_header,
    parse_record,
)
from tests.integration.kafka_io import consumer_records
from tests.unit.test_envelope_parse import RECORDS


def _record(value: bytes | None) -> ConsumerRecord[bytes, bytes]:
    return consumer_records([value])[0]


@pytest.mark.parametrize("envelope", RECORDS, ids=lambda r: r["type"])
def test_the_header_is_what_the_full_parse_reads(envelope: dict[str, Any]) -> None:
    record = _record(encode(envelope))
    assert parse_header(record).header == parse_record(record).header


def _with(**fields: Any) -> bytes:
    envelope = dict(RECORDS[0])
    for name, value in fields.items():
        if value is _MISSING:
            del envelope[name]
        else:
            envelope[name] = value
    return json.dumps(envelope).encode()


_MISSING = object()


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"",
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'"a string"',
        _with(id=_MISSING),
        _with(id="not-a-uuid"),
        _with(id=12),
        _with(subject=_MISSING),
        _with(subject=None),
        _with(orderversion=True),  # bool is an int to Python, not to JSON
        _with(orderversion=0),
        _with(orderversion=-3),
        _with(orderversion="3"),
        _with(orderversion=3.0),
        _with(type=7),
        _with(type=_MISSING),
        _with(time="2026-12-03T08:00:00"),  # no offset
        _with(time="yesterday"),
        _with(time=1733212800),
        _with(recordedtime=_MISSING),
        _with(recordedtime=["2026-12-03T08:00:00Z"]),
    ],
)
def test_a_hostile_header_is_a_poison_record(value: bytes | None) -> None:
    with pytest.raises(PoisonRecord):
        parse_header(_record(value))


def test_payloads_go_unvalidated_only_behind_the_store_check() -> None:
    unused: Any = None
    with pytest.raises(ValueError, match="check_against_store"):
        TrackingConsumer(
            engine=unused,
            consumer=unused,
            producer=unused,
            tracking=unused,
            topics=[],
            handler=unused,
            parse_payloads=False,
        )
