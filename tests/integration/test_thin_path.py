"""One order travels intake -> event store + outbox -> Kafka -> ledger and metrics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from cloudevents.core.bindings.kafka import KafkaMessage, from_structured_event

from services.intake.app import create_app as create_intake
from services.intake.settings import IntakeSettings
from services.ledger.app import create_app as create_ledger
from services.ledger.settings import LedgerSettings
from services.metrics.app import create_app as create_metrics
from services.metrics.settings import MetricsSettings
from shared.domain.actors import Role
from shared.events.topics import ORDER_EVENTS
from shared.settings import CommonSettings
from tests.api.conftest import bearer, running
from tests.fixtures.stack import service_settings
from tests.http_bodies import new_order_body

pytestmark = pytest.mark.integration


async def eventually(
    probe: Callable[[], Awaitable[Any]], *, timeout: float = 15.0
) -> Any:
    """Poll `probe` until it returns a truthy value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def test_an_order_reaches_kafka_the_ledger_and_metrics(
    settings: CommonSettings,
) -> None:
    auth = bearer(settings)
    async with (
        running(create_intake(service_settings(settings, IntakeSettings))) as intake,
        running(create_ledger(service_settings(settings, LedgerSettings))) as ledger,
        running(create_metrics(service_settings(settings, MetricsSettings))) as metrics,
    ):
        body = new_order_body()
        created = await intake.post(
            "/v1/orders", json=body, headers=auth(Role.CUSTOMER, "customer-1")
        )
        assert created.status_code == 201, created.text
        order_id = created.json()["order_id"]
        event = created.json()["event"]
        assert event["subject"] == order_id
        assert event["type"] == "servicetrail.order.created"
        assert event["orderversion"] == 1
        assert event["actor"] == "customer:customer-1"
        # Personal data goes to the vault; the event carries only the reference.
        assert "王小明" not in json.dumps(event, ensure_ascii=False)
        serialized = json.dumps(event, ensure_ascii=False)
        assert body["contact"]["phone"] not in serialized
        assert body["contact"]["address"] not in serialized

        consumer = AIOKafkaConsumer(
            settings.kafka_topic_prefix + ORDER_EVENTS,
            bootstrap_servers=settings.kafka_bootstrap_servers,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            record = await asyncio.wait_for(consumer.getone(), 15)
        finally:
            await consumer.stop()
        assert record.key == order_id.encode()
        assert dict(record.headers)["content-type"] == b"application/cloudevents+json"
        parsed = from_structured_event(
            KafkaMessage(
                headers=dict(record.headers), key=record.key, value=record.value
            )
        )
        assert parsed.get_id() == body["id"]
        assert parsed.get_type() == "servicetrail.order.created"
        assert parsed.get_subject() == order_id
        data = parsed.get_data()
        assert isinstance(data, dict)
        assert data["description"] == body["description"]

        async def history() -> Any:
            response = await ledger.get(
                f"/v1/orders/{order_id}/history", headers=auth(Role.AUDITOR, "a-1")
            )
            return response.json() if response.status_code == 200 else None

        entries = (await eventually(history))["entries"]
        assert [e["event"]["id"] for e in entries] == [body["id"]]
        assert entries[0]["event"] == event

        async def counted() -> Any:
            response = await metrics.get(
                "/v1/indicators?window=all", headers=auth(Role.DISPATCHER, "d-1")
            )
            assert response.status_code == 200, response.text
            payload = response.json()
            return (
                payload
                if payload["indicators"]["orders_created"]["value"] == 1
                else None
            )

        indicators = await eventually(counted)
        assert indicators["as_of"]["last_recorded_at"] is not None
        assert indicators["as_of"]["positions"]
