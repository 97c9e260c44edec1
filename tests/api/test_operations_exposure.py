"""What the unauthenticated operations endpoints give away and what they cost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

from fastapi import FastAPI

from services.metrics.app import create_app as create_metrics
from services.metrics.settings import MetricsSettings
from shared.http.application import build_app
from shared.settings import CommonSettings
from tests.api.conftest import running
from tests.fixtures.stack import service_settings

INDICATOR_SERIES: Final = "servicetrail_indicator{"
PROBES: Final = 20


def metrics_app(settings: CommonSettings, **overrides: object) -> FastAPI:
    return create_metrics(
        service_settings(settings, MetricsSettings, run_consumer=False, **overrides)
    )


async def test_metrics_show_business_indicators_only_when_configured(
    settings: CommonSettings,
) -> None:
    async with (
        running(metrics_app(settings)) as default,
        running(metrics_app(settings, metrics_expose_indicators=True)) as exposing,
    ):
        async with asyncio.timeout(15):
            while INDICATOR_SERIES not in (await exposing.get("/metrics")).text:
                await asyncio.sleep(0.1)
        # The default app started first, so it has computed its snapshot too.
        hidden = await default.get("/metrics")
    assert hidden.status_code == 200
    assert "servicetrail_indicator" not in hidden.text
    assert "servicetrail_http_requests_total" in hidden.text


def counting_app(settings: CommonSettings, checks: list[float]) -> FastAPI:
    """An app whose one readiness check records each time it runs."""

    async def check() -> None:
        checks.append(asyncio.get_running_loop().time())
        await asyncio.sleep(0.01)  # long enough for concurrent probes to overlap

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        yield {"settings": settings, "readiness": {"database": check}}

    return build_app(service="probe", settings=settings, lifespan=lifespan, routers=[])


async def test_a_flood_of_readiness_probes_checks_once_a_second(
    settings: CommonSettings,
) -> None:
    checks: list[float] = []
    async with running(counting_app(settings, checks)) as client:
        flood = await asyncio.gather(*(client.get("/readyz") for _ in range(PROBES)))
        again = [await client.get("/readyz") for _ in range(PROBES)]
        assert len(checks) == 1
        await asyncio.sleep(1.05)
        later = await client.get("/readyz")
    assert len(checks) == 2
    for response in [*flood, *again, later]:
        assert response.status_code == 200
        assert response.json()["checks"] == {"database": "ok"}
