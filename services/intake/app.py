"""The intake application: customer-side writes and the outbox relay."""

from __future__ import annotations

from fastapi import FastAPI
from opentelemetry.trace import TracerProvider

from services.intake.api import router
from services.intake.schemas import CreateOrderRequest
from services.intake.settings import IntakeSettings
from shared.db.base import EVENT_STORE_SCHEMA
from shared.events.topics import SOURCE_INTAKE
from shared.http.application import build_app
from shared.orders.posts import EventPost
from shared.service import ServiceResources, WriterState, service_lifespan


def create_app(
    settings: IntakeSettings | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
) -> FastAPI:
    """The intake app; traced on `tracer_provider` when given, else as OTEL_* say."""
    settings = settings or IntakeSettings()

    async def open_resources(service: ServiceResources) -> WriterState:
        writer = await service.open_order_writer(source=SOURCE_INTAKE)
        # Intake and dispatch both run a relay; its advisory lock lets one publish.
        relay = service.add_relay(
            schema=EVENT_STORE_SCHEMA, run=settings.run_outbox_relay
        )
        return WriterState(**service.state(), writer=writer, relay=relay)

    return build_app(
        service="intake",
        settings=settings,
        lifespan=service_lifespan(settings, open_resources),
        tracer_provider=tracer_provider,
        routers=[router],
        body_models=[CreateOrderRequest, EventPost],
    )
