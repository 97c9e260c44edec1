"""Async engine construction; nothing connects at import time."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from shared.settings import CommonSettings


def create_engine(
    settings: CommonSettings, *, pool_size: int | None = None
) -> AsyncEngine:
    """An asyncpg engine; `pool_pre_ping` so a restarted database heals by itself."""
    return create_async_engine(
        settings.sqlalchemy_url,
        pool_size=pool_size or settings.database_pool_size,
        max_overflow=5,
        pool_pre_ping=True,
        pool_recycle=1800,
    )
