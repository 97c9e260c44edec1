"""Ledger: leaf hashes, Merkle nodes, signed tree heads; append-only by trigger and role.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 16:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPEND_ONLY = ("ledger_entry", "merkle_node", "tree_head")
LEDGER_ROLE = "servicetrail_ledger"


def upgrade() -> None:
    # Positions come from max(position) + 1 under a table lock from now on: the
    # mutable counter row could not live in an append-only schema.
    op.drop_table("ledger_head", schema="ledger")
    op.add_column(
        "ledger_entry",
        sa.Column("leaf_hash", sa.LargeBinary(), nullable=True),
        schema="ledger",
    )
    op.execute(
        "UPDATE ledger.ledger_entry SET leaf_hash = sha256('\\x00'::bytea || canonical)"
    )
    op.alter_column("ledger_entry", "leaf_hash", nullable=False, schema="ledger")
    op.create_table(
        "merkle_node",
        sa.Column("level", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("index", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("level", "index", name=op.f("pk_merkle_node")),
        schema="ledger",
    )
    op.create_table(
        "tree_head",
        sa.Column("tree_size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root_hash", sa.LargeBinary(), nullable=False),
        sa.Column("timestamp", sa.Text(), nullable=False),
        sa.Column("key_id", sa.Text(), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("tree_size", name=op.f("pk_tree_head")),
        schema="ledger",
    )
    op.execute(
        """
        CREATE FUNCTION ledger.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'ledger table %.% is append-only: % refused',
                TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END;
        $$
        """
    )
    for table in APPEND_ONLY:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON ledger.{table} "
            "FOR EACH ROW EXECUTE FUNCTION ledger.refuse_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON ledger.{table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change()"
        )
    # Roles belong to the cluster, not the database: create it once.
    op.execute(
        f"""
        DO $$ BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{LEDGER_ROLE}') THEN
                CREATE ROLE {LEDGER_ROLE} NOLOGIN;
            END IF;
        END $$
        """
    )
    op.execute(f"GRANT USAGE ON SCHEMA ledger, event_store TO {LEDGER_ROLE}")
    op.execute(
        f"GRANT SELECT, INSERT ON ledger.ledger_entry, ledger.merkle_node, "
        f"ledger.tree_head TO {LEDGER_ROLE}"
    )
    op.execute(
        f"GRANT SELECT, INSERT, UPDATE ON ledger.consumer_offset, ledger.processed_event "
        f"TO {LEDGER_ROLE}"
    )
    # Completeness compares the ledger with the event store: read-only there.
    op.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA event_store TO {LEDGER_ROLE}")


def downgrade() -> None:
    op.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA event_store FROM {LEDGER_ROLE}")
    op.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA ledger FROM {LEDGER_ROLE}")
    op.execute(f"REVOKE USAGE ON SCHEMA ledger, event_store FROM {LEDGER_ROLE}")
    op.drop_table("tree_head", schema="ledger")
    op.drop_table("merkle_node", schema="ledger")
    op.execute("DROP TRIGGER ledger_entry_append_only ON ledger.ledger_entry")
    op.execute("DROP TRIGGER ledger_entry_no_truncate ON ledger.ledger_entry")
    op.execute("DROP FUNCTION ledger.refuse_change()")
    op.drop_column("ledger_entry", "leaf_hash", schema="ledger")
    op.create_table(
        "ledger_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("next_position", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_ledger_head_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_head")),
        schema="ledger",
    )
    op.execute(
        "INSERT INTO ledger.ledger_head (id, next_position) "
        "SELECT 1, coalesce(max(position) + 1, 0) FROM ledger.ledger_entry"
    )
