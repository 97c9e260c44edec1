"""The dispatch application: technician-side writes, auto-assignment and its expiry
sweep, quality scores, outbox relays."""

from __future__ import annotations

import asyncio
import functools
import logging
from datetime import UTC, datetime

from fastapi import FastAPI
from opentelemetry.trace import TracerProvider
from sqlalchemy.ext.asyncio import AsyncEngine

from services.dispatch.api import router
from services.dispatch.commands import sweep_assignments
from services.dispatch.consumer import AutoAssigner, QualityScores, parse_quality_record
from services.dispatch.domain import AssignmentPolicy
from services.dispatch.schemas import AssignRequest, BatchRequest, TechnicianIn
from services.dispatch.settings import DispatchSettings
from services.dispatch.store import quality_tracking, tracking
from shared.db.base import DISPATCH_SCHEMA, EVENT_STORE_SCHEMA
from shared.events.topics import (
    DISPATCH_GROUP,
    DISPATCH_QUALITY_GROUP,
    ORDER_EVENTS,
    QUALITY_ALERTS,
    SOURCE_DISPATCH,
)
from shared.http.application import build_app
from shared.orders.posts import EventPost
from shared.orders.writer import OrderWriter
from shared.service import ServiceResources, WriterState, service_lifespan

logger = logging.getLogger(__name__)


class DispatchState(WriterState):
    """Dispatch's lifespan state: the writer's, and the assignment engine's limits."""

    policy: AssignmentPolicy


async def sweep_assignments_forever(
    writer: OrderWriter,
    engine: AsyncEngine,
    policy: AssignmentPolicy,
    interval_seconds: float,
) -> None:
    """Expiry is a matter of the clock, not of events: look on a timer.

    Every dispatch instance may sweep; the expiry's deterministic id and the
    lifecycle's guard make a second sweep of the same assignment a no-op.
    """
    while True:
        try:
            outcome = await sweep_assignments(
                writer, engine, now=datetime.now(UTC), policy=policy
            )
            if outcome.expired or outcome.assigned:
                logger.info(
                    "sweep: %d assignments expired, %d waiting orders assigned",
                    outcome.expired,
                    outcome.assigned,
                )
        except asyncio.CancelledError:
            raise
        except Exception:
            # A database outage must not end the task; the next sweep catches up.
            logger.exception("assignment sweep failed; retrying")
        await asyncio.sleep(interval_seconds)


def create_app(
    settings: DispatchSettings | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
) -> FastAPI:
    """The dispatch app; traced on `tracer_provider` when given, else as OTEL_* say."""
    settings = settings or DispatchSettings()
    policy = settings.assignment_policy()

    async def open_resources(service: ServiceResources) -> DispatchState:
        writer = await service.open_order_writer(source=SOURCE_DISPATCH)
        # Intake and dispatch both run a relay; its advisory lock lets one publish.
        relay = service.add_relay(
            schema=EVENT_STORE_SCHEMA, run=settings.run_outbox_relay
        )
        # Dispatch's unassignable alerts, on the quality topic.
        service.add_relay(
            schema=DISPATCH_SCHEMA, run=settings.run_outbox_relay, readiness="alerts"
        )
        if settings.run_assignment_consumer:
            service.add_consumer(
                tracking=tracking,
                group_id=DISPATCH_GROUP,
                topics=[ORDER_EVENTS],
                handler=AutoAssigner(writer, policy),
                # A forged `created` or `declined` on the topic must not make
                # dispatch assign (and write) anything: only stored events count.
                check_against_store=True,
                run=True,
                readiness="consumer",
            )
            service.add_consumer(
                tracking=quality_tracking,
                group_id=DISPATCH_QUALITY_GROUP,
                topics=[QUALITY_ALERTS],
                handler=QualityScores(),
                # Not order events: each score record is validated by its parser.
                check_against_store=False,
                parser=parse_quality_record,
                run=True,
                readiness="quality-consumer",
            )
            service.add_task(
                functools.partial(
                    sweep_assignments_forever,
                    writer,
                    service.engine,
                    policy,
                    settings.assignment_sweep_interval_seconds,
                )
            )
        return DispatchState(
            **service.state(), writer=writer, relay=relay, policy=policy
        )

    return build_app(
        service="dispatch",
        settings=settings,
        lifespan=service_lifespan(settings, open_resources),
        tracer_provider=tracer_provider,
        routers=[router],
        body_models=[TechnicianIn, AssignRequest, EventPost, BatchRequest],
    )
