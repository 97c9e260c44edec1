"""Alembic environment: one history for the event store and every service schema."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from shared.db.schema import target_metadata
from shared.settings import CommonSettings


def _url() -> str:
    configured = context.config.attributes.get("database_url")
    if isinstance(configured, str):
        return CommonSettings(database_url=configured).sqlalchemy_url
    return CommonSettings().sqlalchemy_url


def _include_name(name: str | None, type_: str, parent_names: object) -> bool:
    # Alembic's own version table is not part of the model.
    return not (type_ == "table" and name == "alembic_version")


def _migrate(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_schemas=True,
        include_name=_include_name,
        version_table_schema="public",
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    engine = create_async_engine(_url())
    async with engine.connect() as connection:
        await connection.run_sync(_migrate)
        await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
