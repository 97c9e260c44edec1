"""The four services running in-process on the test's database and topics, each
traced on a given OpenTelemetry provider (or as the OTEL_* variables say)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
from fastapi import FastAPI
from opentelemetry.trace import TracerProvider

from services.dispatch.app import create_app as create_dispatch
from services.dispatch.settings import DispatchSettings
from services.intake.app import create_app as create_intake
from services.intake.settings import IntakeSettings
from services.ledger.app import create_app as create_ledger
from services.ledger.settings import LedgerSettings
from services.metrics.app import create_app as create_metrics
from shared.settings import CommonSettings
from tests.api.conftest import running
from tests.fixtures.stack import service_settings
from tests.integration.metrics_io import metrics_settings


def traced_app(
    name: str, settings: CommonSettings, provider: TracerProvider | None
) -> FastAPI:
    match name:
        case "intake":
            return create_intake(
                service_settings(settings, IntakeSettings), tracer_provider=provider
            )
        case "dispatch":
            return create_dispatch(
                service_settings(settings, DispatchSettings), tracer_provider=provider
            )
        case "ledger":
            return create_ledger(
                service_settings(settings, LedgerSettings), tracer_provider=provider
            )
        case _:
            return create_metrics(
                # The dashboard's quality row reads the headline indicators.
                metrics_settings(settings, metrics_expose_indicators=True),
                tracer_provider=provider,
            )


@asynccontextmanager
async def traced(
    settings: CommonSettings, provider: TracerProvider | None, *names: str
) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    """The named services running in-process, each traced on `provider` (None:
    as the OTEL_* variables say)."""
    async with AsyncExitStack() as stack:
        yield {
            name: await stack.enter_async_context(
                running(traced_app(name, settings, provider))
            )
            for name in names
        }
