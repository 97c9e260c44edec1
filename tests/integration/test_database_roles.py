"""Least privilege in the database: each service's login role tried against the rest.

Connected as each service's role (migration 0008), every way around the ledger's
immutability and every write into another service's tables is refused, and the data
is unchanged afterwards. What each service may do is shown by its real paths: every
API and integration test runs the services as their roles (`service_settings`), and
the order below travels intake -> Kafka -> ledger and metrics under them. Last, the
embedded stack's PostgreSQL asks everyone for a password kept in private files.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final
from uuid import uuid4

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # ships no stubs
import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from services.intake.app import create_app as create_intake
from services.intake.settings import IntakeSettings
from services.ledger.settings import LedgerSettings
from services.metrics.settings import MetricsSettings
from services.stack import Stack, database_password_path
from services.stack.postgres import SUPERUSER, EmbeddedPostgres
from services.stack.servers import free_port
from shared.db.roles import SERVICE_ROLES, url_as
from shared.domain.actors import Role
from shared.settings import CommonSettings
from tests.api.conftest import bearer, running
from tests.fixtures.stack import service_settings
from tests.http_bodies import new_order_body
from tests.integration.ledger_io import (
    LEDGER_TABLES,
    seed_one_row_each,
    table_snapshot,
)

pytestmark = pytest.mark.integration

ROLES: Final = tuple(SERVICE_ROLES.values())
INTAKE, DISPATCH, LEDGER, METRICS = (SERVICE_ROLES[n] for n in SERVICE_ROLES)
SOME_COLUMN: Final = {
    "ledger_entry": "chain_hash",
    "merkle_node": "hash",
    "tree_head": "root_hash",
}


def role_url(settings: CommonSettings, role: str) -> str:
    return CommonSettings(
        database_url=url_as(settings.database_url, role)
    ).sqlalchemy_url


@pytest_asyncio.fixture(loop_scope="session")
async def as_role(
    settings: CommonSettings,
) -> AsyncIterator[dict[str, AsyncEngine]]:
    """An engine logged in as each service role, on this test's database."""
    engines = {
        role: create_async_engine(role_url(settings, role), poolclass=NullPool)
        for role in ROLES
    }
    yield engines
    for engine in engines.values():
        await engine.dispose()


async def refusal(engine: AsyncEngine, *statements: str) -> str:
    """The error PostgreSQL refuses the statements with (fails if all are accepted)."""
    try:
        async with engine.begin() as conn:
            for sql in statements:
                await conn.execute(text(sql))
    except DBAPIError as err:
        return str(err.orig)
    pytest.fail(f"{statements!r} was accepted")


def refused_for(message: str, *reasons: str) -> bool:
    """Whether PostgreSQL's refusal names one of the reasons (else show it)."""
    assert any(reason in message for reason in reasons), message
    return True


async def trigger_states(engine: AsyncEngine) -> list[tuple[str, str]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT tgname, tgenabled FROM pg_trigger t JOIN pg_class c "
                "ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'ledger' AND NOT t.tgisinternal ORDER BY tgname"
            )
        )
        return [(row.tgname, row.tgenabled) for row in rows]


async def count_rows(engine: AsyncEngine, table: str) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(text(f"SELECT count(*) FROM {table}")) or 0)


async def whoami(engine: AsyncEngine) -> tuple[str, bool]:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT current_user, rolsuper FROM pg_roles "
                    "WHERE rolname = current_user"
                )
            )
        ).one()
        return str(row.current_user), bool(row.rolsuper)


@pytest.mark.parametrize("role", ROLES)
async def test_each_service_logs_in_as_its_own_unprivileged_role(
    as_role: dict[str, AsyncEngine], role: str
) -> None:
    assert await whoami(as_role[role]) == (role, False)


@pytest.mark.parametrize("role", ROLES)
async def test_no_service_role_can_switch_off_the_ledger_triggers(
    engine: AsyncEngine, as_role: dict[str, AsyncEngine], role: str
) -> None:
    await seed_one_row_each(engine)
    before = await table_snapshot(engine), await trigger_states(engine)
    for table in LEDGER_TABLES:
        message = await refusal(
            as_role[role], f"ALTER TABLE ledger.{table} DISABLE TRIGGER ALL"
        )
        # Refused as not the owner, or before that for lack of the schema.
        assert refused_for(message, "must be owner of table", "denied for schema")
    # The other way to skip ordinary triggers, for replication, is a superuser's.
    message = await refusal(as_role[role], "SET session_replication_role = replica")
    assert "permission denied to set parameter" in message, message
    message = await refusal(
        as_role[role], "DROP TRIGGER ledger_entry_append_only ON ledger.ledger_entry"
    )
    assert refused_for(message, "must be owner of", "denied for schema")
    assert (await table_snapshot(engine), await trigger_states(engine)) == before


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("table", LEDGER_TABLES)
async def test_no_service_role_may_update_delete_or_truncate_the_ledger(
    engine: AsyncEngine, as_role: dict[str, AsyncEngine], role: str, table: str
) -> None:
    await seed_one_row_each(engine)
    before = await table_snapshot(engine)
    for sql in (
        f"UPDATE ledger.{table} SET {SOME_COLUMN[table]} = {SOME_COLUMN[table]}",
        f"DELETE FROM ledger.{table}",
        f"TRUNCATE ledger.{table}",
    ):
        message = await refusal(as_role[role], sql)
        # Refused by privileges, before the append-only triggers would run.
        assert "permission denied for" in message, (sql, message)
    assert await table_snapshot(engine) == before


# Each service against tables it does not own: writes (and reads of personal data).
FOREIGN_WRITES: Final = [
    (
        INTAKE,
        "ledger.ledger_entry",
        "INSERT INTO ledger.ledger_entry (position) VALUES (9)",
    ),
    (
        INTAKE,
        "ledger.processed_event",
        "INSERT INTO ledger.processed_event VALUES (gen_random_uuid())",
    ),
    (
        INTAKE,
        "metrics.processed_event",
        "INSERT INTO metrics.processed_event VALUES (gen_random_uuid())",
    ),
    (
        INTAKE,
        "metrics.order_state",
        "INSERT INTO metrics.order_state VALUES (gen_random_uuid(), '{}')",
    ),
    (
        INTAKE,
        "dispatch.processed_event",
        "INSERT INTO dispatch.processed_event VALUES (gen_random_uuid())",
    ),
    (INTAKE, "ledger.consumer_offset", "DELETE FROM ledger.consumer_offset"),
    (
        DISPATCH,
        "ledger.ledger_entry",
        "INSERT INTO ledger.ledger_entry (position) VALUES (9)",
    ),
    (
        DISPATCH,
        "metrics.processed_event",
        "INSERT INTO metrics.processed_event VALUES (gen_random_uuid())",
    ),
    (DISPATCH, "intake.contact", "SELECT * FROM intake.contact"),
    (DISPATCH, "metrics.consumer_offset", "DELETE FROM metrics.consumer_offset"),
    (
        LEDGER,
        "event_store.order_event",
        "INSERT INTO event_store.order_event (order_id) VALUES (gen_random_uuid())",
    ),
    (
        LEDGER,
        "event_store.outbox_message",
        "INSERT INTO event_store.outbox_message (topic) VALUES ('x')",
    ),
    (
        LEDGER,
        "metrics.processed_event",
        "INSERT INTO metrics.processed_event VALUES (gen_random_uuid())",
    ),
    (LEDGER, "intake.contact", "SELECT * FROM intake.contact"),
    (
        METRICS,
        "event_store.order_event",
        "INSERT INTO event_store.order_event (order_id) VALUES (gen_random_uuid())",
    ),
    (
        METRICS,
        "event_store.outbox_message",
        "INSERT INTO event_store.outbox_message (topic) VALUES ('x')",
    ),
    (
        METRICS,
        "ledger.ledger_entry",
        "INSERT INTO ledger.ledger_entry (position) VALUES (9)",
    ),
    (
        METRICS,
        "ledger.processed_event",
        "INSERT INTO ledger.processed_event VALUES (gen_random_uuid())",
    ),
    (
        METRICS,
        "dispatch.technician",
        "INSERT INTO dispatch.technician (technician_id) VALUES ('t')",
    ),
    (METRICS, "intake.contact", "SELECT * FROM intake.contact"),
]


@pytest.mark.parametrize(("role", "table", "sql"), FOREIGN_WRITES)
async def test_no_service_role_touches_another_services_tables(
    engine: AsyncEngine,
    as_role: dict[str, AsyncEngine],
    role: str,
    table: str,
    sql: str,
) -> None:
    before = await count_rows(engine, table)
    message = await refusal(as_role[role], sql)
    assert "permission denied for" in message, message
    assert await count_rows(engine, table) == before


@pytest.mark.parametrize("role", ROLES)
async def test_no_service_role_can_become_another_role(
    as_role: dict[str, AsyncEngine], role: str
) -> None:
    for other in (SUPERUSER, *(r for r in ROLES if r != role)):
        message = await refusal(as_role[role], f"SET ROLE {other}")
        assert f'permission denied to set role "{other}"' in message, message
        message = await refusal(as_role[role], f"SET SESSION AUTHORIZATION {other}")
        assert "permission denied to set session authorization" in message, message
    assert await whoami(as_role[role]) == (role, False)


@pytest.mark.parametrize("role", ROLES)
async def test_no_service_role_can_create_or_alter_objects(
    engine: AsyncEngine, as_role: dict[str, AsyncEngine], role: str
) -> None:
    for schema in ("public", "event_store", "intake", "dispatch", "ledger", "metrics"):
        message = await refusal(
            as_role[role], f"CREATE TABLE {schema}.intruder (x int)"
        )
        assert refused_for(message, "permission denied for schema")
    message = await refusal(as_role[role], "CREATE SCHEMA intruder")
    assert "permission denied for database" in message, message
    message = await refusal(
        as_role[role],
        "CREATE FUNCTION public.intruder() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    )
    assert refused_for(message, "permission denied for schema")
    message = await refusal(
        as_role[role], "ALTER TABLE event_store.order_event ADD COLUMN x int"
    )
    assert refused_for(message, "must be owner of table", "denied for schema")
    message = await refusal(as_role[role], f"ALTER ROLE {role} SUPERUSER")
    assert refused_for(message, "must be superuser", "permission denied to alter role")
    async with engine.connect() as conn:
        created = await conn.scalar(
            text(
                "SELECT count(*) FROM pg_class WHERE relname = 'intruder'"
                " UNION ALL SELECT count(*) FROM pg_proc WHERE proname = 'intruder'"
            )
        )
        assert created == 0
        assert not await conn.scalar(
            text("SELECT rolsuper FROM pg_roles WHERE rolname = :r"), {"r": role}
        )


async def test_only_the_relays_roles_may_rewind_consumers_and_only_through_the_owner(
    engine: AsyncEngine, as_role: dict[str, AsyncEngine]
) -> None:
    async with engine.begin() as conn:
        for schema in ("ledger", "metrics", "dispatch"):
            await conn.execute(
                text(
                    f"INSERT INTO {schema}.consumer_offset VALUES ('g', 'lost', 0, 5), "
                    "('g', 'kept', 0, 5)"
                )
            )
    for role in (LEDGER, METRICS):
        message = await refusal(
            as_role[role], "SELECT event_store.rewind_consumer_offsets(ARRAY['lost'])"
        )
        assert refused_for(message, "denied for function", "denied for schema")
        message = await refusal(
            as_role[role], "SELECT * FROM event_store.unapplied_event_ids()"
        )
        assert refused_for(message, "denied for function", "denied for schema")
    offsets = "(SELECT count(*) FROM {0}.consumer_offset)"
    total = " + ".join(offsets.format(s) for s in ("ledger", "metrics", "dispatch"))
    async with engine.connect() as conn:
        assert await conn.scalar(text(f"SELECT {total}")) == 6
    for role in (INTAKE, DISPATCH):
        async with as_role[role].begin() as conn:
            await conn.execute(
                text("SELECT event_store.rewind_consumer_offsets(ARRAY['lost'])")
            )
            assert (
                list(
                    await conn.execute(
                        text("SELECT * FROM event_store.unapplied_event_ids()")
                    )
                )
                == []
            )
    async with engine.connect() as conn:
        assert await conn.scalar(text(f"SELECT {total}")) == 3


async def test_intake_as_its_role_stores_an_order_and_erases_a_contact(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    intake_settings = service_settings(settings, IntakeSettings)
    assert intake_settings.database_url.startswith(f"postgresql://{INTAKE}@")
    auth = bearer(settings)
    async with running(create_intake(intake_settings)) as intake:
        body = new_order_body()
        created = await intake.post(
            "/v1/orders", json=body, headers=auth(Role.CUSTOMER, "customer-roles")
        )
        assert created.status_code == 201, created.text
        erased = await intake.delete(
            "/v1/customers/customer-roles/contact", headers=auth(Role.ADMIN, "admin")
        )
        assert erased.status_code == 200, erased.text
    assert await count_rows(engine, "event_store.order_event") == 1
    assert await count_rows(engine, "event_store.outbox_message") == 1


def test_service_settings_log_each_service_in_as_its_role(
    settings: CommonSettings,
) -> None:
    for settings_class, role in (
        (LedgerSettings, LEDGER),
        (MetricsSettings, METRICS),
    ):
        assert service_settings(settings, settings_class).database_url.startswith(
            f"postgresql://{role}@"
        )


# --- the embedded stack's PostgreSQL: passwords, kept in private files -----------


async def login_fails(url: str) -> str:
    try:
        conn = await asyncpg.connect(url)
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as err:
        return str(err)
    await conn.close()
    pytest.fail("logged in")


async def logs_in_as(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        return str(await conn.fetchval("SELECT current_user"))
    finally:
        await conn.close()


def private(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


async def test_the_stacks_postgresql_wants_each_roles_password_kept_in_private_files(
    scratch_dir: Path, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVICETRAIL_POSTGRES_PORT", str(free_port()))
    topics = {"KAFKA_TOPIC_PREFIX": f"t{uuid4().hex[:10]}."}
    stack = Stack(
        home=scratch_dir / "home", kafka_bootstrap=kafka_bootstrap, extra_env=topics
    )
    try:
        await asyncio.to_thread(stack.start_infrastructure)
        assert stack.postgres is not None
        server = stack.postgres.url_for("servicetrail")
        anonymous = url_as(server, SUPERUSER)
        for role in (SUPERUSER, *ROLES):
            path = database_password_path(stack.home, role)
            assert private(path), oct(path.stat().st_mode)
            password = path.read_text().strip()
            assert len(password) >= 32
            message = await login_fails(url_as(server, role))
            assert "password" in message, message
            message = await login_fails(url_as(server, role, "wrong" + password))
            assert "password authentication failed" in message, message
            assert await logs_in_as(url_as(server, role, password)) == role
        assert private(stack.home / "secrets")
        # The state file tells the CLI where the password is, never the password.
        stack.write_state()
        state = (stack.home / "stack.json").read_text()
        assert json.loads(state)["database_url"] == anonymous
        secrets = [
            database_password_path(stack.home, r).read_text()
            for r in (SUPERUSER, *ROLES)
        ]
        assert not any(secret in state for secret in secrets)
        for name in SERVICE_ROLES:
            environment = stack.service_environment(name, 1)
            assert await logs_in_as(environment["DATABASE_URL"]) == SERVICE_ROLES[name]
        logs = "".join(p.read_text(errors="replace") for p in stack.home.rglob("*.log"))
        assert not any(secret in logs for secret in secrets)
    finally:
        await asyncio.to_thread(stack.stop)
    # A restart keeps the same secrets.
    again = Stack(
        home=scratch_dir / "home", kafka_bootstrap=kafka_bootstrap, extra_env=topics
    )
    try:
        await asyncio.to_thread(again.start_infrastructure)
        assert again.database_url == stack.database_url
        assert [
            database_password_path(again.home, r).read_text()
            for r in (SUPERUSER, *ROLES)
        ] == secrets
    finally:
        await asyncio.to_thread(again.stop)


async def test_a_data_directory_made_with_trust_is_switched_to_passwords(
    scratch_dir: Path,
) -> None:
    data = scratch_dir / "pgdata"
    trusting = EmbeddedPostgres(data, fsync=False)
    trusting.start()
    try:
        assert await logs_in_as(trusting.url) == SUPERUSER
    finally:
        trusting.stop()
    password = "s3cret-" + uuid4().hex
    guarded = EmbeddedPostgres(data, fsync=False, password=password)
    guarded.start()
    try:
        assert "password" in await login_fails(url_as(guarded.url, SUPERUSER))
        assert await logs_in_as(guarded.url) == SUPERUSER
    finally:
        guarded.stop()
    # A lost secret is made anew: the next start gives the superuser the new one.
    renewed = EmbeddedPostgres(data, fsync=False, password=password + "-renewed")
    renewed.start()
    try:
        assert await logs_in_as(renewed.url) == SUPERUSER
        assert "password" in await login_fails(url_as(renewed.url, SUPERUSER, password))
    finally:
        renewed.stop()
    log: Any = trusting.log_file.read_text(errors="replace")
    assert password not in log
    assert os.stat(data / "pg_hba.conf").st_mode & 0o077 == 0
