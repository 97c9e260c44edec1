"""Appending one event to an order: the use case shared by intake and dispatch.

The happy path is two round trips whatever the order's length, one for a new order,
and no transaction: read the order's stored state (and the event, if its id is
already stored anywhere), `decide`, then one statement that writes the event, its
outbox message, the order summary with the new state and the request's own side
write (intake's contact), unless the id is taken, was refused before or the
request's guard does not hold. The full stream is
read only to rebuild a state that is missing or of another format.

A refusal (4xx) is remembered durably by event id (shared.db.refusals).

Only decisions about the event are refusals. A write without `expected_version`
that loses the version race to another write was never decided on the state it
would follow: it is decided again on the new state (a bounded number of times) and
the lost race itself is never remembered.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Final
from uuid import UUID

from opentelemetry.trace import Span, StatusCode, Tracer
from pydantic import ValidationError

from shared.db.engine import Driver, DriverPool
from shared.db.event_store import (
    EVER,
    Appended,
    NotAppended,
    StoredEvent,
    append_event,
    current_version,
    find_event,
    load_state,
    load_state_and_event,
)
from shared.db.refusals import (
    Refusal,
    find_refusal,
    forget_refusals,
    remember_refusal,
)
from shared.domain import errors
from shared.domain.events import full_type
from shared.domain.lifecycle import OrderState, check_access, decide, evolve
from shared.domain.rules import Policy
from shared.events.envelope import encode, parse_envelope, to_cloudevent, to_order_event
from shared.orders.request import AppendRequest, Recorded
from shared.tracing import traceparent_of

# How many times a write without expected_version is decided before a lost race is
# answered with 409: each lost race means another write was stored, so five in a
# row is contention worth telling the client about.
MAX_DECISIONS: Final = 5
DEFAULT_REFUSAL_RETENTION: Final = timedelta(days=30)
APPEND_SPAN: Final = "event_store.append"

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


def _rebuild_refusal(refusal: Refusal) -> errors.DomainError:
    cls = _error_types().get(refusal.code, errors.DomainError)
    if cls is errors.VersionConflict:
        return errors.VersionConflict(
            refusal.detail, current_version=int(refusal.extra["current_version"])
        )
    return cls(refusal.detail)


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
    try:
        value = encode(envelope)
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


def _describe(span: Span, recorded: Recorded) -> None:
    span.set_attribute("servicetrail.order_version", recorded.version)
    span.set_attribute("servicetrail.duplicate", recorded.duplicate)


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
        tracer: Tracer | None = None,
    ) -> None:
        self._pool = pool
        self._tracer = tracer
        # asyncpg hands a released connection to whichever task asks first, and a
        # woken waiter that finds it taken queues again at the back: at 64
        # connections on a pool of 10, half the posts waited 0 ms and 1% over
        # 900 ms. Waiting here first, in arrival order, for one of the pool's
        # places makes the wait first come, first served.
        self._turns = asyncio.Semaphore(pool.get_max_size())
        self._policy = policy
        self._source = source
        self._refusal_retention = refusal_retention

    async def append(self, request: AppendRequest) -> Recorded:
        """Append, each decision on the state it read; remember a refusal.

        Without `expected_version` a lost version race is decided again on the new
        state, up to MAX_DECISIONS times; the last lost race is a 409 that is not
        remembered, so a retry of the same id is decided afresh.
        """
        redecisions = MAX_DECISIONS - 1 if request.expected_version is None else 0
        for _ in range(redecisions):
            with contextlib.suppress(LostRace):
                return await self._append_once(request)
        return await self._append_once(request)

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Driver]:
        """A pooled connection, handed out in the order the callers asked."""
        async with self._turns, self._pool.acquire() as conn:
            yield conn

    async def find_state(self, order_id: UUID) -> OrderState | None:
        """The order's current state (None when it has no events)."""
        async with self._connection() as conn:
            return await load_state(conn, order_id)

    async def _append_once(self, request: AppendRequest) -> Recorded:
        async with self._connection() as conn:
            try:
                # The append is one statement, atomic on its own, and the read before
                # it needs no snapshot (the primary key catches a race): no BEGIN and
                # COMMIT, two round trips fewer.
                return await self.append_in(conn, request)
            except (errors.DuplicateEventConflict, errors.UnreadableEvent):
                # About the id itself, or a server bug: not a decision to remember.
                raise
            except errors.DomainError as err:
                if isinstance(err, LostRace) and request.expected_version is None:
                    raise  # no decision was made on the state it would follow
                answer = await self._refusal(conn, request, err)
                if answer is err:
                    raise
                raise answer from None

    async def append_in(self, conn: Driver, request: AppendRequest) -> Recorded:
        """Append on the caller's connection, in its transaction if it has one.

        The only write is the append's one statement. Traced, the append is a span
        (a child of the request's or the consumed record's) and the event stores its
        context as `traceparent`, which the relay's publish continues.
        """
        if self._tracer is None:
            return await self._append_in(conn, request)
        with self._tracer.start_as_current_span(
            APPEND_SPAN,
            attributes={
                "servicetrail.order_id": str(request.order_id),
                "cloudevents.event_id": str(request.proposed.event_id),
                "cloudevents.event_type": full_type(type(request.proposed.data)),
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            traced = replace(
                request, traceparent=traceparent_of(span) or request.traceparent
            )
            try:
                recorded = await self._append_in(conn, traced)
            except errors.DomainError as err:
                # A refusal is an answer, not a failure of the append.
                span.set_attribute("servicetrail.refusal", err.code)
                raise
            except Exception as err:
                span.record_exception(err)
                span.set_status(StatusCode.ERROR, type(err).__name__)
                raise
            _describe(span, recorded)
            return recorded

    async def _append_in(self, conn: Driver, request: AppendRequest) -> Recorded:
        proposed = request.proposed
        state: OrderState | None = None
        if not request.new_order:
            state, known = await load_state_and_event(
                conn, request.order_id, proposed.event_id
            )
            if known is not None:
                return _retry_answer(known, request.request_digest)
            if state is None:
                raise errors.OrderNotFound(f"order {request.order_id} not found")
            if request.time_from_server and proposed.time < state.last_event_at:
                proposed = replace(proposed, time=state.last_event_at)
        check_access(state, proposed)
        current = 0 if state is None else state.version
        expected = request.expected_version
        if expected is not None and expected != current:
            raise errors.VersionConflict(
                f"expected version {expected}, the order is at {current}",
                current_version=current,
            )
        event = decide(
            state,
            proposed,
            policy=self._policy,
            now=request.now,
            order_id=request.order_id if request.new_order else None,
        )
        new_state = evolve(state, event)
        envelope = to_cloudevent(
            event, source=self._source, traceparent=request.traceparent
        )
        outcome = await append_event(
            conn,
            event,
            envelope=envelope,
            request_digest=request.request_digest,
            state=new_state,
            refusals_since=self._remembered_since(request.now),
            value=_readable(envelope),
            guard=None if request.guard is None else request.guard.condition,
            side_write=request.side_write,
        )
        if isinstance(outcome, Appended):
            return Recorded(envelope, request.order_id, event.version, new_state, False)
        return await self._explain_not_appended(conn, request, outcome)

    async def forget_old_refusals(self, now: datetime) -> int:
        """Delete refusals past the retention (they no longer answer anyway)."""
        async with self._connection() as conn:
            return await forget_refusals(conn, before=self._remembered_since(now))

    def _remembered_since(self, now: datetime) -> datetime:
        # Total: a retention longer than the calendar remembers everything.
        try:
            return now - self._refusal_retention
        except OverflowError:
            return EVER

    async def _explain_not_appended(
        self, conn: Driver, request: AppendRequest, outcome: NotAppended
    ) -> Recorded:
        """Nothing was written: a retry, a remembered refusal, the request's guard
        failed, or a lost race."""
        stored = await find_event(conn, request.proposed.event_id)
        if stored is not None:
            return _retry_answer(stored, request.request_digest)
        await self._raise_remembered(conn, request)
        if outcome.guarded and request.guard is not None:
            raise request.guard.refusal
        taken = await current_version(conn, request.order_id)
        raise LostRace(
            f"another write reached order {request.order_id} first (now at {taken})",
            current_version=taken,
        )

    async def _raise_remembered(self, conn: Driver, request: AppendRequest) -> None:
        event_id = request.proposed.event_id
        refusal = await find_refusal(
            conn, event_id, since=self._remembered_since(request.now)
        )
        if refusal is None:
            return
        if refusal.request_digest != request.request_digest:
            raise errors.DuplicateEventConflict(
                f"event id {event_id} was already used for a different request"
            )
        raise _rebuild_refusal(refusal)

    async def _refusal(
        self, conn: Driver, request: AppendRequest, err: errors.DomainError
    ) -> errors.DomainError:
        """The answer to give for a refused id: the first one given, kept durably."""
        try:
            await self._raise_remembered(conn, request)
        except errors.DomainError as remembered:
            return remembered
        await remember_refusal(
            conn,
            request.proposed.event_id,
            Refusal(request.request_digest, err.code, err.detail, _refusal_extra(err)),
            now=request.now,
            replaces_before=self._remembered_since(request.now),
        )
        return err
