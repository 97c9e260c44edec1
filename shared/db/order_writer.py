"""Appending one event to an order: the use case shared by intake and dispatch.

The happy path is two round trips: read the stream (and the event, if its id is
already stored anywhere), `decide`, then one statement that writes the event, its
outbox message and the order summary unless the id is taken or was refused before.
A refusal (4xx) is remembered durably by event id, so re-sending that id later gets
the same answer even if the order has moved on (a new attempt needs a new id).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from uuid import UUID

from sqlalchemy import Column, DateTime, LargeBinary, Table, Text, Uuid
from sqlalchemy.dialects.postgresql import JSONB

from shared.db.base import EVENT_STORE_SCHEMA, metadata
from shared.db.engine import Driver, DriverPool
from shared.db.event_store import (
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
from shared.events.envelope import to_cloudevent

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

_FIND_REFUSAL: Final = (
    f"SELECT request_digest, code, detail, extra::text AS extra "  # noqa: S608
    f"FROM {EVENT_STORE_SCHEMA}.refused_event WHERE event_id = $1"
)
_REMEMBER_REFUSAL: Final = (
    f"INSERT INTO {EVENT_STORE_SCHEMA}.refused_event "  # noqa: S608
    "(event_id, request_digest, code, detail, extra, refused_at) "
    "VALUES ($1, $2, $3, $4, $5::jsonb, $6) ON CONFLICT DO NOTHING"
)

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

    def __init__(self, pool: DriverPool, *, policy: Policy, source: str) -> None:
        self._pool = pool
        self._policy = policy
        self._source = source

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
        after_append: AfterAppend | None = None,
    ) -> Recorded:
        """Append in a transaction of its own; remember a refusal durably."""
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
                        after_append=after_append,
                    )
            except errors.DuplicateEventConflict:
                raise  # about the id itself, not a decision to remember
            except errors.DomainError as err:
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
        after_append: AfterAppend | None = None,
    ) -> Recorded:
        """Append inside the caller's transaction (which must roll back on error)."""
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
        )
        if isinstance(outcome, Appended):
            if after_append is not None:
                await after_append(conn)
            return Recorded(envelope, order_id, event.version, new_state, False)
        return await self._explain_not_appended(
            conn, proposed.event_id, order_id, request_digest
        )

    async def _explain_not_appended(
        self, conn: Driver, event_id: UUID, order_id: UUID, request_digest: bytes
    ) -> Recorded:
        """Nothing was written: a retry, a remembered refusal, or a lost race."""
        stored = await find_event(conn, event_id)
        if stored is not None:
            return _retry_answer(stored, request_digest)
        await self._raise_remembered(conn, event_id, request_digest)
        taken = await current_version(conn, order_id)
        raise errors.VersionConflict(
            f"another write reached order {order_id} first (now at {taken})",
            current_version=taken,
        )

    @staticmethod
    async def _raise_remembered(
        conn: Driver, event_id: UUID, request_digest: bytes
    ) -> None:
        refusal = await conn.fetchrow(_FIND_REFUSAL, event_id)
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
            await self._raise_remembered(conn, event_id, request_digest)
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
        )
        return err
