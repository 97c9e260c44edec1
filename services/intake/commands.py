"""Intake use cases: one explicit transaction each, answered only after commit."""

from __future__ import annotations

from datetime import datetime
from typing import Final
from uuid import UUID, uuid4

from sqlalchemy.ext.asyncio import AsyncEngine

from services.intake import store
from services.intake.schemas import CreateOrderRequest
from shared.domain.actors import Actor, Role
from shared.domain.errors import (
    ActorNotAllowed,
    FieldError,
    InvalidRequest,
    UnknownContactRef,
)
from shared.domain.events import (
    Cancelled,
    ComplaintFiled,
    Created,
    QuoteApproved,
    QuoteRejected,
    Rated,
    Reopened,
)
from shared.domain.lifecycle import ProposedEvent
from shared.events.canonical import fingerprint
from shared.orders.posts import EventPost, TakenPosts, post_request
from shared.orders.request import AppendRequest, Guard, Recorded
from shared.orders.writer import OrderWriter

# What intake takes posts of: the customer's own decisions about an order.
CUSTOMER_POSTS: Final = TakenPosts(
    service="intake",
    types=frozenset(
        cls.TYPE
        for cls in (
            Cancelled,
            QuoteApproved,
            QuoteRejected,
            Rated,
            Reopened,
            ComplaintFiled,
        )
    ),
)


def _customer_of(request: CreateOrderRequest, actor: Actor) -> str:
    if actor.role is Role.CUSTOMER:
        if request.customer_id not in (None, actor.id):
            raise ActorNotAllowed("A customer can only create orders for themselves.")
        return actor.id
    if request.customer_id is None:
        raise InvalidRequest(
            "customer_id is required when a dispatcher or admin creates an order.",
            errors=(FieldError("customer_id", "Field required"),),
        )
    return request.customer_id


async def create_order(
    writer: OrderWriter,
    request: CreateOrderRequest,
    *,
    actor: Actor,
    now: datetime,
    traceparent: str | None = None,
) -> Recorded:
    """Store `created` (and the contact) atomically; a retry returns the stored event."""
    if (request.contact is None) == (request.contact_ref is None):
        raise InvalidRequest(
            "Give exactly one of `contact` and `contact_ref`.",
            errors=(FieldError("contact", "contact or contact_ref required"),),
        )
    customer_id = _customer_of(request, actor)
    # Who asks is part of the request: another caller replaying the same id and
    # body must get a conflict, never the first caller's order.
    digest = fingerprint(
        {
            **request.model_dump(mode="json"),
            "customer_id": customer_id,
            "actor": str(actor),
        }
    )
    contact = request.contact
    contact_ref = uuid4() if contact is not None else request.contact_ref
    assert contact_ref is not None

    # Checked and written in the append's one statement: a refused or retried post
    # stores no contact, and a refused reference stores no event.
    guard = side_write = None
    if contact is None:
        guard = Guard(
            store.vault_holds_contact(contact_ref=contact_ref, customer_id=customer_id),
            UnknownContactRef(
                "contact_ref is not a contact of this customer's earlier orders; "
                "send `contact` instead"
            ),
        )
    else:
        side_write = store.contact_write(
            contact_ref=contact_ref,
            customer_id=customer_id,
            name=contact.name,
            phone=contact.phone,
            address=contact.address,
            created_at=now,
        )

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
            contact_ref=str(contact_ref),
        ),
    )
    return await writer.append(
        AppendRequest(
            proposed=proposed,
            order_id=uuid4(),
            new_order=True,
            request_digest=digest,
            now=now,
            traceparent=traceparent,
            guard=guard,
            side_write=side_write,
        )
    )


async def post_event(
    writer: OrderWriter,
    order_id: UUID,
    post: EventPost,
    *,
    actor: Actor,
    now: datetime,
    traceparent: str | None = None,
) -> Recorded:
    """A customer's (or dispatcher's) event for an order (idempotent by its id)."""
    request = post_request(
        order_id,
        post,
        taken=CUSTOMER_POSTS,
        actor=actor,
        now=now,
        traceparent=traceparent,
    )
    return await writer.append(request)


async def erase_contact(engine: AsyncEngine, customer_id: str) -> int:
    """Erase a customer's contact data everywhere we keep it (events hold only refs)."""
    async with engine.begin() as conn:
        return await store.erase_contacts(conn, customer_id)
