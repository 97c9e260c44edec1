"""The metrics application: live quality indicators, scores, alerts and the stream."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from services.metrics import alerts
from services.metrics.api import dashboard_router, router
from services.metrics.consumer import IndicatorProjector
from services.metrics.live import LiveIndicators
from services.metrics.policy import IndicatorPolicy, policy_from
from services.metrics.settings import MetricsSettings
from services.metrics.store import tracking
from shared.db.base import METRICS_SCHEMA
from shared.db.engine import create_engine
from shared.events.topics import METRICS_GROUP, ORDER_EVENTS
from shared.http.application import build_app
from shared.http.backlog import BacklogMonitor
from shared.http.health import database_check
from shared.outbox.relay import OutboxRelay
from shared.service import (
    ConsumerRunner,
    background,
    outbox_backlog,
    producer_factory,
    relay_broker_check,
)
from shared.settings import OutboxSettings

logger = logging.getLogger(__name__)


async def evaluate_alerts_forever(
    engine: AsyncEngine, settings: MetricsSettings, policy: IndicatorPolicy
) -> None:
    """Windows end at "now", so alerts are re-evaluated on a clock, not only on events."""
    while True:
        try:
            async with engine.begin() as conn:
                await alerts.evaluate(
                    conn,
                    datetime.now(UTC),
                    rules=policy.alert_rules,
                    catalog=policy.catalog,
                )
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("alert evaluation failed; retrying")
        await asyncio.sleep(settings.alert_interval_seconds)


def create_app(settings: MetricsSettings | None = None) -> FastAPI:
    settings = settings or MetricsSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        engine = create_engine(settings)
        policy = policy_from(settings)
        live = LiveIndicators(
            engine,
            policy=policy,
            streams_per_caller=settings.max_streams_per_caller,
        )
        runner = ConsumerRunner(
            settings=settings,
            engine=engine,
            tracking=tracking,
            group_id=METRICS_GROUP,
            topics=[ORDER_EVENTS],
            handler=IndicatorProjector(on_applied=live.notify),
            # A forged `completed` or `rated` produced to the topic must not skew the
            # indicators: only records the event store holds as they are are applied.
            # (`servicetrail metrics rebuild` reads the ledger, which checked them.)
            check_against_store=True,
        )
        outbox = OutboxSettings()
        relay = OutboxRelay(
            engine,
            producer_factory(settings),
            batch_size=outbox.batch_size,
            poll_interval=outbox.poll_interval,
            topic_prefix=settings.kafka_topic_prefix,
            schema=METRICS_SCHEMA,
        )
        tasks = [live.run()]
        if settings.run_consumer:
            tasks += [
                runner.run(),
                relay.run(),
                evaluate_alerts_forever(engine, settings, policy),
            ]
        async with background(*tasks):
            yield {
                "settings": settings,
                "engine": engine,
                "consumer": runner,
                "live": live,
                "more_metrics": (
                    live.prometheus if settings.metrics_expose_indicators else None
                ),
                "policy": policy,
                "readiness": {
                    "database": database_check(engine),
                    "broker": runner.broker_check(),
                    "alerts": relay_broker_check(relay),
                },
                "backlog": BacklogMonitor(
                    outboxes=[outbox_backlog(engine, METRICS_SCHEMA)],
                    consumers=[runner.lag],
                ),
            }
        await engine.dispose()

    return build_app(
        service="metrics",
        settings=settings,
        lifespan=lifespan,
        routers=[router, dashboard_router],
    )
