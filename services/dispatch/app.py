"""The dispatch application: technician-side writes, auto-assignment, outbox relay."""

from __future__ import annotations

from fastapi import FastAPI

from services.dispatch.api import router
from services.dispatch.consumer import AutoAssigner
from services.dispatch.schemas import AssignRequest, BatchRequest, TechnicianIn
from services.dispatch.settings import DispatchSettings
from services.dispatch.store import tracking
from shared.events.topics import DISPATCH_GROUP, ORDER_EVENTS, SOURCE_DISPATCH
from shared.http.application import build_app
from shared.orders.posts import EventPost
from shared.service import ConsumerSpec, writer_service_lifespan


def create_app(settings: DispatchSettings | None = None) -> FastAPI:
    settings = settings or DispatchSettings()
    consumer = (
        ConsumerSpec(
            tracking=tracking,
            group_id=DISPATCH_GROUP,
            topics=[ORDER_EVENTS],
            handler=AutoAssigner,
            # A forged `created` or `declined` on the topic must not make dispatch
            # assign (and write) anything: only stored events are acted on.
            check_against_store=True,
        )
        if settings.run_assignment_consumer
        else None
    )
    return build_app(
        service="dispatch",
        settings=settings,
        lifespan=writer_service_lifespan(
            settings,
            source=SOURCE_DISPATCH,
            run_outbox_relay=settings.run_outbox_relay,
            consumer=consumer,
        ),
        routers=[router],
        body_models=[TechnicianIn, AssignRequest, EventPost, BatchRequest],
    )
