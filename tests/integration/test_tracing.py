"""One trace from a mobile app's POST through the relay to the ledger and metrics.

The services run in-process on the test's PostgreSQL and broker, each traced on one
SDK provider that keeps its spans in memory (the SDK's InMemorySpanExporter), as
OTEL_TRACES_EXPORTER would send them to a collector.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind

from shared.domain.actors import Role
from shared.events.topics import (
    DISPATCH_GROUP,
    LEDGER_GROUP,
    METRICS_GROUP,
    ORDER_EVENTS,
)
from shared.orders.writer import APPEND_SPAN
from shared.settings import CommonSettings
from tests.api.conftest import bearer
from tests.http_bodies import new_order_body
from tests.integration.services_io import traced

pytestmark = pytest.mark.integration

CREATED: Final = "servicetrail.order.created"
ASSIGNED: Final = "servicetrail.order.assigned"


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """A provider whose finished spans the test reads back."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def of_trace(exporter: InMemorySpanExporter, trace_id: int) -> list[ReadableSpan]:
    return [
        s
        for s in exporter.get_finished_spans()
        if s.context is not None and s.context.trace_id == trace_id
    ]


async def wait_for(
    exporter: InMemorySpanExporter,
    trace_id: int,
    done: Callable[[Sequence[ReadableSpan]], bool],
) -> list[ReadableSpan]:
    async with asyncio.timeout(30):
        while not done(found := of_trace(exporter, trace_id)):
            await asyncio.sleep(0.05)
    return found


def only(spans: Sequence[ReadableSpan], **attributes: Any) -> ReadableSpan:
    """The one span whose attributes include these (names with `_` for `.`)."""
    wanted = {k.replace("__", "."): v for k, v in attributes.items()}
    matching = [
        s
        for s in spans
        if all((s.attributes or {}).get(k) == v for k, v in wanted.items())
    ]
    assert len(matching) == 1, (wanted, [(s.name, s.attributes) for s in spans])
    return matching[0]


def parent_of(span: ReadableSpan) -> int:
    assert span.parent is not None, f"{span.name} has no parent"
    return span.parent.span_id


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def applied_by(group: str, event_type: str) -> Callable[[Sequence[ReadableSpan]], bool]:
    def done(found: Sequence[ReadableSpan]) -> bool:
        return any(
            (s.attributes or {}).get("messaging.consumer.group.name") == group
            and (s.attributes or {}).get("cloudevents.event_type") == event_type
            for s in found
        )

    return done


async def test_a_post_is_one_trace_through_the_append_the_relay_the_ledger_and_metrics(
    settings: CommonSettings,
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    customer = bearer(settings)(Role.CUSTOMER, "alice")
    # The mobile app's own trace: its span is the request's remote parent.
    trace_id, app_span = secrets.token_hex(16), secrets.token_hex(8)
    async with traced(settings, provider, "intake", "ledger", "metrics") as clients:
        intake = clients["intake"]
        created = await intake.post(
            "/v1/orders",
            json=new_order_body(),
            headers={**customer, "traceparent": f"00-{trace_id}-{app_span}-01"},
        )
        assert created.status_code == 201, created.text
        found = await wait_for(
            exporter,
            int(trace_id, 16),
            lambda f: (
                applied_by(LEDGER_GROUP, CREATED)(f)
                and applied_by(METRICS_GROUP, CREATED)(f)
            ),
        )
    order_id = created.json()["order_id"]
    event = created.json()["event"]

    request = only(found, **{"http.route": "/v1/orders"})
    assert request.kind is SpanKind.SERVER
    assert request.name == "POST /v1/orders"
    assert request.parent is not None
    assert request.parent.is_remote
    assert parent_of(request) == int(app_span, 16)
    assert (request.attributes or {})["http.response.status_code"] == 201

    append = only(
        found,
        **{"servicetrail.order_id": order_id, "cloudevents.event_type": CREATED},
        servicetrail__duplicate=False,
    )
    assert append.name == APPEND_SPAN
    assert parent_of(append) == span_id(request)
    assert (append.attributes or {})["cloudevents.event_id"] == event["id"]
    assert (append.attributes or {})["servicetrail.order_version"] == 1
    # The stored event names the append: whoever reads it continues this trace.
    assert event["traceparent"] == f"00-{trace_id}-{span_id(append):016x}-01"

    topic = settings.kafka_topic_prefix + ORDER_EVENTS
    send = only(found, **{"messaging.operation.type": "send"})
    assert send.kind is SpanKind.PRODUCER
    assert send.name == f"send {topic}"
    assert parent_of(send) == span_id(append)
    send_attributes = send.attributes or {}
    assert send_attributes["messaging.destination.name"] == topic
    assert send_attributes["messaging.kafka.message.key"] == order_id
    assert send_attributes["cloudevents.event_id"] == event["id"]
    assert isinstance(send_attributes["messaging.kafka.offset"], int)

    for group in (LEDGER_GROUP, METRICS_GROUP):
        apply = only(found, **{"messaging.consumer.group.name": group})
        assert apply.kind is SpanKind.CONSUMER
        assert apply.name == f"process {topic}"
        # The record's traceparent header named the publish span.
        assert parent_of(apply) == span_id(send)
        attributes = apply.attributes or {}
        assert attributes["cloudevents.event_id"] == event["id"]
        assert attributes["cloudevents.event_type"] == CREATED
        assert attributes["servicetrail.order_id"] == order_id
        for same in (
            "messaging.destination.name",
            "messaging.destination.partition.id",
            "messaging.kafka.offset",
        ):
            assert attributes[same] == send_attributes[same], same

    # One connected trace: every span's parent is in it, but the app's own span.
    ids = {span_id(s) for s in found}
    assert {parent_of(s) for s in found} - ids == {int(app_span, 16)}


async def test_an_auto_assignment_continues_the_trace_of_the_order_it_answers(
    settings: CommonSettings,
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    auth = bearer(settings)
    async with traced(settings, provider, "intake", "dispatch", "ledger") as clients:
        intake, dispatch = clients["intake"], clients["dispatch"]
        registered = await dispatch.post(
            "/v1/technicians",
            headers=auth(Role.DISPATCHER, "disp-1"),
            json={
                "technician_id": "tech-zhang",
                "name": "张师傅",
                "skills": ["air_conditioner"],
                "regions": ["shanghai-pudong"],
                "certifications": [],
            },
        )
        assert registered.status_code == 201, registered.text
        created = await intake.post(
            "/v1/orders",
            json=new_order_body(),
            headers=auth(Role.CUSTOMER, "alice"),
        )
        assert created.status_code == 201, created.text
        trace_id = int(created.json()["event"]["traceparent"].split("-")[1], 16)
        found = await wait_for(exporter, trace_id, applied_by(LEDGER_GROUP, ASSIGNED))

    dispatch_apply = only(
        found,
        **{
            "messaging.consumer.group.name": DISPATCH_GROUP,
            "cloudevents.event_type": CREATED,
        },
    )
    assignment = only(
        found, **{"cloudevents.event_type": ASSIGNED}, servicetrail__duplicate=False
    )
    assert assignment.name == APPEND_SPAN
    assert parent_of(assignment) == span_id(dispatch_apply)
    ledger_apply = only(
        found,
        **{
            "messaging.consumer.group.name": LEDGER_GROUP,
            "cloudevents.event_type": ASSIGNED,
        },
    )
    publish = only(
        found,
        **{"messaging.operation.type": "send", "cloudevents.event_type": ASSIGNED},
    )
    assert parent_of(publish) == span_id(assignment)
    assert parent_of(ledger_apply) == span_id(publish)


async def test_a_malformed_app_context_starts_a_new_trace_and_an_unsampled_one_is_kept(
    settings: CommonSettings, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    exporter = spans[1]
    customer = bearer(settings)(Role.CUSTOMER, "alice")
    auditor = bearer(settings)(Role.AUDITOR, "audit-1")
    unsampled_trace = secrets.token_hex(16)
    async with traced(settings, spans[0], "intake", "ledger") as clients:
        intake, ledger = clients["intake"], clients["ledger"]
        malformed = await intake.post(
            "/v1/orders",
            json=new_order_body(),
            headers={**customer, "traceparent": "00-not-a-trace-01"},
        )
        assert malformed.status_code == 201, malformed.text
        unsampled = await intake.post(
            "/v1/orders",
            json=new_order_body(),
            headers={
                **customer,
                "traceparent": f"00-{unsampled_trace}-{secrets.token_hex(8)}-00",
            },
        )
        assert unsampled.status_code == 201, unsampled.text
        new_trace = int(malformed.json()["event"]["traceparent"].split("-")[1], 16)
        await wait_for(exporter, new_trace, applied_by(LEDGER_GROUP, CREATED))
        # The unsampled order reached the ledger too, traced by nobody.
        order_id = unsampled.json()["order_id"]
        async with asyncio.timeout(30):
            while (
                not (
                    await ledger.get(f"/v1/orders/{order_id}/history", headers=auditor)
                )
                .json()
                .get("entries")
            ):
                await asyncio.sleep(0.05)

    request = only(of_trace(exporter, new_trace), **{"http.route": "/v1/orders"})
    assert request.parent is None  # a root: the malformed context was not followed
    stored = unsampled.json()["event"]["traceparent"]
    # The app's decision not to sample holds along the pipeline: its trace id is
    # stored (flags 00) for whoever samples later, and no span of it is exported.
    assert stored.startswith(f"00-{unsampled_trace}-")
    assert stored.endswith("-00")
    assert of_trace(exporter, int(unsampled_trace, 16)) == []
