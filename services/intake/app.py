"""The intake application: customer-side writes and the outbox relay."""

from __future__ import annotations

from fastapi import FastAPI

from services.intake.api import router
from services.intake.schemas import CreateOrderRequest
from services.intake.settings import IntakeSettings
from shared.db.base import EVENT_STORE_SCHEMA
from shared.events.topics import SOURCE_INTAKE
from shared.http.application import build_app
from shared.orders.posts import EventPost
from shared.service import ServiceResources, WriterState, service_lifespan


def create_app(settings: IntakeSettings | None = None) -> FastAPI:
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
        routers=[router],
        body_models=[CreateOrderRequest, EventPost],
    )
