"""The dispatch application: technician-side writes and the outbox relay."""

from __future__ import annotations

from fastapi import FastAPI

from services.dispatch.settings import DispatchSettings
from shared.events.topics import SOURCE_DISPATCH
from shared.http.application import build_app
from shared.service import writer_service_lifespan


def create_app(settings: DispatchSettings | None = None) -> FastAPI:
    settings = settings or DispatchSettings()
    return build_app(
        service="dispatch",
        settings=settings,
        lifespan=writer_service_lifespan(
            settings, source=SOURCE_DISPATCH, run_outbox_relay=settings.run_outbox_relay
        ),
        routers=[],
    )
