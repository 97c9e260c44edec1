"""HTTP clients for each service's ASGI app, with its lifespan running."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from shared.domain.actors import Role
from shared.http.auth import issue_token
from shared.settings import CommonSettings


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on `app`, its lifespan (engine, relay, consumers) running."""
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test"
        ) as client:
            yield client


def bearer(
    settings: CommonSettings, *, lifetime: timedelta = timedelta(hours=12)
) -> Callable[[Role, str], dict[str, str]]:
    """Authorization headers for a role and subject, signed with the test secret."""

    def headers(role: Role, subject: str) -> dict[str, str]:
        token = issue_token(settings, role=role, subject=subject, lifetime=lifetime)
        return {"Authorization": f"Bearer {token}"}

    return headers
