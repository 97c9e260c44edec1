"""Database connections; nothing connects at import time.

SQLAlchemy Core serves queries and migrations. The event-append hot path talks to
asyncpg directly: measured here, SQLAlchemy's async layer cost more per statement
than the statement itself.
"""

from __future__ import annotations

from typing import TypeAlias

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from shared.settings import CommonSettings

Driver: TypeAlias = "asyncpg.Connection[asyncpg.Record]"
DriverPool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"


def create_engine(
    settings: CommonSettings, *, pool_size: int | None = None
) -> AsyncEngine:
    """An asyncpg-backed SQLAlchemy engine, logged in as the URL's user.

    Each service's URL names its own login role (migration 0008): a role switched to
    after logging in as a superuser would be no boundary, since RESET ROLE undoes it.

    No `pool_pre_ping`: it costs a round trip per checkout; a connection broken by a
    database restart is invalidated on first use instead, and that request gets 503.
    """
    return create_async_engine(
        settings.sqlalchemy_url,
        pool_size=pool_size or settings.database_pool_size,
        max_overflow=5,
        pool_recycle=1800,
    )


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def asyncpg_dsn(settings: CommonSettings) -> str:
    """The URL in the form asyncpg takes (no SQLAlchemy driver suffix)."""
    scheme, _, rest = settings.database_url.partition("://")
    return (
        f"postgresql://{rest}"
        if scheme.startswith("postgresql")
        else settings.database_url
    )


async def create_driver_pool(settings: CommonSettings) -> DriverPool:
    """A plain asyncpg pool for the hot path; opens connections lazily (min_size=0)."""
    return await asyncpg.create_pool(
        asyncpg_dsn(settings),
        min_size=0,
        max_size=settings.database_pool_size,
        max_inactive_connection_lifetime=300,
        reset=_keep_session,
    )


async def _keep_session(conn: Driver) -> None:
    """Nothing to reset when a hot-path connection goes back to the pool.

    The default sends `pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`,
    a round trip per request while the connection is still held; the writer's
    statements leave no session state (no SET, LISTEN, advisory lock or cursor).
    asyncpg still rolls back a transaction left open before calling this.
    """


async def driver_of(conn: AsyncConnection) -> Driver:
    """The asyncpg connection under a SQLAlchemy one, inside the same transaction."""
    raw = await conn.get_raw_connection()
    driver: Driver = raw.driver_connection
    if conn.in_transaction() and not driver.is_in_transaction():
        # SQLAlchemy begins its transaction on the driver lazily, at the first
        # statement; make it real so our statements run inside it.
        await conn.exec_driver_sql("SELECT 1")
    return driver
