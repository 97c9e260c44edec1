"""The dispatch application: technician-side writes, auto-assignment, outbox relay."""

from __future__ import annotations

from fastapi import FastAPI

from services.dispatch.api import router
from services.dispatch.consumer import AutoAssigner
from services.dispatch.schemas import AssignRequest, BatchRequest, TechnicianIn
from services.dispatch.settings import DispatchSettings
from services.dispatch.store import tracking
from shared.db.base import EVENT_STORE_SCHEMA
from shared.events.topics import DISPATCH_GROUP, ORDER_EVENTS, SOURCE_DISPATCH
from shared.http.application import build_app
from shared.orders.posts import EventPost
from shared.service import ServiceResources, WriterState, service_lifespan


def create_app(settings: DispatchSettings | None = None) -> FastAPI:
    settings = settings or DispatchSettings()

    async def open_resources(service: ServiceResources) -> WriterState:
        writer = await service.open_order_writer(source=SOURCE_DISPATCH)
        # Intake and dispatch both run a relay; its advisory lock lets one publish.
        relay = service.add_relay(
            schema=EVENT_STORE_SCHEMA, run=settings.run_outbox_relay
        )
        if settings.run_assignment_consumer:
            service.add_consumer(
                tracking=tracking,
                group_id=DISPATCH_GROUP,
                topics=[ORDER_EVENTS],
                handler=AutoAssigner(writer),
                # A forged `created` or `declined` on the topic must not make
                # dispatch assign (and write) anything: only stored events count.
                check_against_store=True,
                run=True,
                readiness="consumer",
            )
        return WriterState(**service.state(), writer=writer, relay=relay)

    return build_app(
        service="dispatch",
        settings=settings,
        lifespan=service_lifespan(settings, open_resources),
        routers=[router],
        body_models=[TechnicianIn, AssignRequest, EventPost, BatchRequest],
    )
