"""A benchmark's records stored in `event_store.order_event`, as the writers store them.

The consumers that check each record against the event store (ledger, dispatch,
metrics) apply only what it holds, so a benchmark that produces straight to the topic
stores the same envelopes first. COPY, not the order writer: only these rows matter
to the check (no summary, outbox or refusal), and hundreds of thousands of them load
in seconds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final

import asyncpg

from shared.db.event_store import order_event
from shared.events.canonical import canonical_from_json

# Every column but the identity, in table order (as `stored_row` builds them).
COLUMNS: Final = tuple(c.name for c in order_event.columns if c.name != "position")


def stored_row(value: bytes) -> tuple[Any, ...]:
    """The `order_event` row the write path would have stored for this record value."""
    envelope = json.loads(value)
    return (
        envelope["subject"],
        envelope["orderversion"],
        envelope["id"],
        envelope["type"].rsplit(".", 1)[-1],
        datetime.fromisoformat(envelope["time"]),
        datetime.fromisoformat(envelope["recordedtime"]),
        envelope["actor"],
        b"bench",
        value.decode(),
        hashlib.sha256(canonical_from_json(value)).digest(),
    )


async def store_envelopes(
    conn: asyncpg.Connection[asyncpg.Record], values: Iterable[bytes]
) -> None:
    """Store these record values (one COPY), then ANALYZE for the check's plans."""
    await conn.copy_records_to_table(
        "order_event",
        schema_name="event_store",
        columns=COLUMNS,
        records=[stored_row(value) for value in values],
    )
    await conn.execute("ANALYZE event_store.order_event")
