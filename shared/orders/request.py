"""One write to an order, as the use case takes it, and the answer it gives."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from shared.db.event_store import StatementPart
from shared.domain.errors import DomainError
from shared.domain.lifecycle import OrderState, ProposedEvent


@dataclass(frozen=True, slots=True)
class Guard:
    """A condition checked in the append's statement; `refusal` when it fails."""

    condition: StatementPart
    refusal: DomainError


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
        guard: nothing is written unless it holds (intake: the vault holds the
            customer's `contact_ref`); its refusal is remembered like any other.
        side_write: written with the event in the append's one statement, never
            without it (intake's contact vault).
    """

    proposed: ProposedEvent
    order_id: UUID
    request_digest: bytes
    now: datetime
    expected_version: int | None = None
    traceparent: str | None = None
    new_order: bool = False
    time_from_server: bool = False
    guard: Guard | None = None
    side_write: StatementPart | None = None


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
