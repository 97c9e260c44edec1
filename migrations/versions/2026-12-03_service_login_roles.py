"""Least privilege: one login role per service, granted exactly what its code uses.

Migrations run as the owner of every schema; the services connect as these roles, so
none of them can disable the ledger's triggers (only an owner may ALTER a table),
write another service's tables or become another role. Passwords are not set here:
secrets stay out of migrations (the stack, compose and Kubernetes set them).

The grants are explicit, not default privileges: a later migration that adds a table
or sequence must grant it to the roles that use it (and tests/integration/
test_database_roles.py shows a missing grant as a failing service path).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 10:40:00.000000
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here on purpose (a migration must not change when the code does).
INTAKE: Final = "servicetrail_intake"
DISPATCH: Final = "servicetrail_dispatch"
LEDGER: Final = "servicetrail_ledger"
METRICS: Final = "servicetrail_metrics"
ROLES: Final = (INTAKE, DISPATCH, LEDGER, METRICS)
WRITERS: Final = (INTAKE, DISPATCH)

# What intake and dispatch both do in the event store: append (order writer), answer
# refusals again, keep the order summary, relay the outbox and its positions.
EVENT_STORE_WRITER: Final[Mapping[str, str]] = {
    "event_store.order_event": "SELECT, INSERT",
    # Refusals are kept for REFUSAL_RETENTION: an expired one is replaced (UPDATE)
    # and old ones are deleted by the writers' hourly task.
    "event_store.refused_event": "SELECT, INSERT, UPDATE, DELETE",
    "event_store.order_summary": "SELECT, INSERT, UPDATE",
    "event_store.outbox_message": "SELECT, INSERT, UPDATE",
    "event_store.relay_position": "SELECT, INSERT, UPDATE, DELETE",
}
TRACKING: Final = "SELECT, INSERT, UPDATE"

GRANTS: Final[Mapping[str, Mapping[str, str]]] = {
    INTAKE: {
        **EVENT_STORE_WRITER,
        # The contact vault; DELETE is the customer's erasure.
        "intake.contact": "SELECT, INSERT, DELETE",
    },
    DISPATCH: {
        **EVENT_STORE_WRITER,
        "dispatch.technician": "SELECT, INSERT, UPDATE",
        "dispatch.consumer_offset": TRACKING,
        "dispatch.processed_event": "SELECT, INSERT",
    },
    LEDGER: {
        # Append-only by privilege now, not only by trigger: no UPDATE or DELETE.
        "ledger.ledger_entry": "SELECT, INSERT",
        "ledger.merkle_node": "SELECT, INSERT",
        "ledger.tree_head": "SELECT, INSERT",
        "ledger.consumer_offset": TRACKING,
        "ledger.processed_event": "SELECT, INSERT",
        # Completeness compares the ledger with the event store: read-only there.
        "event_store.order_event": "SELECT",
    },
    METRICS: {
        # Derived state, rebuilt from the ledger: the projector upserts and deletes.
        **{
            f"metrics.{table}": "SELECT, INSERT, UPDATE, DELETE"
            for table in (
                "alert",
                "applied_watermark",
                "complaint",
                "consumer_offset",
                "open_order_count",
                "order_fact",
                "order_state",
                "outbox_message",
                "processed_event",
                "rating",
            )
        },
        "ledger.ledger_entry": "SELECT",
        # Like the ledger, it applies only records the event store holds as they are
        # (a forged `completed` or `rated` must not skew the indicators): read-only.
        "event_store.order_event": "SELECT",
    },
}
SCHEMAS: Final[Mapping[str, tuple[str, ...]]] = {
    INTAKE: ("event_store", "intake"),
    DISPATCH: ("event_store", "dispatch"),
    LEDGER: ("event_store", "ledger"),
    METRICS: ("event_store", "ledger", "metrics"),
}
SEQUENCES: Final[Mapping[str, tuple[str, ...]]] = {
    INTAKE: ("event_store.outbox_message_id_seq",),
    DISPATCH: ("event_store.outbox_message_id_seq",),
    METRICS: ("metrics.outbox_message_id_seq",),
}

# Roles belong to the cluster, which many databases (every test's) share and migrate
# at once: create or correct each role only when needed, and retry when another
# database's migration did so concurrently (a duplicate, or "tuple concurrently
# updated" on pg_authid). 0004 made servicetrail_ledger NOLOGIN; it logs in now.
_ENSURE_ROLES: Final = """
DO $$
DECLARE
    wanted text;
    attempt int;
    attributes CONSTANT text :=
        'LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT';
BEGIN
    FOREACH wanted IN ARRAY ARRAY[%(roles)s] LOOP
        FOR attempt IN 1..50 LOOP
            BEGIN
                IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = wanted) THEN
                    EXECUTE format('CREATE ROLE %%I %%s', wanted, attributes);
                ELSIF EXISTS (
                    SELECT FROM pg_roles WHERE rolname = wanted AND (
                        NOT rolcanlogin OR rolsuper OR rolcreatedb OR rolcreaterole
                        OR rolreplication OR rolbypassrls
                    )
                ) THEN
                    EXECUTE format('ALTER ROLE %%I %%s', wanted, attributes);
                END IF;
                EXIT;
            EXCEPTION WHEN duplicate_object OR unique_violation OR internal_error THEN
                PERFORM pg_sleep(0.02 * attempt);
            END;
        END LOOP;
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = wanted AND rolcanlogin)
        THEN
            RAISE EXCEPTION 'could not create the login role %%', wanted;
        END IF;
    END LOOP;
END $$
"""

# The relay (inside intake and dispatch) heals a broker that lost records: it must
# know which events some consumer never applied and rewind the consumers' offsets.
# Those are other services' tracking tables, so the relay gets these two narrow
# functions, running as their owner, instead of any privilege on the tables. Fixed
# search_path: a caller's objects must not be able to shadow anything used inside.
_UNAPPLIED_EVENTS: Final = """
CREATE FUNCTION event_store.unapplied_event_ids() RETURNS SETOF uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    -- The ledger must hold every event; metrics and dispatch count once they applied
    -- anything (one that never ran starts from whatever log it finds).
    SELECT e.event_id FROM event_store.order_event e
    WHERE NOT EXISTS (
            SELECT 1 FROM ledger.processed_event p WHERE p.event_id = e.event_id)
        OR (EXISTS (SELECT 1 FROM metrics.processed_event) AND NOT EXISTS (
            SELECT 1 FROM metrics.processed_event p WHERE p.event_id = e.event_id))
        OR (EXISTS (SELECT 1 FROM dispatch.processed_event) AND NOT EXISTS (
            SELECT 1 FROM dispatch.processed_event p WHERE p.event_id = e.event_id))
$$
"""
_REWIND_OFFSETS: Final = """
CREATE FUNCTION event_store.rewind_consumer_offsets(topics text[]) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    DELETE FROM ledger.consumer_offset WHERE topic = ANY(topics);
    DELETE FROM metrics.consumer_offset WHERE topic = ANY(topics);
    DELETE FROM dispatch.consumer_offset WHERE topic = ANY(topics);
$$
"""
FUNCTIONS: Final = (
    "event_store.unapplied_event_ids()",
    "event_store.rewind_consumer_offsets(text[])",
)


def _roles_sql(roles: Sequence[str]) -> str:
    return ", ".join(f"'{role}'" for role in roles)


def upgrade() -> None:
    op.execute(_ENSURE_ROLES % {"roles": _roles_sql(ROLES)})
    # PostgreSQL 15 made this the default; older servers let anyone create in public.
    op.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    roles = ", ".join(ROLES)
    op.execute(
        "DO $$ BEGIN EXECUTE format('GRANT CONNECT ON DATABASE %I TO "
        f"{roles}', current_database()); END $$"
    )
    # 0004's grants to the then role-switching ledger are replaced by this table.
    op.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA ledger, event_store FROM {LEDGER}")
    for role, schemas in SCHEMAS.items():
        op.execute(f"GRANT USAGE ON SCHEMA {', '.join(schemas)} TO {role}")
    for role, grants in GRANTS.items():
        for table, privileges in grants.items():
            op.execute(f"GRANT {privileges} ON {table} TO {role}")
    for role, sequences in SEQUENCES.items():
        op.execute(f"GRANT USAGE ON SEQUENCE {', '.join(sequences)} TO {role}")
    op.execute(_UNAPPLIED_EVENTS)
    op.execute(_REWIND_OFFSETS)
    for function in FUNCTIONS:
        # Functions are executable by PUBLIC unless revoked.
        op.execute(f"REVOKE ALL ON FUNCTION {function} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {function} TO {', '.join(WRITERS)}")


def downgrade() -> None:
    for function in reversed(FUNCTIONS):
        op.execute(f"DROP FUNCTION {function}")
    roles = ", ".join(ROLES)
    for schema in ("event_store", "intake", "dispatch", "ledger", "metrics"):
        op.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {roles}")
        op.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schema} FROM {roles}")
        op.execute(f"REVOKE ALL ON SCHEMA {schema} FROM {roles}")
    op.execute(
        "DO $$ BEGIN EXECUTE format('REVOKE CONNECT ON DATABASE %I FROM "
        f"{roles}', current_database()); END $$"
    )
    # 0004's grants back; the roles stay: they belong to the cluster, and other
    # databases on it may still use them (DROP ROLE would fail there anyway).
    op.execute(f"GRANT USAGE ON SCHEMA ledger, event_store TO {LEDGER}")
    op.execute(
        "GRANT SELECT, INSERT ON ledger.ledger_entry, ledger.merkle_node, "
        f"ledger.tree_head TO {LEDGER}"
    )
    op.execute(
        "GRANT SELECT, INSERT, UPDATE ON ledger.consumer_offset, "
        f"ledger.processed_event TO {LEDGER}"
    )
    op.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA event_store TO {LEDGER}")
