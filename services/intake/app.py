"""The intake application: customer-side writes and the outbox relay."""

from __future__ import annotations

from fastapi import FastAPI

from services.intake.api import router
from services.intake.schemas import CreateOrderRequest
from services.intake.settings import IntakeSettings
from shared.events.topics import SOURCE_INTAKE
from shared.http.application import build_app
from shared.orders.posts import EventPost
from shared.service import writer_service_lifespan


def create_app(settings: IntakeSettings | None = None) -> FastAPI:
    settings = settings or IntakeSettings()
    return build_app(
        service="intake",
        settings=settings,
        lifespan=writer_service_lifespan(
            settings, source=SOURCE_INTAKE, run_outbox_relay=settings.run_outbox_relay
        ),
        routers=[router],
        body_models=[CreateOrderRequest, EventPost],
    )
