"""The Alembic history on an empty database: up, down, up again, and no drift."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Final

import pytest
import pytest_asyncio
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from services.metrics.domain import DEFAULT_SLA, sla_json
from shared.db import migrate
from shared.db.schema import target_metadata
from shared.settings import CommonSettings
from tests.fixtures.postgres import DatabaseFactory

pytestmark = pytest.mark.integration

SCHEMAS: Final = frozenset({"event_store", "intake", "dispatch", "ledger", "metrics"})


@pytest_asyncio.fixture(loop_scope="session")
async def empty_database(fresh_database: DatabaseFactory) -> str:
    """The URL of a database with nothing in it."""
    return await fresh_database("migrations")


@pytest_asyncio.fixture(loop_scope="session")
async def db(empty_database: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(
        CommonSettings(database_url=empty_database).sqlalchemy_url, poolclass=NullPool
    )
    yield engine
    await engine.dispose()


async def upgrade(url: str, revision: str = "head") -> None:
    # env.py calls asyncio.run, which cannot run inside this test's event loop.
    await asyncio.to_thread(migrate.upgrade, url, revision)


async def downgrade(url: str, revision: str = "base") -> None:
    await asyncio.to_thread(migrate.downgrade, url, revision)


def _tables(sync_conn: Connection) -> set[tuple[str, str]]:
    inspector = inspect(sync_conn)
    return {
        (schema, table)
        for schema in inspector.get_schema_names()
        if schema in SCHEMAS
        for table in inspector.get_table_names(schema=schema)
    }


async def tables(engine: AsyncEngine) -> set[tuple[str, str]]:
    async with engine.connect() as conn:
        return await conn.run_sync(_tables)


async def schemas(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        names = await conn.scalars(text("SELECT nspname FROM pg_namespace"))
        return set(names) & SCHEMAS


async def revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(
            lambda sync: MigrationContext.configure(
                sync, opts={"version_table_schema": "public"}
            ).get_current_revision()
        )


def expected_tables() -> set[tuple[str, str]]:
    return {
        (str(table.schema), table.name) for table in target_metadata.tables.values()
    }


def head() -> str:
    heads = ScriptDirectory.from_config(migrate.alembic_config("unused")).get_heads()
    assert len(heads) == 1, heads
    return heads[0]


def _differences(sync_conn: Connection) -> list[Any]:
    context = MigrationContext.configure(
        sync_conn,
        opts={
            "include_schemas": True,
            "compare_type": True,
            "compare_server_default": True,
        },
    )
    diffs: list[Any] = compare_metadata(context, target_metadata)
    return [diff for diff in diffs if "alembic_version" not in repr(diff)]


def test_the_migration_history_has_exactly_one_head() -> None:
    assert head()


def test_every_table_of_the_metadata_lives_in_a_service_schema() -> None:
    assert {schema for schema, _ in expected_tables()} == SCHEMAS


async def test_upgrade_creates_every_schema_and_table_on_an_empty_database(
    empty_database: str, db: AsyncEngine
) -> None:
    assert await schemas(db) == set()

    await upgrade(empty_database)

    assert await schemas(db) == SCHEMAS
    assert await tables(db) == expected_tables()
    assert await revision(db) == head()


async def test_upgrade_again_at_head_changes_nothing(
    empty_database: str, db: AsyncEngine
) -> None:
    await upgrade(empty_database)
    await upgrade(empty_database)
    assert await tables(db) == expected_tables()
    assert await revision(db) == head()


async def test_downgrade_to_base_removes_every_schema_and_table(
    empty_database: str, db: AsyncEngine
) -> None:
    await upgrade(empty_database)

    await downgrade(empty_database, "base")

    assert await schemas(db) == set()
    assert await tables(db) == set()
    assert await revision(db) is None


async def test_upgrade_after_downgrade_builds_the_schema_again(
    empty_database: str, db: AsyncEngine
) -> None:
    await upgrade(empty_database)
    await downgrade(empty_database, "base")

    await upgrade(empty_database)

    assert await schemas(db) == SCHEMAS
    assert await tables(db) == expected_tables()
    assert await revision(db) == head()
    async with db.connect() as conn:
        assert await conn.run_sync(_differences) == []


async def test_the_migrated_schema_matches_the_sqlalchemy_metadata(
    empty_database: str, db: AsyncEngine
) -> None:
    await upgrade(empty_database)

    async with db.connect() as conn:
        differences = await conn.run_sync(_differences)

    assert differences == []


async def test_the_metadata_comparison_notices_a_schema_that_drifted(
    empty_database: str, db: AsyncEngine
) -> None:
    await upgrade(empty_database)
    async with db.begin() as conn:
        await conn.execute(text("ALTER TABLE intake.contact DROP COLUMN phone"))
        await conn.execute(text("DROP INDEX event_store.ix_outbox_message_unpublished"))

    async with db.connect() as conn:
        differences = repr(await conn.run_sync(_differences))

    assert "'add_column', 'intake', 'contact'" in differences
    assert "ix_outbox_message_unpublished" in differences


async def _rollups_complete(db: AsyncEngine) -> bool:
    async with db.connect() as conn:
        found = await conn.scalar(text("SELECT complete FROM metrics.rollup_policy"))
    return bool(found)


async def test_rollups_are_complete_on_a_database_without_facts(
    empty_database: str, db: AsyncEngine
) -> None:
    await upgrade(empty_database)

    assert await _rollups_complete(db)


async def test_rollups_added_to_a_database_with_facts_are_not_trusted_until_rebuilt(
    empty_database: str, db: AsyncEngine
) -> None:
    # The facts of an order stored before the rollups existed are not in them.
    await upgrade(empty_database, "0009")
    await _store_one_fact(db)

    await upgrade(empty_database)

    assert not await _rollups_complete(db)


async def _store_one_fact(db: AsyncEngine) -> None:
    async with db.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO metrics.order_fact (order_id, last_version, region, "
                "category, urgency, created_at, reopened, complaint_filed, open) "
                "VALUES (gen_random_uuid(), 1, 'r', 'c', 'normal', now(), false, "
                "false, true)"
            )
        )


@pytest.mark.parametrize("complete_at", ["0010", "0015"])
async def test_hourly_rollups_added_to_a_database_with_facts_are_not_trusted(
    empty_database: str, db: AsyncEngine, complete_at: str
) -> None:
    # Complete daily rollups (0010), then facts the new hourly and all-time rollups
    # (0011) start without: the queries must scan the facts until a rebuild. Or
    # complete rollups (0015), then facts without an ETA (0016 adds eta_error_s).
    await upgrade(empty_database, complete_at)
    assert await _rollups_complete(db)
    await _store_one_fact(db)

    await upgrade(empty_database)

    assert not await _rollups_complete(db)


async def test_the_rollups_record_the_default_eta_tolerance_and_forget_it_down(
    empty_database: str, db: AsyncEngine
) -> None:
    # What the rollups were counted with must equal what the default policy asks
    # for, or a fresh database would never read its rollups.
    await upgrade(empty_database)
    async with db.connect() as conn:
        recorded = await conn.scalar(text("SELECT sla FROM metrics.rollup_policy"))
    assert recorded == sla_json(DEFAULT_SLA)

    await downgrade(empty_database, "0015")
    async with db.connect() as conn:
        recorded = await conn.scalar(text("SELECT sla FROM metrics.rollup_policy"))
    assert "eta_kept_s" not in recorded
