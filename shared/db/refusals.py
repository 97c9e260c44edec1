"""Remembered refusals: the answer first given to a refused event id, kept durably.

Re-sending a refused id within the retention gets the same answer even if the order
has moved on (a new attempt needs a new id). Rows past the retention no longer
answer and are deleted by the writers' hourly sweep.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from uuid import UUID

from sqlalchemy import Column, DateTime, LargeBinary, Table, Text, Uuid
from sqlalchemy.dialects.postgresql import JSONB

from shared.db.base import EVENT_STORE_SCHEMA, metadata
from shared.db.engine import Driver

refused_event: Final = Table(
    "refused_event",
    metadata,
    Column("event_id", Uuid, primary_key=True),
    Column("request_digest", LargeBinary, nullable=False),
    Column("code", Text, nullable=False),
    Column("detail", Text, nullable=False),
    Column("extra", JSONB, nullable=False),
    Column("refused_at", DateTime(timezone=True), nullable=False),
    schema=EVENT_STORE_SCHEMA,
)

# Only refusals within the retention answer ($2 = now - retention).
_FIND_REFUSAL: Final = (
    f"SELECT request_digest, code, detail, extra::text AS extra "  # noqa: S608
    f"FROM {EVENT_STORE_SCHEMA}.refused_event "
    "WHERE event_id = $1 AND refused_at >= $2"
)
# A row past the retention that the sweep has not deleted yet is replaced.
_REMEMBER_REFUSAL: Final = (
    f"INSERT INTO {EVENT_STORE_SCHEMA}.refused_event AS r "  # noqa: S608
    "(event_id, request_digest, code, detail, extra, refused_at) "
    "VALUES ($1, $2, $3, $4, $5::jsonb, $6) "
    "ON CONFLICT (event_id) DO UPDATE SET request_digest = excluded.request_digest, "
    "code = excluded.code, detail = excluded.detail, extra = excluded.extra, "
    "refused_at = excluded.refused_at WHERE r.refused_at < $7"
)
# No index on refused_at: a sequential scan once an hour of a table that holds one
# row per refused post within the retention is cheaper than an index on every write.
_FORGET_REFUSALS: Final = (
    f"DELETE FROM {EVENT_STORE_SCHEMA}.refused_event "  # noqa: S608
    "WHERE refused_at < $1"
)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A remembered refusal: the request it answered and the error it gave."""

    request_digest: bytes
    code: str
    detail: str
    extra: dict[str, Any]


async def find_refusal(
    conn: Driver, event_id: UUID, *, since: datetime
) -> Refusal | None:
    """The refusal of `event_id` remembered at or after `since`, if any."""
    row = await conn.fetchrow(_FIND_REFUSAL, event_id, since)
    if row is None:
        return None
    return Refusal(
        bytes(row["request_digest"]),
        row["code"],
        row["detail"],
        json.loads(row["extra"]),
    )


async def remember_refusal(
    conn: Driver,
    event_id: UUID,
    refusal: Refusal,
    *,
    now: datetime,
    replaces_before: datetime,
) -> None:
    """Keep `refusal` for `event_id` (replacing one remembered before that time)."""
    await conn.execute(
        _REMEMBER_REFUSAL,
        event_id,
        refusal.request_digest,
        refusal.code,
        refusal.detail,
        json.dumps(refusal.extra),
        now,
        replaces_before,
    )


async def forget_refusals(conn: Driver, *, before: datetime) -> int:
    """Delete refusals remembered before `before`; how many were deleted."""
    status = await conn.execute(_FORGET_REFUSALS, before)
    return int(status.rsplit(" ", 1)[-1])
