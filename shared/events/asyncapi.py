"""The AsyncAPI 3.0 document of ServiceTrail's Kafka topics, generated from the code.

The `data` schema of every order event message is the JSON Schema of its pydantic
payload model (`shared.domain.events.PAYLOAD_TYPES`) and the envelope schema is the one
of `shared.events.envelope.Envelope`, so the published contract cannot drift from what
the services validate. `tests/unit/test_asyncapi.py` checks that the checked-in
`deploy/asyncapi.json` equals what this module generates; regenerate it with

    python -m shared.events.asyncapi > deploy/asyncapi.json

Pure: `build_asyncapi()` reads nothing and writes nothing; only `__main__` prints.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any, Final

from pydantic.json_schema import models_json_schema

from shared.domain.alert_case import STEP_TYPES
from shared.domain.events import PAYLOAD_TYPES, Payload, dataschema, full_type
from shared.domain.evolution import RETIRED
from shared.events.envelope import DATA_CONTENT_TYPE, SPECVERSION, Envelope
from shared.events.quality import TECHNICIAN_SCORED, TechnicianScoredEvent
from shared.events.topics import (
    CLOUDEVENTS_CONTENT_TYPE,
    DEAD_LETTER,
    DEFAULT_PARTITIONS,
    DISPATCH_GROUP,
    DISPATCH_QUALITY_GROUP,
    LEDGER_GROUP,
    METRICS_GROUP,
    ORDER_EVENTS,
    QUALITY_ALERTS,
    SOURCE_DISPATCH,
    SOURCE_INTAKE,
)

JsonObject = dict[str, Any]

ASYNCAPI_VERSION: Final = "3.0.0"
# The version of this contract. Bump the major version with any payload's
# SCHEMA_MAJOR, the minor version when a message or an optional field is added.
# 2.0.0: `rated` version 2 (comment `{text, language}`); version 1 still listed, as
# consumers read it for ever (shared.domain.evolution).
CONTRACT_VERSION: Final = "2.0.0"
KAFKA_BINDING_VERSION: Final = "0.5.0"
SCHEMA_REF: Final = "#/components/schemas/{model}"

# The quality alerts of metrics (services/metrics/alerts.py) and of dispatch (rule
# `unassignable`, services/dispatch/commands.py) are built as plain dicts; they are
# described here by hand and kept in step with those modules. The technicians'
# scores have a model (shared.events.quality) and their schema is generated.
ALERT_TYPE_PREFIX: Final = "servicetrail.quality."
ALERT_SOURCE: Final = "/servicetrail/metrics"
ALERT_SOURCES: Final = (ALERT_SOURCE, SOURCE_DISPATCH)
ALERT_EVENTS: Final = ("alert_raised", "alert_cleared")

# Dead-letter headers added by shared/kafka/consumer.py to the original record's own.
DEAD_LETTER_HEADERS: Final = {
    "error.type": "Class name of the error that stopped processing.",
    "error.message": "The error message (at most 4000 characters).",
    "original.topic": "Topic the record was read from.",
    "original.partition": "Partition of the original record (decimal).",
    "original.offset": "Offset of the original record (decimal).",
    "consumer.group": "Consumer group that could not process the record.",
}
# Only on records a consumer refused because the event store does not hold them so.
UNTRUSTED_RECORD_HEADERS: Final = {
    "rejected.reason": (
        "Why the record is not the stored event (error.type UntrustedRecord): "
        "'forged: no such event in the store', or 'altered: ...' (another envelope, "
        "order or orderversion than the stored event of that id)."
    ),
}

# Who posts each order event (events.md); a type missing here still gets a message.
SUMMARIES: Final[Mapping[str, str]] = {
    "created": "A customer requested service (customer app, intake).",
    "assigned": "A technician was assigned (dispatcher or auto-assignment).",
    "declined": "The assigned technician declined the order.",
    "assignment_expired": (
        "Dispatch ended an assignment left unanswered past the accept target; "
        "the order waits for the next technician."
    ),
    "accepted": "The assigned technician accepted the order, with an ETA.",
    "arrived": "The technician arrived on site.",
    "diagnosed": "The technician diagnosed the fault (on site or remotely).",
    "priced": "The technician quoted a price, item by item.",
    "quote_approved": "The customer approved a quote.",
    "quote_rejected": "The customer rejected a quote.",
    "completed": "The technician completed the visit, with the final bill.",
    "rated": "The customer rated the service.",
    "cancelled": "The order was cancelled before completion.",
    "reopened": "The customer reopened a completed order within the warranty window.",
    "complaint_filed": "The customer filed a complaint.",
    "complaint_resolved": "A dispatcher resolved a complaint.",
}


def _ref(*path: str) -> JsonObject:
    return {"$ref": "#/" + "/".join(path)}


def _order_message_id(name: str) -> str:
    return f"order.{name}"


def _retired_message_id(payload_cls: type[Payload]) -> str:
    """`order.rated.v1`: an older version, no longer written, read for ever."""
    return f"order.{payload_cls.TYPE}.v{payload_cls.SCHEMA_MAJOR}"


def _alert_message_id(name: str) -> str:
    return f"quality.{name}"


def _model_schemas() -> JsonObject:
    """JSON Schemas of the payload models and the envelopes, refs into components."""
    models: list[type[Payload] | type[Envelope] | type[TechnicianScoredEvent]] = [
        *PAYLOAD_TYPES.values(),
        *RETIRED,
        Envelope,
        TechnicianScoredEvent,
    ]
    _, top = models_json_schema(
        [(model, "validation") for model in models], ref_template=SCHEMA_REF
    )
    schemas: JsonObject = dict(top.get("$defs", {}))
    # Envelope is never referenced by another model: safe to give it a clearer name.
    schemas["OrderEventEnvelope"] = schemas.pop(Envelope.__name__)
    return schemas


def _string_const(value: str) -> JsonObject:
    return {"type": "string", "const": value}


def _order_event_payload(payload_cls: type[Payload]) -> JsonObject:
    """The envelope, narrowed to one event type and its `data` model."""
    return {
        "allOf": [
            _ref("components", "schemas", "OrderEventEnvelope"),
            {
                "type": "object",
                "properties": {
                    "type": _string_const(full_type(payload_cls)),
                    "dataschema": _string_const(dataschema(payload_cls)),
                    "source": {
                        "type": "string",
                        "enum": [SOURCE_INTAKE, SOURCE_DISPATCH],
                    },
                    "data": _ref("components", "schemas", payload_cls.__name__),
                },
            },
        ]
    }


def _quality_envelope(
    what: str,
    *,
    source: JsonObject,
    names: tuple[str, ...],
    data: JsonObject,
    id_description: str | None = None,
) -> JsonObject:
    """The CloudEvents envelope of a quality topic message (`names`: its types)."""
    event_id: JsonObject = {"type": "string", "format": "uuid"}
    if id_description is not None:
        event_id["description"] = id_description
    return {
        "type": "object",
        "description": f"CloudEvents 1.0 structured-mode envelope of {what}.",
        "required": [
            "specversion",
            "id",
            "source",
            "type",
            "subject",
            "time",
            "datacontenttype",
            "dataschema",
            "data",
        ],
        "properties": {
            "specversion": _string_const(SPECVERSION),
            "id": event_id,
            "source": source,
            "type": {
                "type": "string",
                "enum": [ALERT_TYPE_PREFIX + name for name in names],
            },
            "subject": {"type": "string", "description": "The alert's scope."},
            "time": {"type": "string", "format": "date-time"},
            "datacontenttype": _string_const(DATA_CONTENT_TYPE),
            "dataschema": {
                "type": "string",
                "pattern": r"^urn:servicetrail:quality\.[a-z_]+:[0-9]+$",
            },
            "data": data,
        },
    }


def _alert_schemas() -> JsonObject:
    data = {
        "type": "object",
        "description": "An indicator breached (or recovered from) its rule's threshold.",
        "additionalProperties": False,
        "required": [
            "alert_id",
            "rule",
            "indicator",
            "statistic",
            "scope",
            "value",
            "threshold",
            "samples",
            "window_seconds",
        ],
        "properties": {
            "alert_id": {"type": "string", "format": "uuid"},
            "rule": {"type": "string", "description": "e.g. slow_response"},
            "indicator": {"type": "string", "description": "e.g. response_time_s"},
            "statistic": {"type": "string", "description": "p90 or value"},
            "scope": {"type": "string", "description": "e.g. region:shanghai-pudong"},
            "value": {
                "type": ["number", "null"],
                "description": "Measured value; null when a cleared scope has no data.",
            },
            "threshold": {"type": "number"},
            "samples": {"type": "integer", "minimum": 0},
            "window_seconds": {"type": "integer", "minimum": 1},
        },
    }
    envelope = _quality_envelope(
        "a quality alert",
        source={
            "type": "string",
            "enum": list(ALERT_SOURCES),
            "description": "Metrics (indicator rules) or dispatch (unassignable).",
        },
        names=ALERT_EVENTS,
        data=_ref("components", "schemas", "QualityAlertData"),
    )
    return {"QualityAlertEnvelope": envelope, "QualityAlertData": data}


def _case_data_name(name: str) -> str:
    return "AlertCaseData_" + name


def _case_schemas() -> JsonObject:
    """The steps of an alert's case (shared.domain.alert_case): the step model's
    fields, plus the alert, its rule and scope, the step's number and its actor."""
    common: JsonObject = {
        "alert_id": {"type": "string", "format": "uuid"},
        "rule": {"type": "string", "description": "The alert's rule."},
        "scope": {"type": "string", "description": "e.g. region:shanghai-pudong"},
        "version": {
            "type": "integer",
            "minimum": 1,
            "description": "The step's number in its alert's case (1, 2, ...).",
        },
        "actor": {"type": "string", "description": "role:id of who took the step."},
    }
    schemas: JsonObject = {}
    for name, model in STEP_TYPES.items():
        step = model.model_json_schema()
        schemas[_case_data_name(name)] = {
            "type": "object",
            "description": (model.__doc__ or "").strip(),
            "additionalProperties": False,
            "required": [*common, *step.get("required", [])],
            "properties": {**common, **step.get("properties", {})},
        }
    schemas["AlertCaseEnvelope"] = _quality_envelope(
        "an alert case step",
        source=_string_const(ALERT_SOURCE),
        names=tuple(STEP_TYPES),
        data={"type": "object"},
        id_description="The stored step's id.",
    )
    return schemas


def _case_payload(name: str) -> JsonObject:
    return {
        "allOf": [
            _ref("components", "schemas", "AlertCaseEnvelope"),
            {
                "type": "object",
                "properties": {
                    "type": _string_const(ALERT_TYPE_PREFIX + name),
                    "dataschema": _string_const(f"urn:servicetrail:quality.{name}:1"),
                    "data": _ref("components", "schemas", _case_data_name(name)),
                },
            },
        ]
    }


def _alert_payload(name: str) -> JsonObject:
    return {
        "allOf": [
            _ref("components", "schemas", "QualityAlertEnvelope"),
            {
                "type": "object",
                "properties": {
                    "type": _string_const(ALERT_TYPE_PREFIX + name),
                    "dataschema": _string_const(f"urn:servicetrail:quality.{name}:1"),
                },
            },
        ]
    }


def _cloudevents_headers() -> JsonObject:
    return {
        "type": "object",
        "required": ["content-type"],
        "properties": {
            "content-type": {
                **_string_const(CLOUDEVENTS_CONTENT_TYPE),
                "description": "CloudEvents Kafka binding, structured content mode.",
            },
            # Only while the relay traces (shared/tracing.py): off, records carry none.
            "traceparent": {
                "type": "string",
                "pattern": "^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
                "description": "W3C trace context of the relay's publish span, sent "
                "when tracing is on (README, Tracing); a consumer's span continues "
                "it. The event's own `traceparent` names the append it follows.",
            },
        },
    }


def _key_binding(description: str, key_format: str | None = None) -> JsonObject:
    key: JsonObject = {"type": "string", "description": description}
    if key_format is not None:
        key["format"] = key_format
    return {"kafka": {"key": key, "bindingVersion": KAFKA_BINDING_VERSION}}


def _messages() -> JsonObject:
    messages: JsonObject = {}
    for name, payload_cls in PAYLOAD_TYPES.items():
        messages[_order_message_id(name)] = {
            "name": full_type(payload_cls),
            "title": f"Order {name.replace('_', ' ')}",
            "summary": SUMMARIES.get(
                name, f"The order event {full_type(payload_cls)}."
            ),
            "contentType": CLOUDEVENTS_CONTENT_TYPE,
            "traits": [_ref("components", "messageTraits", "orderEventRecord")],
            "payload": _order_event_payload(payload_cls),
        }
    for payload_cls in RETIRED:
        messages[_retired_message_id(payload_cls)] = {
            "name": full_type(payload_cls),
            "title": f"Order {payload_cls.TYPE.replace('_', ' ')}, "
            f"version {payload_cls.SCHEMA_MAJOR}",
            "summary": (
                f"{SUMMARIES.get(payload_cls.TYPE, '')} Version "
                f"{payload_cls.SCHEMA_MAJOR}: no longer written, but stored events "
                "and the ledger keep it, so every consumer reads it for ever "
                "(upcast to the newest version on read)."
            ).strip(),
            "contentType": CLOUDEVENTS_CONTENT_TYPE,
            "traits": [_ref("components", "messageTraits", "orderEventRecord")],
            "payload": _order_event_payload(payload_cls),
        }
    for name in ALERT_EVENTS:
        messages[_alert_message_id(name)] = {
            "name": ALERT_TYPE_PREFIX + name,
            "title": f"Quality {name.replace('_', ' ')}",
            "summary": f"The metrics service's {name.replace('_', ' ')} event.",
            "contentType": CLOUDEVENTS_CONTENT_TYPE,
            "headers": _cloudevents_headers(),
            "bindings": _key_binding("The alert's scope, e.g. region:shanghai-pudong."),
            "payload": _alert_payload(name),
        }
    for name in STEP_TYPES:
        messages[_alert_message_id(name)] = {
            "name": ALERT_TYPE_PREFIX + name,
            "title": f"Alert case: {name.removeprefix('alert_').replace('_', ' ')}",
            "summary": (
                "A step of an alert's case (POST /v1/alerts/{id}/...), stored by "
                "metrics and published once with it."
            ),
            "contentType": CLOUDEVENTS_CONTENT_TYPE,
            "headers": _cloudevents_headers(),
            "bindings": _key_binding("The alert's scope, e.g. region:shanghai-pudong."),
            "payload": _case_payload(name),
        }
    messages[_alert_message_id(TECHNICIAN_SCORED)] = {
        "name": ALERT_TYPE_PREFIX + TECHNICIAN_SCORED,
        "title": "Technician scored",
        "summary": (
            "Metrics publishes a technician's 30-day composite score whenever it or "
            "its sample count changed; dispatch ranks technicians by it."
        ),
        "contentType": CLOUDEVENTS_CONTENT_TYPE,
        "headers": _cloudevents_headers(),
        "bindings": _key_binding("technician:<technician_id>"),
        "payload": _ref("components", "schemas", TechnicianScoredEvent.__name__),
    }
    messages["deadLetter"] = {
        "name": "dead-letter",
        "title": "Dead-lettered record",
        "summary": (
            "A record a consumer could not process, or refused because the event "
            "store does not hold it so, unchanged, with the error."
        ),
        "description": (
            "The original key, value and headers, byte for byte, plus the headers "
            "below. The value is usually an order event envelope, but may be any "
            "bytes (that may be why it could not be processed)."
        ),
        "headers": {
            "type": "object",
            "required": sorted(DEAD_LETTER_HEADERS),
            "properties": {
                header: {"type": "string", "description": text}
                for header, text in (
                    DEAD_LETTER_HEADERS | UNTRUSTED_RECORD_HEADERS
                ).items()
            },
        },
        "bindings": _key_binding("The original record's key."),
        "payload": {"description": "The original record value, unchanged."},
    }
    return messages


def _channel_binding(topic: str) -> JsonObject:
    binding: JsonObject = {"topic": topic, "bindingVersion": KAFKA_BINDING_VERSION}
    if topic in DEFAULT_PARTITIONS:
        binding["partitions"] = DEFAULT_PARTITIONS[topic]
    return {"kafka": binding}


def _channel_messages(message_ids: list[str]) -> JsonObject:
    return {mid: _ref("components", "messages", mid) for mid in message_ids}


def _channels(order_ids: list[str], alert_ids: list[str]) -> JsonObject:
    return {
        "orderEvents": {
            "address": ORDER_EVENTS,
            "title": "Order events",
            "description": (
                "Every order event, keyed by order id, so each order's events arrive "
                "in `orderversion` order. Delivery is at least once: deduplicate by "
                "the event `id` (or `subject` + `orderversion`). A deployment may "
                "prefix the topic name (KAFKA_TOPIC_PREFIX)."
            ),
            "messages": _channel_messages(order_ids),
            "bindings": _channel_binding(ORDER_EVENTS),
        },
        "qualityAlerts": {
            "address": QUALITY_ALERTS,
            "title": "Quality alerts",
            "description": (
                "Alerts raised and cleared (metrics: indicator rules; dispatch: "
                "unassignable orders) and the steps of their cases (metrics), "
                "keyed by scope, and metrics' technician scores, keyed by "
                "technician."
            ),
            "messages": _channel_messages(alert_ids),
            "bindings": _channel_binding(QUALITY_ALERTS),
        },
        "deadLetter": {
            "address": DEAD_LETTER,
            "title": "Dead letters",
            "description": "Records a consumer could not process, with the error.",
            "messages": _channel_messages(["deadLetter"]),
            "bindings": _channel_binding(DEAD_LETTER),
        },
    }


def _operation_messages(channel: str, message_ids: list[str]) -> list[JsonObject]:
    return [_ref("channels", channel, "messages", mid) for mid in message_ids]


def _consumer(
    group: str, who: str, order_ids: list[str], *, channel: str = "orderEvents"
) -> JsonObject:
    what = "every order event" if channel == "orderEvents" else "the quality events"
    return {
        "action": "receive",
        "channel": _ref("channels", channel),
        "summary": f"{who} consumes {what} (group {group}).",
        "messages": _operation_messages(channel, order_ids),
        "bindings": {
            "kafka": {
                "groupId": _string_const(group),
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }


def _operations(order_ids: list[str], alert_ids: list[str]) -> JsonObject:
    return {
        "publishOrderEvents": {
            "action": "send",
            "channel": _ref("channels", "orderEvents"),
            "summary": "The outbox relay of intake and dispatch publishes order events.",
            "messages": _operation_messages("orderEvents", order_ids),
        },
        "consumeOrderEventsLedger": _consumer(
            LEDGER_GROUP, "The ledger (append-only audit log)", order_ids
        ),
        "consumeOrderEventsMetrics": _consumer(
            METRICS_GROUP, "Metrics (quality indicators)", order_ids
        ),
        "consumeOrderEventsDispatch": _consumer(
            DISPATCH_GROUP, "Dispatch (auto-assignment)", order_ids
        ),
        "publishQualityAlerts": {
            "action": "send",
            "channel": _ref("channels", "qualityAlerts"),
            "summary": (
                "Metrics publishes alerts, their case steps and technician scores; "
                "dispatch publishes unassignable-order alerts."
            ),
            "messages": _operation_messages("qualityAlerts", alert_ids),
        },
        "consumeQualityDispatch": _consumer(
            DISPATCH_QUALITY_GROUP,
            "Dispatch (technician scores; other types are skipped)",
            alert_ids,
            channel="qualityAlerts",
        ),
        "publishDeadLetters": {
            "action": "send",
            "channel": _ref("channels", "deadLetter"),
            "summary": "A consumer forwards a record it could not process.",
            "messages": _operation_messages("deadLetter", ["deadLetter"]),
        },
    }


def build_asyncapi() -> JsonObject:
    """The AsyncAPI 3.0.0 document of the three topics, as a JSON-ready dict."""
    order_ids = [_order_message_id(name) for name in PAYLOAD_TYPES] + [
        _retired_message_id(payload_cls) for payload_cls in RETIRED
    ]
    alert_ids = [
        _alert_message_id(name)
        for name in (*ALERT_EVENTS, *STEP_TYPES, TECHNICIAN_SCORED)
    ]
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "ServiceTrail events",
            "version": CONTRACT_VERSION,
            "description": (
                "Kafka topics of ServiceTrail. Every record is a CloudEvents 1.0 "
                "event in structured content mode (record value = the JSON envelope, "
                f"header content-type: {CLOUDEVENTS_CONTENT_TYPE}). Generated by "
                "`python -m shared.events.asyncapi`: do not edit by hand."
            ),
        },
        "defaultContentType": CLOUDEVENTS_CONTENT_TYPE,
        "servers": {
            "kafka": {
                "host": "{bootstrap}",
                "protocol": "kafka",
                "description": "The cluster named by KAFKA_BOOTSTRAP_SERVERS.",
                "variables": {
                    "bootstrap": {
                        "default": "kafka:9092",
                        "description": "A bootstrap server, host:port.",
                    }
                },
            }
        },
        "channels": _channels(order_ids, alert_ids),
        "operations": _operations(order_ids, alert_ids),
        "components": {
            "schemas": {**_model_schemas(), **_alert_schemas(), **_case_schemas()},
            "messages": _messages(),
            "messageTraits": {
                "orderEventRecord": {
                    "headers": _cloudevents_headers(),
                    "bindings": _key_binding(
                        "The order id (the CloudEvents subject).", "uuid"
                    ),
                    "correlationId": {
                        "description": "The order the event belongs to.",
                        "location": "$message.payload#/subject",
                    },
                }
            },
        },
    }


def render(document: JsonObject) -> str:
    """The document as the JSON text checked in at deploy/asyncapi.json."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render(build_asyncapi()))
