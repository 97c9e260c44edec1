"""The common shape of every service's FastAPI application."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from starlette.types import Lifespan

from shared.http import health
from shared.http.body import BodySizeLimit
from shared.http.problems import install_problem_handlers
from shared.settings import CommonSettings


def build_app(
    *,
    service: str,
    settings: CommonSettings,
    lifespan: Lifespan[FastAPI],
    routers: Sequence[APIRouter],
    body_models: Sequence[type[BaseModel]] = (),
) -> FastAPI:
    """A FastAPI app with problem+json errors, body limit, health and metrics."""
    app = FastAPI(
        title=f"ServiceTrail {service}",
        version="1.0.0",
        lifespan=lifespan,
    )
    install_problem_handlers(app)
    app.include_router(health.router)
    for router in routers:
        app.include_router(router)
    app.add_middleware(health.RequestMetrics, service=service)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    _document_raw_bodies(app, body_models)
    return app


def _document_raw_bodies(app: FastAPI, models: Sequence[type[BaseModel]]) -> None:
    """Add the schemas of bodies parsed by `json_body` to the OpenAPI components."""

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
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented hook
