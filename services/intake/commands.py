"""Intake use cases: one explicit transaction each, answered only after commit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy.ext.asyncio import AsyncEngine

from services.intake import store
from services.intake.schemas import CreateOrderRequest
from shared.db.event_store import AlreadyStored, Appended, VersionTaken, append_event
from shared.domain.actors import Actor, Role
from shared.domain.errors import (
    ActorNotAllowed,
    DuplicateEventConflict,
    VersionConflict,
)
from shared.domain.events import Created
from shared.domain.lifecycle import ProposedEvent, decide
from shared.domain.rules import Policy
from shared.events.canonical import canonical_digest
from shared.events.envelope import to_cloudevent
from shared.events.topics import SOURCE_INTAKE
from shared.http.problems import Problem


@dataclass(frozen=True, slots=True)
class OrderCreated:
    order_id: UUID
    version: int
    envelope: dict[str, Any]
    duplicate: bool


def _customer_of(request: CreateOrderRequest, actor: Actor) -> str:
    if actor.role is Role.CUSTOMER:
        if request.customer_id not in (None, actor.id):
            raise ActorNotAllowed("A customer can only create orders for themselves.")
        return actor.id
    if request.customer_id is None:
        raise Problem(
            422,
            "validation_error",
            "customer_id is required when a dispatcher or admin creates an order.",
            errors=[{"field": "customer_id", "message": "Field required"}],
        )
    return request.customer_id


async def create_order(
    engine: AsyncEngine,
    request: CreateOrderRequest,
    *,
    actor: Actor,
    policy: Policy,
    now: datetime,
    traceparent: str | None = None,
) -> OrderCreated:
    """Store `created` (and the contact) atomically; a retry returns the stored event."""
    if (request.contact is None) == (request.contact_ref is None):
        raise Problem(
            422,
            "validation_error",
            "Give exactly one of `contact` and `contact_ref`.",
            errors=[{"field": "contact", "message": "contact or contact_ref required"}],
        )
    customer_id = _customer_of(request, actor)
    # Who asks is part of the request: another caller replaying the same id and
    # body must get a conflict, never the first caller's order.
    digest = canonical_digest(
        {
            **request.model_dump(mode="json"),
            "customer_id": customer_id,
            "actor": str(actor),
        }
    )
    async with engine.connect() as conn:
        transaction = await conn.begin()
        contact_ref = request.contact_ref
        if request.contact is not None:
            ref = await store.insert_contact(
                conn,
                customer_id=customer_id,
                name=request.contact.name,
                phone=request.contact.phone,
                address=request.contact.address,
                created_at=now,
            )
            contact_ref = str(ref)
        assert contact_ref is not None
        proposed = ProposedEvent(
            event_id=request.id or uuid4(),
            time=request.time or now,
            actor=actor,
            data=Created(
                customer_id=customer_id,
                category=request.category,
                region=request.region,
                urgency=request.urgency,
                description=request.description,
                warranty=request.warranty,
                channel=request.channel,
                contact_ref=contact_ref,
            ),
        )
        event = decide(None, proposed, policy=policy, now=now, order_id=uuid4())
        envelope = to_cloudevent(event, source=SOURCE_INTAKE, traceparent=traceparent)
        outcome = await append_event(
            conn, event, envelope=envelope, request_digest=digest
        )
        match outcome:
            case Appended():
                await transaction.commit()
                return OrderCreated(
                    event.order_id, event.version, envelope, duplicate=False
                )
            case AlreadyStored(stored=stored, same_request=True):
                # A retry: the first attempt's contact row is the one that counts.
                await transaction.rollback()
                return OrderCreated(
                    stored.event.order_id,
                    stored.event.version,
                    stored.envelope,
                    duplicate=True,
                )
            case AlreadyStored():
                await transaction.rollback()
                raise DuplicateEventConflict(
                    f"Event id {proposed.event_id} was already used for a different request."
                )
            case VersionTaken(current_version=current):
                await transaction.rollback()
                raise VersionConflict(
                    "The order already exists.", current_version=current
                )
