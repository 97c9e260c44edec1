"""The event store: every order's stream with gapless versions, and the outbox.

Appends rely on the primary key `(order_id, version)` for optimistic concurrency (two
writers of one version: the database lets exactly one in, no read-then-write race) and
on the unique `event_id` for idempotency. The outbox row is written by the same
statement, so an event is stored if and only if it will be published.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from uuid import UUID

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    Table,
    Text,
    Uuid,
)
from sqlalchemy.dialects.postgresql import JSONB

from shared.db.base import EVENT_STORE_SCHEMA, metadata
from shared.db.engine import Driver
from shared.db.outbox import outbox_table
from shared.domain.lifecycle import OrderEvent, OrderState, fold
from shared.domain.state_codec import StateFormatError, decode_state, encode_state
from shared.events.canonical import canonical_from_json
from shared.events.envelope import Envelope, encode, to_order_event
from shared.events.provenance import StoredMatch
from shared.events.topics import ORDER_EVENTS

order_event: Final = Table(
    "order_event",
    metadata,
    Column("order_id", Uuid, nullable=False),
    Column("version", Integer, nullable=False),
    # A global, commit-independent sequence: for listings and lag, never for
    # "read everything after N" (ids are taken before commit, so they commit out of order).
    Column("position", BigInteger, Identity(), nullable=False, unique=True),
    Column("event_id", Uuid, nullable=False, unique=True),
    Column("type", Text, nullable=False),
    Column("time", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("actor", Text, nullable=False),
    # SHA-256 of the canonical request, to tell a retry from a reuse of the id.
    Column("request_digest", LargeBinary, nullable=False),
    Column("envelope", JSONB, nullable=False),
    # SHA-256 of the envelope's RFC 8785 bytes, which are also the published record
    # value: consumers check a record against the store by this digest (NULL for
    # events stored before it was kept: those are compared as jsonb).
    Column("canonical_digest", LargeBinary, nullable=True),
    PrimaryKeyConstraint("order_id", "version"),
    schema=EVENT_STORE_SCHEMA,
)

outbox_message: Final = outbox_table(EVENT_STORE_SCHEMA)

# The dawn of time: with it, every remembered refusal counts.
EVER: Final = datetime.min.replace(tzinfo=UTC)

# One statement, one round trip: the event (with the digest of its canonical bytes,
# $18), its outbox message and the order summary with the folded state after the
# event ($17), unless the id was refused since $16 (a
# refused id keeps its answer for the retention) or is taken. The state is written
# only with its event, so it is never ahead of or behind the stream it folds.
_APPEND: Final = f"""
    WITH stored AS (
        INSERT INTO {EVENT_STORE_SCHEMA}.order_event
            (order_id, version, event_id, type, time, recorded_at, actor,
             request_digest, envelope, canonical_digest)
        SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $18
        WHERE NOT EXISTS (
            SELECT 1 FROM {EVENT_STORE_SCHEMA}.refused_event
            WHERE event_id = $3 AND refused_at >= $16
        )
        ON CONFLICT DO NOTHING
        RETURNING position, order_id
    ), outbox AS (
        INSERT INTO {EVENT_STORE_SCHEMA}.outbox_message (topic, key, value)
        SELECT $10, stored.order_id::text, $11 FROM stored
    ), summary AS (
        INSERT INTO {EVENT_STORE_SCHEMA}.order_summary
            (order_id, customer_id, technician_id, status, version, created_at,
             updated_at, state)
        SELECT stored.order_id, $12, $13, $14, $2, $15, $6, $17::jsonb FROM stored
        ON CONFLICT (order_id) DO UPDATE SET
            customer_id = excluded.customer_id,
            technician_id = excluded.technician_id,
            status = excluded.status,
            version = excluded.version,
            created_at = excluded.created_at,
            updated_at = excluded.updated_at,
            state = excluded.state
    )
    SELECT position FROM stored
"""  # noqa: S608 - the schema is a constant; every value is a bind parameter
_APPEND_PARAMETERS: Final = 18
_PARAMETER: Final = re.compile(r"\$(\d+)")


@dataclass(frozen=True, slots=True)
class StatementPart:
    """SQL a caller adds to the append's one statement; `$1`... are its `args`.

    As a `guard` it is a condition that must hold for anything to be written; as a
    `side_write` a data-modifying statement over the CTE `stored` (one row when the
    event is stored, none otherwise): `INSERT INTO t (...) SELECT $1, ... FROM stored`.
    """

    sql: str
    args: tuple[Any, ...]


def _shifted(sql: str, by: int) -> str:
    return _PARAMETER.sub(lambda m: f"${int(m[1]) + by}", sql)


@functools.lru_cache(maxsize=64)
def _append_statement(
    guard: str | None, guard_parameters: int, side: str | None
) -> str:
    """The append with a caller's guard and side write, numbered after its own."""
    statement = _APPEND
    offset = _APPEND_PARAMETERS
    checked = "TRUE"
    if guard is not None:
        checked = f"({_shifted(guard, offset)})"
        statement = statement.replace(
            "WHERE NOT EXISTS (", f"WHERE {checked} AND NOT EXISTS (", 1
        )
        offset += guard_parameters
    if side is not None:
        # SQL constants of the callers; every value is a bind parameter.
        side_cte = f", side AS (\n        {_shifted(side, offset)}\n    )"
        statement = statement.replace(
            "\n    SELECT position FROM stored",
            side_cte + "\n    SELECT position FROM stored",  # noqa: S608
        )
    return statement.replace(
        "SELECT position FROM stored\n",
        f"SELECT (SELECT position FROM stored) AS position, {checked} AS allowed\n",  # noqa: S608
    )


_SELECT_EVENT: Final = (
    f"SELECT envelope::text AS envelope, request_digest, position "  # noqa: S608
    f"FROM {EVENT_STORE_SCHEMA}.order_event"
)
_FIND: Final = f"{_SELECT_EVENT} WHERE event_id = $1"
_STREAM: Final = f"{_SELECT_EVENT} WHERE order_id = $1 ORDER BY version"
_VERSIONS_BETWEEN: Final = (
    f"{_SELECT_EVENT} WHERE order_id = $1 AND version > $2 AND version < $3 "
    "ORDER BY version"
)
# The order's stored state, and the event with this id wherever it is stored: what a
# write needs before it decides, in one round trip whatever the order's length.
_STATE_AND_EVENT: Final = (
    f"SELECT s.version, s.state::text AS state, "  # noqa: S608
    "e.envelope::text AS envelope, e.request_digest, e.position "
    "FROM (VALUES (1)) AS one (x) "
    f"LEFT JOIN {EVENT_STORE_SCHEMA}.order_summary AS s ON s.order_id = $1 "
    f"LEFT JOIN {EVENT_STORE_SCHEMA}.order_event AS e ON e.event_id = $2"
)
_STATE: Final = (
    f"SELECT version, state::text AS state "  # noqa: S608
    f"FROM {EVENT_STORE_SCHEMA}.order_summary WHERE order_id = $1"
)
_EVENT_ID_AT: Final = (
    f"SELECT event_id FROM {EVENT_STORE_SCHEMA}.order_event "  # noqa: S608
    "WHERE order_id = $1 AND version = $2"
)
_CURRENT_VERSION: Final = (
    f"SELECT coalesce(max(version), 0) FROM {EVENT_STORE_SCHEMA}.order_event "  # noqa: S608
    "WHERE order_id = $1"
)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as the store holds it: the domain event and its exact envelope."""

    event: OrderEvent
    envelope: dict[str, Any]
    request_digest: bytes
    position: int


@dataclass(frozen=True, slots=True)
class Appended:
    position: int


@dataclass(frozen=True, slots=True)
class NotAppended:
    """Nothing was written: the id is stored or refused, the version is taken, or
    the caller's guard did not hold (`guarded`)."""

    guarded: bool = False


async def append_event(
    conn: Driver,
    event: OrderEvent,
    *,
    envelope: dict[str, Any],
    request_digest: bytes,
    state: OrderState,
    refusals_since: datetime = EVER,
    value: bytes | None = None,
    guard: StatementPart | None = None,
    side_write: StatementPart | None = None,
) -> Appended | NotAppended:
    """Store one event, its outbox message and the order summary (caller's transaction).

    `state` is the order after the event (the summary shows it, the next write
    decides from it). A refusal of the same id remembered at or after
    `refusals_since` blocks it. `value` is `encode(envelope)` when the caller
    already has it (the canonical bytes: their digest is stored with the event). Nothing is written unless `guard` holds; `side_write` is
    written with the event, in the same statement (so in the same snapshot, and
    atomically without a transaction).
    """
    value = encode(envelope) if value is None else value
    extra: tuple[Any, ...] = ()
    statement = _APPEND
    if guard is not None or side_write is not None:
        statement = _append_statement(
            None if guard is None else guard.sql,
            0 if guard is None else len(guard.args),
            None if side_write is None else side_write.sql,
        )
        extra = (
            *(guard.args if guard else ()),
            *(side_write.args if side_write else ()),
        )
    row = await conn.fetchrow(
        statement,
        event.order_id,
        event.version,
        event.event_id,
        type(event.data).TYPE,
        event.time,
        event.recorded_at,
        str(event.actor),
        request_digest,
        value.decode(),
        ORDER_EVENTS,
        value,
        state.customer_id,
        state.technician_id,
        state.status.value,
        state.created_at,
        refusals_since,
        json.dumps(encode_state(state)),
        hashlib.sha256(value).digest(),
        *extra,
    )
    if row is None:
        return NotAppended()  # the plain statement returns no row then
    if row["position"] is not None:
        return Appended(row["position"])
    return NotAppended(guarded=len(row) > 1 and not row["allowed"])


def _stored(row: Any) -> StoredEvent:
    envelope_text: str = row["envelope"]
    return StoredEvent(
        event=to_order_event(Envelope.model_validate_json(envelope_text)),
        envelope=json.loads(envelope_text),
        request_digest=bytes(row["request_digest"]),
        position=row["position"],
    )


async def find_event(conn: Driver, event_id: UUID) -> StoredEvent | None:
    """The stored event with this id, if any."""
    row = await conn.fetchrow(_FIND, event_id)
    return None if row is None else _stored(row)


async def load_stream(conn: Driver, order_id: UUID) -> Sequence[StoredEvent]:
    """Every event of one order in version order."""
    return [_stored(row) for row in await conn.fetch(_STREAM, order_id)]


async def load_versions_between(
    conn: Driver, order_id: UUID, *, after: int, before: int
) -> Sequence[OrderEvent]:
    """The order's events with `after` < version < `before`, in version order."""
    rows = await conn.fetch(_VERSIONS_BETWEEN, order_id, after, before)
    return [_stored(row).event for row in rows]


def _decoded(version: int | None, state_json: str | None) -> OrderState | None:
    """The stored state if it is usable as it is, else None (rebuild it)."""
    if version is None or state_json is None:
        return None  # no summary, or one written before states were kept
    try:
        state = decode_state(json.loads(state_json))
    except StateFormatError:
        return None  # another format version: the stream says what it is
    # A writer that does not keep states (an older release during a rolling
    # deploy) moves the summary on without it: a stale state is never used.
    return state if state.version == version else None


async def rebuild_state(conn: Driver, order_id: UUID) -> OrderState | None:
    """The order folded from its whole stream (None when it has no events)."""
    return fold(s.event for s in await load_stream(conn, order_id))


async def load_state(conn: Driver, order_id: UUID) -> OrderState | None:
    """The order's current state: the stored one, rebuilt from the stream if need be.

    One round trip whatever the order's length, unless the state must be rebuilt.
    """
    row = await conn.fetchrow(_STATE, order_id)
    state = None if row is None else _decoded(row["version"], row["state"])
    return await rebuild_state(conn, order_id) if state is None else state


async def load_state_and_event(
    conn: Driver, order_id: UUID, event_id: UUID
) -> tuple[OrderState | None, StoredEvent | None]:
    """The order's state, or the event `event_id` if it is stored (any order's).

    When the event is stored the state is not read (None): the write is a retry.
    """
    row = await conn.fetchrow(_STATE_AND_EVENT, order_id, event_id)
    assert row is not None  # the VALUES row is always there
    if row["envelope"] is not None:
        return None, _stored(row)
    state = _decoded(row["version"], row["state"])
    if state is None:
        state = await rebuild_state(conn, order_id)
    return state, None


async def event_id_at(conn: Driver, order_id: UUID, version: int) -> UUID | None:
    """The id of the order's event at `version`, if there is one."""
    event_id: UUID | None = await conn.fetchval(_EVENT_ID_AT, order_id, version)
    return event_id


async def current_version(conn: Driver, order_id: UUID) -> int:
    """The order's latest version, 0 when it has no events."""
    return int(await conn.fetchval(_CURRENT_VERSION, order_id))


# One row per record, in record order (a batch may hold one id twice: a forgery and
# the real event). Only SELECT on order_event is needed: the ledger's role has no more.
_STORED_DIGESTS: Final = f"""
    SELECT e.order_id, e.version, e.canonical_digest
    FROM unnest($1::uuid[]) WITH ORDINALITY AS r(event_id, ordinal)
    LEFT JOIN {EVENT_STORE_SCHEMA}.order_event AS e ON e.event_id = r.event_id
    ORDER BY r.ordinal
"""  # noqa: S608 - the schema is a constant; every value is a bind parameter
# Events stored before digests were kept: their envelopes compared as JSON values.
_SAME_ENVELOPES: Final = f"""
    SELECT e.envelope = r.value::jsonb AS same_envelope
    FROM unnest($1::uuid[], $2::text[]) WITH ORDINALITY AS r(event_id, value, ordinal)
    JOIN {EVENT_STORE_SCHEMA}.order_event AS e ON e.event_id = r.event_id
    ORDER BY r.ordinal
"""  # noqa: S608 - the schema is a constant; every value is a bind parameter


def _canonical_if_stored(value: bytes, digest: bytes) -> bytes | None:
    """The record value's RFC 8785 bytes if they are the stored event's, else None.

    The writers publish the canonical bytes themselves, so one hash settles the
    usual case. Healing and `reconcile` re-queue PostgreSQL's rendering of the
    stored jsonb (other key order and whitespace): those are canonicalised first.
    """
    if hashlib.sha256(value).digest() == digest:
        return value
    try:
        canonical = canonical_from_json(value)
    except ValueError:
        return None  # not JSON RFC 8785 can write: not what the writers stored
    return canonical if hashlib.sha256(canonical).digest() == digest else None


async def match_stored(
    conn: Driver, records: Sequence[tuple[UUID, bytes]]
) -> list[StoredMatch | None]:
    """What the store holds under each (event id, record value); None: nothing.

    A record is the stored event if its canonical bytes hash to the stored digest:
    byte equality of what the ledger hashes, whatever spelling reached the topic.
    One query of 32-byte digests; events stored before digests were kept (NULL) are
    compared as JSON values in a second (jsonb equality ignores key order,
    whitespace and number spelling, but not types nor any string).
    `python -m bench.ledger.store_check` gives the cost per batch.

    Absent (None) means forged, not "not yet committed": the relay publishes only
    committed rows, and each READ COMMITTED statement sees every commit before it,
    provided this connection reads the primary the writers commit to (a lagging
    replica would make genuine events look forged).
    """
    if not records:
        return []
    rows = await conn.fetch(_STORED_DIGESTS, [event_id for event_id, _ in records])
    matches: list[StoredMatch | None] = []
    legacy: list[int] = []
    for index, ((_, value), (order_id, version, digest)) in enumerate(
        zip(records, rows, strict=True)
    ):
        if order_id is None:
            matches.append(None)
        elif digest is None:
            legacy.append(index)
            matches.append(StoredMatch(order_id, version, False))
        else:
            canonical = _canonical_if_stored(value, digest)
            matches.append(
                StoredMatch(order_id, version, canonical is not None, canonical)
            )
    if legacy:
        same = await conn.fetch(
            _SAME_ENVELOPES,
            [records[i][0] for i in legacy],
            [records[i][1].decode() for i in legacy],
        )
        for index, (same_envelope,) in zip(legacy, same, strict=True):
            match = matches[index]
            assert match is not None
            matches[index] = StoredMatch(match.order_id, match.version, same_envelope)
    return matches
