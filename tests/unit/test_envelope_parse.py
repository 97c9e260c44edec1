"""`parse_order_event` (one pass) against `to_order_event(parse_envelope(...))`.

Consumers parse records in one pass; producers check with the two-step functions that
consumers will accept what is stored. Both must accept exactly the same records and
build the same events: checked here on valid envelopes of every type and on JSON
mutations of them (values swapped for other JSON values, keys dropped, added and
repeated), which land on both sides of every validator.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.domain.lifecycle import OrderEvent
from shared.events.envelope import (
    encode,
    parse_envelope,
    parse_order_event,
    to_cloudevent,
    to_order_event,
)
from tests import builders
from tests.unit.test_events import sample_payloads


def _record(payload: Any) -> dict[str, Any]:
    event = OrderEvent(
        event_id=uuid4(),
        order_id=uuid4(),
        version=3,
        time=datetime(2026, 12, 3, 8, 0, tzinfo=UTC),
        recorded_at=datetime(2026, 12, 3, 8, 0, 1, tzinfo=UTC),
        actor=builders.make_dispatcher(),
        data=payload,
        correlation_id="corr-1",
    )
    return to_cloudevent(event, source="/servicetrail/intake")


RECORDS = [_record(p) for p in sample_payloads()]


def _outcome(parse: Any, value: str) -> tuple[str, Any]:
    try:
        return "accepted", parse(value)
    except Exception as err:  # the kind of error is part of the contract
        return "refused", type(err)


def assert_same(value: str) -> None:
    one_pass = _outcome(parse_order_event, value)
    two_steps = _outcome(lambda v: to_order_event(parse_envelope(v)), value)
    assert one_pass == two_steps, value


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r["type"])
def test_every_valid_record_gives_the_same_event(record: dict[str, Any]) -> None:
    value = encode(record)
    event = parse_order_event(value)
    assert event == to_order_event(parse_envelope(value))
    assert record["type"].rsplit(".", 1)[1] == type(event.data).TYPE


@pytest.mark.parametrize(
    "value",
    [
        "{}",
        "[]",
        "not json",
        # An unknown type (UnknownEventType), and a known one with another's data.
        encode({**RECORDS[0], "type": "servicetrail.order.bogus"}).decode(),
        encode({**RECORDS[0], "type": RECORDS[1]["type"]}).decode(),
        # Repeated keys: the last one counts, on both paths.
        encode(RECORDS[0]).decode()[:-1] + ',"data":{}}',
        encode(RECORDS[0]).decode()[:-1]
        + f',"data":{json.dumps(RECORDS[0]["data"])}}}',
        encode(RECORDS[0]).decode().replace('"data":{', '"data":{"urgency":5,', 1),
        encode(RECORDS[0]).decode()[:-1] + ',"urgency":5,"urgency":"normal"}',
        encode(RECORDS[0]).decode().replace('"type":', '"type":"x","type":', 1),
        encode(RECORDS[0])
        .decode()
        .replace('"data":{', '"data":{"lat":NaN,"lat":1e400,', 1),
        # NaN in an optional number (to_order_event re-encodes it as NaN).
        encode({**RECORDS[10], "data": {**RECORDS[10]["data"], "score": 5}})
        .decode()
        .replace('"score":5', '"score":NaN', 1),
    ],
)
def test_edge_records_get_the_same_verdict(value: str) -> None:
    assert_same(value)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(
        ["", " ", "normal", "fixed", "labor", "CNY", "2026-12-03T08:00Z"]
    ),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def mutated_records(draw: st.DrawFn) -> str:
    record = json.loads(json.dumps(draw(st.sampled_from(RECORDS))))
    target = record if draw(st.booleans()) else record["data"]
    key = draw(st.sampled_from(sorted(target)) | st.text(max_size=8))
    action = draw(st.sampled_from(["set", "drop", "repeat"]))
    if action == "drop":
        target.pop(key, None)
    elif action == "set":
        target[key] = draw(JSON_VALUES)
    text = json.dumps(record, ensure_ascii=draw(st.booleans()))
    if action == "repeat" and key in target:
        # The same key twice in one object, the first with another value.
        spelled = json.dumps(key) + ":" + json.dumps(target[key])
        text = text.replace(
            spelled,
            json.dumps(key) + ":" + json.dumps(draw(JSON_VALUES)) + "," + spelled,
            1,
        )
    return text


@settings(max_examples=400, deadline=None)
@given(mutated_records())
def test_mutated_records_get_the_same_verdict(value: str) -> None:
    assert_same(value)
