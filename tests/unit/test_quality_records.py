"""Dispatch reads the quality topic: score records validated whole, others skipped."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import orjson
import pytest
from aiokafka.structs import ConsumerRecord

from services.dispatch.consumer import parse_quality_record
from shared.events.envelope import encode, quality_alert_cloudevent
from shared.events.quality import (
    TECHNICIAN_SCORED_TYPE,
    TechnicianScored,
    technician_scored_cloudevent,
)
from shared.kafka.consumer import NO_ORDER, PoisonRecord
from tests.integration.kafka_io import consumer_records

NOW = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)


def record(value: bytes | None) -> ConsumerRecord[bytes, bytes]:
    # The topic does not matter to the parser.
    (only,) = consumer_records([value])
    return only


def score_event(**data: Any) -> dict[str, Any]:
    score = TechnicianScored(
        technician_id="tech-1",
        composite=72.5,
        samples=6,
        window="30d",
        policy_version="v",
        as_of=NOW,
    )
    event = orjson.loads(
        encode(technician_scored_cloudevent(score, event_id=uuid4(), time=NOW))
    )
    return {**event, "data": {**event["data"], **data}}


def test_a_valid_score_is_read_with_its_id_and_type() -> None:
    event = score_event()
    consumed = parse_quality_record(record(orjson.dumps(event)))
    assert str(consumed.header.event_id) == event["id"]
    assert consumed.header.type == TECHNICIAN_SCORED_TYPE
    assert consumed.header.order_id == NO_ORDER


def test_other_quality_events_are_read_as_far_as_their_type() -> None:
    alert = quality_alert_cloudevent(
        "alert_raised", subject="region:x", time=NOW, data={"anything": [1, 2]}
    )
    consumed = parse_quality_record(record(encode(alert)))
    assert consumed.header.type == "servicetrail.quality.alert_raised"


@pytest.mark.parametrize(
    "data",
    [
        {"composite": 100.01},
        {"composite": -0.5},
        {"composite": "50"},
        {"composite": True},
        {"samples": -1},
        {"samples": 2**53},
        {"samples": 3.0},
        {"samples": False},
        {"technician_id": "t" * 201},
        {"technician_id": ""},
        {"technician_id": 7},
        {"window": "90d"},
        {"as_of": "2026-12-04T08:00:00"},
        {"policy_version": "p" * 101},
        {"unexpected": "field"},
    ],
)
def test_hostile_score_data_is_poison(data: dict[str, Any]) -> None:
    with pytest.raises(PoisonRecord):
        parse_quality_record(record(orjson.dumps(score_event(**data))))


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"",
        b"[1, 2]",
        b"\xff\xfe",
        orjson.dumps({**score_event(), "id": "not-a-uuid"}),
        orjson.dumps({**score_event(), "time": "yesterday"}),
        orjson.dumps({**score_event(), "source": "/servicetrail/intake"}),
        orjson.dumps({k: v for k, v in score_event().items() if k != "data"}),
    ],
)
def test_unreadable_or_forged_records_are_poison(value: bytes | None) -> None:
    with pytest.raises(PoisonRecord):
        parse_quality_record(record(value))
