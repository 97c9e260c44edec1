"""The metrics application: consumes order events into live quality indicators."""

from __future__ import annotations

from fastapi import FastAPI

from services.metrics.api import router
from services.metrics.consumer import IndicatorProjector
from services.metrics.settings import MetricsSettings
from services.metrics.store import tracking
from shared.events.topics import METRICS_GROUP, ORDER_EVENTS
from shared.http.application import build_app
from shared.service import consumer_service_lifespan


def create_app(settings: MetricsSettings | None = None) -> FastAPI:
    settings = settings or MetricsSettings()
    lifespan = consumer_service_lifespan(
        settings,
        tracking=tracking,
        group_id=METRICS_GROUP,
        topics=[ORDER_EVENTS],
        handler=IndicatorProjector(),
        run_consumer=settings.run_consumer,
    )
    return build_app(
        service="metrics", settings=settings, lifespan=lifespan, routers=[router]
    )
