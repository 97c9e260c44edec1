"""Each stored event's SHA-256 over its envelope's RFC 8785 bytes.

Consumers check every record against the event store before applying it. With the
digest they compare 32 bytes per record instead of having PostgreSQL parse each
record's JSON into jsonb and compare it with the stored envelope, and the ledger
learns in the same step that the record's bytes are already the canonical ones it
hashes.

Nullable and not backfilled: an event stored before this revision has no digest,
and consumers compare its envelope as before (jsonb equality). The writers' roles
already hold INSERT on the whole table, so no grant is needed for the new column.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 20:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "order_event",
        sa.Column("canonical_digest", sa.LargeBinary(), nullable=True),
        schema="event_store",
    )


def downgrade() -> None:
    op.drop_column("order_event", "canonical_digest", schema="event_store")
