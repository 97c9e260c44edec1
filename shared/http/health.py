"""`/healthz`, `/readyz` and `/metrics`, the same on every service."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Final

from aiokafka import AIOKafkaProducer
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.http.backlog import (
    Backlog,
    BacklogMonitor,
    Reused,
    backlog_gauges,
    backlog_json,
)

ReadinessCheck = Callable[[], Awaitable[None]]
CHECK_TIMEOUT_SECONDS: Final = 2.0

HTTP_REQUESTS: Final = Counter(
    "servicetrail_http_requests_total",
    "HTTP requests by route template and status.",
    ["service", "method", "route", "status"],
)
HTTP_LATENCY: Final = Histogram(
    "servicetrail_http_request_seconds",
    "HTTP request latency by route template.",
    ["service", "method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)

router = APIRouter(tags=["operations"])


def database_check(engine: AsyncEngine) -> ReadinessCheck:
    async def check() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    return check


def broker_check(producer: AIOKafkaProducer) -> ReadinessCheck:
    async def check() -> None:
        await producer.client.fetch_all_metadata()

    return check


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def run_checks(checks: Mapping[str, ReadinessCheck]) -> dict[str, str]:
    """Each check's verdict: "ok", or "unavailable: <error type>"."""
    results: dict[str, str] = {}
    for name, check in checks.items():
        try:
            await asyncio.wait_for(check(), CHECK_TIMEOUT_SECONDS)
            results[name] = "ok"
        except Exception as err:  # any failure means "not ready", with its reason
            results[name] = f"unavailable: {type(err).__name__}"
    return results


@router.get("/readyz", summary="Database and broker are reachable")
async def readyz(request: Request) -> JSONResponse:
    checks: Mapping[str, ReadinessCheck] = request.state.readiness
    # Probes are unauthenticated and cheap to send: a flood of them checks the
    # database and broker once a second, not once each.
    verdicts: Reused[dict[str, str]] = request.app.state.readiness_verdicts
    results = await verdicts.get(partial(run_checks, checks))
    # The backlog is reported, never a reason to be not ready: taking a lagging
    # consumer or a writer with a full outbox out of load balancing would not help
    # either catch up, and would turn a delay into refused requests.
    ready = all(v == "ok" for v in results.values())
    backlog = await _measure_backlog(request)
    return JSONResponse(
        {
            "status": "ready" if ready else "not_ready",
            "checks": results,
            "backlog": backlog_json(backlog),
        },
        status_code=200 if ready else 503,
        headers=None if ready else {"Retry-After": "1"},
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    backlog = await _measure_backlog(request)
    # A service may add figures of its own (metrics: the headline indicators, when
    # METRICS_EXPOSE_INDICATORS says this unauthenticated endpoint may show them).
    more: Callable[[], bytes] | None = getattr(request.state, "more_metrics", None)
    return Response(
        generate_latest() + backlog_gauges(backlog) + (more() if more else b""),
        media_type=CONTENT_TYPE_LATEST,
    )


async def _measure_backlog(request: Request) -> Backlog:
    monitor: BacklogMonitor | None = getattr(request.state, "backlog", None)
    return Backlog() if monitor is None else await monitor.measure()


class RequestMetrics:
    """ASGI middleware counting requests per route template (bounded label values)."""

    def __init__(self, app: ASGIApp, *, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            method = scope["method"]
            HTTP_REQUESTS.labels(self.service, method, template, str(status)).inc()
            HTTP_LATENCY.labels(self.service, method, template).observe(
                time.perf_counter() - started
            )
