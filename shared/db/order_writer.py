"""Appending one event to an order: the use case shared by intake and dispatch.

In one transaction: answer a known event id from the store (a retry gets the stored
event, a reused id a conflict), answer a remembered refusal the same way again, load
and fold the stream, check `expected_version`, `decide`, append the event with its
outbox message, and update the order summary that listings read. A refusal (4xx) is
remembered durably by event id in its own transaction, so re-sending that id later
gets the same answer even if the order has moved on (a new attempt needs a new id).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from uuid import UUID

from sqlalchemy import Column, DateTime, LargeBinary, Table, Text, Uuid, select
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.db.base import EVENT_STORE_SCHEMA, metadata
from shared.db.event_store import (
    AlreadyStored,
    Appended,
    StoredEvent,
    VersionTaken,
    append_event,
    find_event,
    load_stream,
)
from shared.db.order_summary import order_summary
from shared.domain import errors
from shared.domain.lifecycle import OrderState, ProposedEvent, decide, evolve, fold
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


BeforeAppend = Callable[[AsyncConnection], Awaitable[None]]


class OrderWriter:
    """Appends events for one service (`source` names it in every envelope)."""

    def __init__(self, engine: AsyncEngine, *, policy: Policy, source: str) -> None:
        self._engine = engine
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
        before_append: BeforeAppend | None = None,
    ) -> Recorded:
        """Append in a transaction of its own; remember a refusal durably."""
        try:
            async with self._engine.begin() as conn:
                return await self.append_in(
                    conn,
                    proposed,
                    order_id=order_id,
                    request_digest=request_digest,
                    now=now,
                    expected_version=expected_version,
                    traceparent=traceparent,
                    new_order=new_order,
                    before_append=before_append,
                )
        except errors.DuplicateEventConflict:
            raise  # about the id itself, not a decision to remember
        except errors.DomainError as err:
            await self._remember_refusal(proposed.event_id, request_digest, err, now)
            raise

    async def append_in(
        self,
        conn: AsyncConnection,
        proposed: ProposedEvent,
        *,
        order_id: UUID,
        request_digest: bytes,
        now: datetime,
        expected_version: int | None = None,
        traceparent: str | None = None,
        new_order: bool = False,
        before_append: BeforeAppend | None = None,
    ) -> Recorded:
        """Append inside the caller's transaction (which must roll back on error)."""
        known = await self._known_answer(conn, proposed.event_id, request_digest)
        if known is not None:
            return known
        stream = (
            [] if new_order else [s.event for s in await load_stream(conn, order_id)]
        )
        state = fold(stream)
        if state is None and not new_order:
            raise errors.OrderNotFound(f"order {order_id} not found")
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
        if before_append is not None:
            await before_append(conn)
        envelope = to_cloudevent(event, source=self._source, traceparent=traceparent)
        outcome = await append_event(
            conn, event, envelope=envelope, request_digest=request_digest
        )
        match outcome:
            case Appended():
                new_state = evolve(state, event)
                await self._update_summary(conn, new_state, now)
                return Recorded(envelope, order_id, event.version, new_state, False)
            case AlreadyStored(stored=stored, same_request=same):
                # The same id won a race in another transaction a moment ago.
                return self._retry_answer(stored, same)
            case VersionTaken(current_version=taken):
                raise errors.VersionConflict(
                    f"another write reached order {order_id} first (now at {taken})",
                    current_version=taken,
                )

    async def _known_answer(
        self, conn: AsyncConnection, event_id: UUID, request_digest: bytes
    ) -> Recorded | None:
        stored = await find_event(conn, event_id)
        if stored is not None:
            return self._retry_answer(stored, stored.request_digest == request_digest)
        refusal = (
            await conn.execute(
                select(refused_event).where(refused_event.c.event_id == event_id)
            )
        ).one_or_none()
        if refusal is None:
            return None
        if bytes(refusal.request_digest) != request_digest:
            raise errors.DuplicateEventConflict(
                f"event id {event_id} was already used for a different request"
            )
        raise _rebuild_refusal(refusal.code, refusal.detail, dict(refusal.extra))

    @staticmethod
    def _retry_answer(stored: StoredEvent, same_request: bool) -> Recorded:
        if not same_request:
            raise errors.DuplicateEventConflict(
                f"event id {stored.event.event_id} was already used for a different request"
            )
        return Recorded(
            stored.envelope, stored.event.order_id, stored.event.version, None, True
        )

    @staticmethod
    async def _update_summary(
        conn: AsyncConnection, state: OrderState, now: datetime
    ) -> None:
        values = {
            "order_id": state.order_id,
            "customer_id": state.customer_id,
            "technician_id": state.technician_id,
            "status": state.status.value,
            "version": state.version,
            "created_at": state.created_at,
            "updated_at": now,
        }
        statement = insert(order_summary).values(values)
        await conn.execute(
            statement.on_conflict_do_update(
                index_elements=["order_id"],
                set_={k: statement.excluded[k] for k in values if k != "order_id"},
            )
        )

    async def _remember_refusal(
        self,
        event_id: UUID,
        request_digest: bytes,
        err: errors.DomainError,
        now: datetime,
    ) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(refused_event)
                .values(
                    event_id=event_id,
                    request_digest=request_digest,
                    code=err.code,
                    detail=err.detail,
                    extra=json.loads(json.dumps(_refusal_extra(err))),
                    refused_at=now,
                )
                .on_conflict_do_nothing()
            )
