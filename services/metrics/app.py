"""The metrics application: live quality indicators, scores, alerts and the stream."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from fastapi import FastAPI
from opentelemetry.trace import TracerProvider
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.metrics import alerts, score_feed, stability
from services.metrics.api import dashboard_router, router
from services.metrics.consumer import IndicatorProjector
from services.metrics.live import LiveIndicators
from services.metrics.policy import IndicatorPolicy, policy_from
from services.metrics.rebuild import align_deadlines
from services.metrics.settings import MetricsSettings
from services.metrics.store import tracking
from shared.db.base import METRICS_SCHEMA
from shared.events.topics import METRICS_GROUP, ORDER_EVENTS
from shared.http.application import build_app
from shared.service import (
    ConsumerRunner,
    ServiceResources,
    ServiceState,
    service_lifespan,
)

logger = logging.getLogger(__name__)


async def evaluate_alerts_forever(
    engine: AsyncEngine, settings: MetricsSettings, policy: IndicatorPolicy
) -> None:
    """Windows end at "now", so alerts are re-evaluated on a clock, not only on events.

    The control charts judge whole weeks: every `control_chart_interval_seconds`.
    """
    charted_at: datetime | None = None
    chart_interval = timedelta(seconds=settings.control_chart_interval_seconds)
    while True:
        try:
            now = datetime.now(UTC)
            async with engine.begin() as conn:
                await alerts.evaluate(
                    conn,
                    now,
                    rules=policy.alert_rules,
                    catalog=policy.catalog,
                    sla=policy.sla,
                    peak_hours=policy.peak_hours,
                )
            # Dispatch ranks technicians by these, read from the quality topic.
            await score_feed.publish_changed_scores(engine, policy, now)
            # Last: a failing chart must not hold back the alerts and scores above.
            if charted_at is None or now - charted_at >= chart_interval:
                async with engine.begin() as conn:
                    await stability.evaluate_control_charts(
                        conn, now, catalog=policy.catalog, zone=settings.report_zone()
                    )
                charted_at = now
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("alert evaluation failed; retrying")
        await asyncio.sleep(settings.alert_interval_seconds)


class DeadlineAlignment:
    """Deadlines stored under other targets or calendars, recomputed once at start.

    Tried at start, so that a ready service answers under its own policy; when the
    database is not there yet, retried in a task instead, so the service still
    starts and `/readyz` names the database (and this, until it is done). The
    consumer waits on the offset rows' locks while the deadlines are recomputed.
    """

    def __init__(self, engine: AsyncEngine, policy: IndicatorPolicy) -> None:
        self._engine = engine
        self._policy = policy
        self.done = False

    async def try_once(self) -> bool:
        try:
            async with self._engine.begin() as conn:
                await align_deadlines(conn, self._policy.sla)
        except (OSError, SQLAlchemyError):
            logger.exception("aligning SLA deadlines failed; retrying")
            return False
        self.done = True
        return True

    async def until_done(self) -> None:
        while True:  # the database offers no event to await
            if await self.try_once():
                return
            await asyncio.sleep(1.0)

    async def check(self) -> None:
        if not self.done:
            raise ConnectionError("SLA deadlines not yet recomputed under the policy")


class MetricsState(ServiceState):
    """The metrics service's lifespan state: consumer, live indicators, policy."""

    consumer: ConsumerRunner
    live: LiveIndicators
    # Extra Prometheus text for `/metrics` (`shared.http.health`), when exposed.
    more_metrics: Callable[[], bytes] | None
    policy: IndicatorPolicy


def create_app(
    settings: MetricsSettings | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
) -> FastAPI:
    """The metrics app; traced on `tracer_provider` when given, else as OTEL_* say."""
    settings = settings or MetricsSettings()

    async def open_resources(service: ServiceResources) -> MetricsState:
        policy = policy_from(settings)
        alignment = DeadlineAlignment(service.engine, policy)
        if not await alignment.try_once():
            service.add_task(alignment.until_done)
        service.add_readiness("sla_deadlines", alignment.check)
        live = LiveIndicators(
            service.engine,
            policy=policy,
            streams_per_caller=settings.max_streams_per_caller,
        )
        service.add_task(live.run)
        consumer = service.add_consumer(
            tracking=tracking,
            group_id=METRICS_GROUP,
            topics=[ORDER_EVENTS],
            handler=IndicatorProjector(on_applied=live.notify),
            # A forged `completed` or `rated` produced to the topic must not skew the
            # indicators: only records the event store holds as they are are applied.
            # (`servicetrail metrics rebuild` reads the ledger, which checked them.)
            check_against_store=True,
            run=settings.run_consumer,
        )
        service.add_relay(
            schema=METRICS_SCHEMA, run=settings.run_consumer, readiness="alerts"
        )
        if settings.run_consumer:
            service.add_task(
                functools.partial(
                    evaluate_alerts_forever, service.engine, settings, policy
                )
            )
        return MetricsState(
            **service.state(),
            consumer=consumer,
            live=live,
            more_metrics=(
                live.prometheus if settings.metrics_expose_indicators else None
            ),
            policy=policy,
        )

    return build_app(
        service="metrics",
        settings=settings,
        lifespan=service_lifespan(settings, open_resources),
        tracer_provider=tracer_provider,
        routers=[router, dashboard_router],
    )
