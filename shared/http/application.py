"""The common shape of every service's FastAPI application."""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from typing import Any, Final

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.telemetry import TelemetryConfig
from opentelemetry.trace import TracerProvider
from pydantic import BaseModel
from starlette.types import Lifespan

from shared.http import health
from shared.http.backlog import Reused
from shared.http.body import BodySizeLimit
from shared.http.problems import UnexpectedErrors, install_problem_handlers
from shared.http.rate_limit import RateLimit
from shared.settings import CommonSettings
from shared.tracing import Tracing, service_tracing


def build_app(
    *,
    service: str,
    settings: CommonSettings,
    lifespan: Lifespan[FastAPI],
    routers: Sequence[APIRouter],
    body_models: Sequence[type[BaseModel]] = (),
    tracer_provider: TracerProvider | None = None,
) -> FastAPI:
    """A FastAPI app with problem+json errors, body limit, health and metrics.

    Traced on `tracer_provider` when given, else as the `OTEL_*` variables say
    (off by default; see `shared.tracing`); the lifespan reads `app.state.tracing`.

    Raises:
        InvalidSettings: tokens could not be verified safely (e.g. no JWT_SECRET),
            or an `OTEL_*` variable is malformed.
    """
    settings.check_token_settings()
    tracing = service_tracing(service, tracer_provider)
    app = FastAPI(
        title=f"ServiceTrail {service}",
        version="1.0.0",
        lifespan=lifespan,
        telemetry=_telemetry(tracing),
    )
    app.state.tracing = tracing
    install_problem_handlers(app)
    readiness_verdicts: Reused[dict[str, str]] = Reused()
    app.state.readiness_verdicts = readiness_verdicts
    # The API's routes first: every request is matched against the routes in order,
    # and the probes are a few requests a second.
    for router in routers:
        app.include_router(router)
    app.include_router(health.router)
    # Added first, so it runs inside RequestMetrics: refusals are counted too.
    app.add_middleware(RateLimit, settings=settings, exempt=OPERATIONS_PATHS)
    app.add_middleware(health.RequestMetrics, service=service)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        per_path={"/v1/events:batch": settings.max_batch_body_bytes},
    )
    # Outermost of ours, so an error in any layer above is answered, not re-raised.
    app.add_middleware(UnexpectedErrors)
    if origins := settings.cors_origins():
        # Outermost of all: a preflight is answered before the rate limit and the
        # body limit, and every answer (refusals and errors too) carries the headers
        # the page needs to read it.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "traceparent"],
            allow_credentials=False,  # bearer tokens, never cookies
            max_age=600,
        )
    _document_raw_bodies(app, body_models)
    return app


# FastAPI's native OpenTelemetry asks the global providers on every request whether
# one is configured (22 us a request); untraced, we configure none and count requests
# ourselves (`health.RequestMetrics`).
NO_TELEMETRY: Final[TelemetryConfig] = {
    "tracing": False,
    "metrics": False,
    "logs": False,
}


def _telemetry(tracing: Tracing) -> TelemetryConfig:
    """Traced: FastAPI's own server span per request, on the service's provider.

    It continues the caller's `traceparent` (OTEL_PROPAGATORS, W3C by default) and is
    the parent of the append's span. Metrics stay Prometheus's; logs stay ours.
    """
    if tracing.provider is None:
        return NO_TELEMETRY
    return {
        "tracer_provider": tracing.provider,
        "tracing": True,
        "metrics": False,
        "logs": False,
        # Spans for dependency solving and serialisation: noise beside the append's.
        "operation_spans": False,
        "auto_configure": False,
        # Probes and scrapes would be most of the traces, and say nothing.
        "exclude": _operations_request,
    }


def _operations_request(scope: MutableMapping[str, Any]) -> bool:
    return scope.get("path") in OPERATIONS_PATHS


PROBLEM_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "description": "RFC 9457 problem details.",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "field": {"type": "string"},
                    "message": {"type": "string"},
                },
            },
        },
        "current_version": {"type": "integer"},
    },
}
# Every operation may answer these; documented once so clients (and schemathesis)
# know the shape of every refusal.
PROBLEM_STATUSES: Final = {
    "400": "More than one `Authorization` header",
    "401": "No or invalid bearer token",
    "403": "The role may not do this",
    "404": "Not found (or not yours)",
    "409": "Conflict with the order's state or version",
    "413": "Request body too large",
    "422": "Invalid request",
    "429": "Too many requests from this caller; retry after `Retry-After` seconds",
    "503": "A backing service is unreachable; retry",
}


# Probes and scrapes answer plain JSON or text, never problem details.
OPERATIONS_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics"})


def _document_raw_bodies(app: FastAPI, models: Sequence[type[BaseModel]]) -> None:
    """OpenAPI: bodies parsed by `json_body`, and problem+json for every refusal."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in models:
            model_schema = model.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            components.update(model_schema.pop("$defs", {}))
            components[model.__name__] = model_schema
        components["Problem"] = PROBLEM_SCHEMA
        problem = {
            "application/problem+json": {
                "schema": {"$ref": "#/components/schemas/Problem"}
            }
        }
        for path, path_item in schema.get("paths", {}).items():
            if path in OPERATIONS_PATHS:
                continue
            for operation in path_item.values():
                responses = operation.setdefault("responses", {})
                for status, description in PROBLEM_STATUSES.items():
                    responses[status] = {"description": description, "content": problem}
        readiness = schema["paths"].get("/readyz", {}).get("get")
        if readiness is not None:
            readiness["responses"]["503"] = {
                "description": "Not ready: the failing checks are named",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented hook
