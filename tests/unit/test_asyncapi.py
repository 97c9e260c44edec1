"""The AsyncAPI document: checked in as generated, complete, AsyncAPI 3 shaped, true.

`deploy/asyncapi.json` is what `python -m shared.events.asyncapi` prints; these tests
fail as soon as a payload model, a topic or the envelope changes without the document
being regenerated, and they check that real records match the published schemas.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import jsonschema_rs
import pytest

from services.dispatch.commands import unassignable_alert
from services.metrics import alerts
from shared.domain.events import PAYLOAD_TYPES, dataschema, full_type
from shared.domain.evolution import RETIRED
from shared.domain.lifecycle import OrderEvent
from shared.events import asyncapi
from shared.events.envelope import encode, to_cloudevent
from shared.events.quality import TechnicianScored, technician_scored_cloudevent
from shared.events.topics import (
    CLOUDEVENTS_CONTENT_TYPE,
    DEAD_LETTER,
    ORDER_EVENTS,
    QUALITY_ALERTS,
    SOURCE_DISPATCH,
    SOURCE_INTAKE,
)
from tests import builders
from tests.unit.test_events import sample_payloads

CHECKED_IN = Path(__file__).resolve().parents[2] / "deploy" / "asyncapi.json"
REGENERATE = "python -m shared.events.asyncapi > deploy/asyncapi.json"

Json = dict[str, Any]


@pytest.fixture(scope="module")
def document() -> Json:
    return asyncapi.build_asyncapi()


def resolve(document: Json, ref: str) -> Any:
    """Follow a local JSON Pointer (`#/a/b`) inside the document."""
    assert ref.startswith("#/"), f"not a local reference: {ref}"
    node: Any = document
    for part in ref[2:].split("/"):
        key = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict), f"{ref}: {key!r} is below a non-object"
        assert key in node, f"{ref} does not resolve ({key!r} missing)"
        node = node[key]
    return node


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                assert isinstance(value, str)
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def keys(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from keys(value)
    elif isinstance(node, list):
        for item in node:
            yield from keys(item)


def message_validator(document: Json, message_id: str) -> jsonschema_rs.Validator:
    """A validator of one message's payload, its refs resolved in the document."""
    schema = {
        "$ref": f"#/components/messages/{message_id}/payload",
        "components": document["components"],
    }
    return jsonschema_rs.Draft7Validator(schema)


def recorded(data: Any, version: int = 1) -> OrderEvent:
    moment = builders.T0 + timedelta(minutes=version)
    return OrderEvent(
        event_id=uuid4(),
        order_id=uuid4(),
        version=version,
        time=moment,
        recorded_at=moment + timedelta(seconds=1),
        actor=builders.make_customer(),
        data=data,
        device_id="device-1",
        device_sequence=version,
    )


class TestCheckedInDocument:
    def test_equals_the_generated_document(self, document: Json) -> None:
        assert CHECKED_IN.exists(), f"missing {CHECKED_IN}; run `{REGENERATE}`"
        text = CHECKED_IN.read_text(encoding="utf-8")
        assert json.loads(text) == document, (
            f"deploy/asyncapi.json is out of date; run `{REGENERATE}`"
        )
        assert text == asyncapi.render(document), f"reformatted; run `{REGENERATE}`"

    def test_generation_is_deterministic(self) -> None:
        assert asyncapi.render(asyncapi.build_asyncapi()) == asyncapi.render(
            asyncapi.build_asyncapi()
        )


class TestAsyncApi3Shape:
    def test_top_level(self, document: Json) -> None:
        assert document["asyncapi"] == "3.0.0"
        assert {"title", "version"} <= document["info"].keys()
        assert {"channels", "operations", "components"} <= document.keys()
        assert document["defaultContentType"] == CLOUDEVENTS_CONTENT_TYPE
        for server in document["servers"].values():
            assert server["protocol"] == "kafka"
            assert {"host", "protocol"} <= server.keys()

    def test_the_three_topics_are_channels(self, document: Json) -> None:
        addresses = {c["address"] for c in document["channels"].values()}
        assert addresses == {ORDER_EVENTS, QUALITY_ALERTS, DEAD_LETTER}
        for channel in document["channels"].values():
            assert channel["bindings"]["kafka"]["topic"] == channel["address"]

    def test_every_reference_resolves(self, document: Json) -> None:
        found = list(refs(document))
        assert found
        for ref in found:
            resolve(document, ref)

    def test_operations_name_their_channel_and_its_messages(
        self, document: Json
    ) -> None:
        for name, operation in document["operations"].items():
            assert operation["action"] in {"send", "receive"}, name
            channel_ref = operation["channel"]["$ref"]
            assert channel_ref.startswith("#/channels/")
            channel = resolve(document, channel_ref)
            for message in operation["messages"]:
                # AsyncAPI 3: an operation's messages are those of its channel.
                assert message["$ref"].startswith(f"{channel_ref}/messages/"), name
                resolve(document, message["$ref"])
            assert len(operation["messages"]) == len(channel["messages"]), name

    def test_channel_messages_are_components(self, document: Json) -> None:
        for channel in document["channels"].values():
            for message in channel["messages"].values():
                assert message["$ref"].startswith("#/components/messages/")

    def test_schemas_use_no_json_schema_2020_keywords(self, document: Json) -> None:
        # The default AsyncAPI schema format is a superset of JSON Schema draft 07;
        # pydantic's $defs are hoisted into components.schemas.
        assert not {"$defs", "prefixItems", "$dynamicRef"} & set(keys(document))
        assert all(
            ref.startswith("#/components/") or ref.startswith("#/channels/")
            for ref in refs(document)
        )

    def test_consumer_groups_are_bound(self, document: Json) -> None:
        groups = {
            op["bindings"]["kafka"]["groupId"]["const"]
            for op in document["operations"].values()
            if op["action"] == "receive"
        }
        assert len(groups) == 4


class TestOrderEventMessages:
    def test_every_payload_type_has_a_message(self, document: Json) -> None:
        messages = document["components"]["messages"]
        channel = document["channels"]["orderEvents"]["messages"]
        for name, cls in PAYLOAD_TYPES.items():
            message_id = f"order.{name}"
            assert message_id in messages, name
            assert message_id in channel, name
            message = messages[message_id]
            assert message["name"] == full_type(cls)
            narrowed = message["payload"]["allOf"][1]["properties"]
            assert narrowed["type"]["const"] == full_type(cls)
            assert narrowed["dataschema"]["const"] == dataschema(cls)
            assert narrowed["data"] == {"$ref": f"#/components/schemas/{cls.__name__}"}
        order_messages = {m for m in messages if m.startswith("order.")}
        assert len(order_messages) == len(PAYLOAD_TYPES) + len(RETIRED)

    def test_data_schemas_are_the_models_schemas(self, document: Json) -> None:
        schemas = document["components"]["schemas"]
        for cls in PAYLOAD_TYPES.values():
            generated = cls.model_json_schema(ref_template=asyncapi.SCHEMA_REF)
            nested = generated.pop("$defs", {})
            assert schemas[cls.__name__] == generated, cls.__name__
            for model, schema in nested.items():
                assert schemas[model] == schema, model

    def test_kafka_binding_key_and_content_type_header(self, document: Json) -> None:
        trait = document["components"]["messageTraits"]["orderEventRecord"]
        assert trait["bindings"]["kafka"]["key"]["format"] == "uuid"
        header = trait["headers"]["properties"]["content-type"]
        assert (
            header["const"]
            == CLOUDEVENTS_CONTENT_TYPE
            == "application/cloudevents+json"
        )
        for name in PAYLOAD_TYPES:
            message = document["components"]["messages"][f"order.{name}"]
            assert message["contentType"] == CLOUDEVENTS_CONTENT_TYPE
            assert message["traits"] == [
                {"$ref": "#/components/messageTraits/orderEventRecord"}
            ]

    @pytest.mark.parametrize("payload", sample_payloads(), ids=lambda p: p.TYPE)
    @pytest.mark.parametrize("source", [SOURCE_INTAKE, SOURCE_DISPATCH])
    def test_real_records_match_their_message(
        self, document: Json, payload: Any, source: str
    ) -> None:
        envelope = to_cloudevent(recorded(payload, 3), source=source)
        message_validator(document, f"order.{payload.TYPE}").validate(envelope)

    def test_the_samples_cover_every_type(self) -> None:
        assert {p.TYPE for p in sample_payloads()} == set(PAYLOAD_TYPES)

    def test_a_record_does_not_match_another_types_message(
        self, document: Json
    ) -> None:
        envelope = to_cloudevent(
            recorded(builders.make_created()), source=SOURCE_INTAKE
        )
        assert not message_validator(document, "order.assigned").is_valid(envelope)
        tampered = {**envelope, "data": {**envelope["data"], "urgency": "whenever"}}
        assert not message_validator(document, "order.created").is_valid(tampered)
        unknown = {**envelope, "data": {**envelope["data"], "phone": "+86 138"}}
        assert not message_validator(document, "order.created").is_valid(unknown)


class TestOtherTopics:
    def test_quality_alerts_match_what_metrics_emits(self, document: Json) -> None:
        alert = {
            "specversion": "1.0",
            "id": str(uuid4()),
            "source": "/servicetrail/metrics",
            "type": "servicetrail.quality.alert_raised",
            "subject": "region:shanghai-pudong",
            "time": "2026-03-02T09:00:00.000000Z",
            "datacontenttype": "application/json",
            "dataschema": "urn:servicetrail:quality.alert_raised:1",
            "data": {
                "alert_id": str(uuid4()),
                "rule": "slow_response",
                "indicator": "response_time_s",
                "statistic": "p90",
                "scope": "region:shanghai-pudong",
                "value": 15000.0,
                "threshold": 14400,
                "samples": 12,
                "window_seconds": 3600,
            },
        }
        message_validator(document, "quality.alert_raised").validate(alert)
        assert not message_validator(document, "quality.alert_cleared").is_valid(alert)

    @pytest.mark.parametrize("name", ["alert_raised", "alert_cleared"])
    def test_dispatchs_unassignable_alerts_match_their_message(
        self, document: Json, name: str
    ) -> None:
        alert = unassignable_alert(
            name,
            alert_id=uuid4(),
            order_id=uuid4(),
            now=builders.T0,
            waiting=name == "alert_raised",
        )
        message_validator(document, f"quality.{name}").validate(
            json.loads(encode(alert))
        )

    @pytest.mark.parametrize("composite", [None, 0.0, 87.25, 100.0])
    def test_technician_scores_match_their_message(
        self, document: Json, composite: float | None
    ) -> None:
        score = TechnicianScored(
            technician_id="tech-42",
            composite=composite,
            samples=7,
            window="30d",
            policy_version="indicators.md@abc",
            as_of=builders.T0,
        )
        event = json.loads(
            encode(
                technician_scored_cloudevent(score, event_id=uuid4(), time=builders.T0)
            )
        )
        validator = message_validator(document, "quality.technician_scored")
        validator.validate(event)
        assert not validator.is_valid(
            {**event, "data": {**event["data"], "samples": -1}}
        )
        assert not message_validator(document, "quality.alert_raised").is_valid(event)

    def test_alert_constants_are_the_metrics_services(self) -> None:
        assert asyncapi.ALERT_SOURCE == alerts.SOURCE
        assert asyncapi.ALERT_TYPE_PREFIX == alerts.ALERT_TYPE_PREFIX

    def test_dead_letters_describe_the_error_headers(self, document: Json) -> None:
        message = document["components"]["messages"]["deadLetter"]
        assert set(message["headers"]["required"]) == set(asyncapi.DEAD_LETTER_HEADERS)
