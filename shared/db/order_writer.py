"""Appending one event to an order: the use case shared by intake and dispatch.

The happy path is two round trips: read the stream (and the event, if its id is
already stored anywhere), `decide`, then one statement that writes the event, its
outbox message and the order summary unless the id is taken or was refused before.
A refusal (4xx) is remembered durably by event id, so re-sending that id within the
refusal retention gets the same answer even if the order has moved on (a new attempt
needs a new id).

Only decisions about the event are refusals. A write without `expected_version`
that loses the version race to another write was never decided on the state it
would follow: it is decided again on the new state (a bounded number of times) and
the lost race itself is never remembered.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final
from uuid import UUID

from pydantic import ValidationError
from sqlalchemy import Column, DateTime, LargeBinary, Table, Text, Uuid
from sqlalchemy.dialects.postgresql import JSONB

from shared.db.base import EVENT_STORE_SCHEMA, metadata
from shared.db.engine import Driver, DriverPool
from shared.db.event_store import (
    EVER,
    Appended,
    StoredEvent,
    SummaryValues,
    append_event,
    current_version,
    find_event,
    load_stream_and_event,
)
from shared.domain import errors
from shared.domain.lifecycle import (
    OrderState,
    ProposedEvent,
    check_access,
    decide,
    evolve,
    fold,
)
from shared.domain.rules import Policy
from shared.events.envelope import encode, parse_envelope, to_cloudevent, to_order_event

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
# How many times a write without expected_version is decided before a lost race is
# answered with 409: each lost race means another write was stored, so five in a
# row is contention worth telling the client about.
MAX_DECISIONS: Final = 5
DEFAULT_REFUSAL_RETENTION: Final = timedelta(days=30)

_ERROR_TYPES: Final[dict[str, type[errors.DomainError]]] = {}


def _error_types() -> dict[str, type[errors.DomainError]]:
    """Every DomainError subclass by code, to re-raise a remembered refusal."""
    if not _ERROR_TYPES:
        pending: list[type[errors.DomainError]] = [errors.DomainError]
        while pending:
            cls = pending.pop()
            _ERROR_TYPES.setdefault(cls.code, cls)
            pending.extend(cls.__subclasses__())
    return _ERROR_TYPES


def _rebuild_refusal(
    code: str, detail: str, extra: dict[str, Any]
) -> errors.DomainError:
    cls = _error_types().get(code, errors.DomainError)
    if cls is errors.VersionConflict:
        return errors.VersionConflict(
            detail, current_version=int(extra["current_version"])
        )
    return cls(detail)


def _refusal_extra(err: errors.DomainError) -> dict[str, Any]:
    if isinstance(err, errors.VersionConflict):
        return {"current_version": err.current_version}
    return {}


class LostRace(errors.VersionConflict):
    """Another write took the version this one was decided for: not a decision."""


def _readable(envelope: dict[str, Any]) -> bytes:
    """The bytes to publish, once a consumer's own model has read them back.

    What a consumer would refuse is refused here, before anything is stored.
    """
    value = encode(envelope)
    try:
        to_order_event(parse_envelope(value))
    except ValidationError as err:
        fields = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
        )
        raise errors.UnreadableEvent(
            f"the event would not be readable by its consumers ({fields})"
        ) from None
    except (ValueError, errors.DomainError) as err:
        raise errors.UnreadableEvent(
            f"the event would not be readable by its consumers ({err})"
        ) from None
    return value


@dataclass(frozen=True, slots=True)
class Recorded:
    """The answer to an append: the stored envelope, and whether it was a retry.

    `state` is the order after the event; None for a retry, which reads nothing more.
    """

    envelope: dict[str, Any]
    order_id: UUID
    version: int
    state: OrderState | None
    duplicate: bool


AfterAppend = Callable[[Driver], Awaitable[None]]


def _summary(state: OrderState) -> SummaryValues:
    return SummaryValues(
        customer_id=state.customer_id,
        technician_id=state.technician_id,
        status=state.status.value,
        created_at=state.created_at,
    )


def _retry_answer(stored: StoredEvent, request_digest: bytes) -> Recorded:
    if stored.request_digest != request_digest:
        raise errors.DuplicateEventConflict(
            f"event id {stored.event.event_id} was already used for a different request"
        )
    return Recorded(
        stored.envelope, stored.event.order_id, stored.event.version, None, True
    )


class OrderWriter:
    """Appends events for one service (`source` names it in every envelope)."""

    def __init__(
        self,
        pool: DriverPool,
        *,
        policy: Policy,
        source: str,
        refusal_retention: timedelta = DEFAULT_REFUSAL_RETENTION,
    ) -> None:
        self._pool = pool
        self._policy = policy
        self._source = source
        self._refusal_retention = refusal_retention

    async def append(
        self,
        proposed: ProposedEvent,
        *,
        order_id: UUID,
        request_digest: bytes,
        now: datetime,
        expected_version: int | None = None,
        traceparent: str | None = None,
        new_order: bool = False,
        time_from_server: bool = False,
        after_append: AfterAppend | None = None,
    ) -> Recorded:
        """Append, each decision in a transaction of its own; remember a refusal.

        Without `expected_version` a lost version race is decided again on the new
        state, up to MAX_DECISIONS times; the last lost race is a 409 that is not
        remembered, so a retry of the same id is decided afresh.
        """

        async def decide_once() -> Recorded:
            return await self._append_once(
                proposed,
                order_id=order_id,
                request_digest=request_digest,
                now=now,
                expected_version=expected_version,
                traceparent=traceparent,
                new_order=new_order,
                time_from_server=time_from_server,
                after_append=after_append,
            )

        redecisions = MAX_DECISIONS - 1 if expected_version is None else 0
        for _ in range(redecisions):
            with contextlib.suppress(LostRace):
                return await decide_once()
        return await decide_once()

    async def _append_once(
        self,
        proposed: ProposedEvent,
        *,
        order_id: UUID,
        request_digest: bytes,
        now: datetime,
        expected_version: int | None,
        traceparent: str | None,
        new_order: bool,
        time_from_server: bool,
        after_append: AfterAppend | None,
    ) -> Recorded:
        async with self._pool.acquire() as conn:
            try:
                async with conn.transaction():
                    return await self.append_in(
                        conn,
                        proposed,
                        order_id=order_id,
                        request_digest=request_digest,
                        now=now,
                        expected_version=expected_version,
                        traceparent=traceparent,
                        new_order=new_order,
                        time_from_server=time_from_server,
                        after_append=after_append,
                    )
            except (errors.DuplicateEventConflict, errors.UnreadableEvent):
                # About the id itself, or a server bug: not a decision to remember.
                raise
            except errors.DomainError as err:
                if isinstance(err, LostRace) and expected_version is None:
                    raise  # no decision was made on the state it would follow
                answer = await self._refusal(
                    conn, proposed.event_id, request_digest, err, now
                )
                if answer is err:
                    raise
                raise answer from None

    async def append_in(
        self,
        conn: Driver,
        proposed: ProposedEvent,
        *,
        order_id: UUID,
        request_digest: bytes,
        now: datetime,
        expected_version: int | None = None,
        traceparent: str | None = None,
        new_order: bool = False,
        time_from_server: bool = False,
        after_append: AfterAppend | None = None,
    ) -> Recorded:
        """Append inside the caller's transaction (which must roll back on error).

        `time_from_server`: the caller gave no `time`, so the event happens now but
        never before the order's previous event (a device's may be up to the clock
        skew ahead of ours).
        """
        state: OrderState | None = None
        if not new_order:
            stream, known = await load_stream_and_event(
                conn, order_id, proposed.event_id
            )
            if known is not None:
                return _retry_answer(known, request_digest)
            state = fold(s.event for s in stream)
            if state is None:
                raise errors.OrderNotFound(f"order {order_id} not found")
            if time_from_server and proposed.time < state.last_event_at:
                proposed = replace(proposed, time=state.last_event_at)
        check_access(state, proposed)
        current = 0 if state is None else state.version
        if expected_version is not None and expected_version != current:
            raise errors.VersionConflict(
                f"expected version {expected_version}, the order is at {current}",
                current_version=current,
            )
        event = decide(
            state,
            proposed,
            policy=self._policy,
            now=now,
            order_id=order_id if new_order else None,
        )
        new_state = evolve(state, event)
        envelope = to_cloudevent(event, source=self._source, traceparent=traceparent)
        outcome = await append_event(
            conn,
            event,
            envelope=envelope,
            request_digest=request_digest,
            summary=_summary(new_state),
            refusals_since=self._remembered_since(now),
            value=_readable(envelope),
        )
        if isinstance(outcome, Appended):
            if after_append is not None:
                await after_append(conn)
            return Recorded(envelope, order_id, event.version, new_state, False)
        return await self._explain_not_appended(
            conn, proposed.event_id, order_id, request_digest, now
        )

    async def forget_old_refusals(self, now: datetime) -> int:
        """Delete refusals past the retention (they no longer answer anyway)."""
        async with self._pool.acquire() as conn:
            status = await conn.execute(_FORGET_REFUSALS, self._remembered_since(now))
        return int(status.rsplit(" ", 1)[-1])

    def _remembered_since(self, now: datetime) -> datetime:
        # Total: a retention longer than the calendar remembers everything.
        try:
            return now - self._refusal_retention
        except OverflowError:
            return EVER

    async def _explain_not_appended(
        self,
        conn: Driver,
        event_id: UUID,
        order_id: UUID,
        request_digest: bytes,
        now: datetime,
    ) -> Recorded:
        """Nothing was written: a retry, a remembered refusal, or a lost race."""
        stored = await find_event(conn, event_id)
        if stored is not None:
            return _retry_answer(stored, request_digest)
        await self._raise_remembered(conn, event_id, request_digest, now)
        taken = await current_version(conn, order_id)
        raise LostRace(
            f"another write reached order {order_id} first (now at {taken})",
            current_version=taken,
        )

    async def _raise_remembered(
        self, conn: Driver, event_id: UUID, request_digest: bytes, now: datetime
    ) -> None:
        refusal = await conn.fetchrow(
            _FIND_REFUSAL, event_id, self._remembered_since(now)
        )
        if refusal is None:
            return
        if bytes(refusal["request_digest"]) != request_digest:
            raise errors.DuplicateEventConflict(
                f"event id {event_id} was already used for a different request"
            )
        raise _rebuild_refusal(
            refusal["code"], refusal["detail"], json.loads(refusal["extra"])
        )

    async def _refusal(
        self,
        conn: Driver,
        event_id: UUID,
        request_digest: bytes,
        err: errors.DomainError,
        now: datetime,
    ) -> errors.DomainError:
        """The answer to give for a refused id: the first one given, kept durably."""
        try:
            await self._raise_remembered(conn, event_id, request_digest, now)
        except errors.DomainError as remembered:
            return remembered
        await conn.execute(
            _REMEMBER_REFUSAL,
            event_id,
            request_digest,
            err.code,
            err.detail,
            json.dumps(_refusal_extra(err)),
            now,
            self._remembered_since(now),
        )
        return err
