"""One write to an order, as the use case takes it, and the answer it gives."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias
from uuid import UUID

from shared.db.engine import Driver
from shared.domain.lifecycle import OrderState, ProposedEvent

# Runs in the append's transaction once the event is stored (intake's contact vault).
AfterAppend: TypeAlias = Callable[[Driver], Awaitable[None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendRequest:
    """Everything one append needs.

    Attributes:
        proposed: the event to decide on.
        order_id: the order it is for (a fresh id with `new_order`).
        request_digest: what makes two requests with one event id "the same".
        now: the server's clock; the event's `recorded_at`.
        expected_version: the version the client last saw; None to take any (a
            lost race is then decided again on the new state).
        traceparent: W3C trace context to carry in the envelope.
        new_order: the event is the `created` of a new order.
        time_from_server: the client gave no `time`: the event happens `now`, but
            never before the order's previous event (a device's clock may be up to
            the skew ahead of ours).
        after_append: more work in the same transaction once the event is stored.
    """

    proposed: ProposedEvent
    order_id: UUID
    request_digest: bytes
    now: datetime
    expected_version: int | None = None
    traceparent: str | None = None
    new_order: bool = False
    time_from_server: bool = False
    after_append: AfterAppend | None = None


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
