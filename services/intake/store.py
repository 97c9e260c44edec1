"""The contact vault: personal contact data lives here, never in events.

Events carry only `contact_ref`; erasing a customer's contact (GDPR) deletes these
rows and leaves every event, and so the ledger's hashes, untouched.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final
from uuid import UUID

from sqlalchemy import Column, DateTime, Index, Table, Text, Uuid, delete, func
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db.base import INTAKE_SCHEMA, metadata
from shared.db.event_store import StatementPart

contact: Final = Table(
    "contact",
    metadata,
    Column("contact_ref", Uuid, primary_key=True),
    Column("customer_id", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("phone", Text, nullable=False),
    Column("address", Text, nullable=False),
    Column(
        "created_at", DateTime(timezone=True), nullable=False, server_default=func.now()
    ),
    Index("ix_contact_customer_id", "customer_id"),
    schema=INTAKE_SCHEMA,
)


# Parts of the order's append statement (shared.db.event_store): the contact is
# written with the `created` event, or not at all, in one round trip.
_INSERT_CONTACT: Final = (
    f"INSERT INTO {INTAKE_SCHEMA}.contact "  # noqa: S608 - constant schema
    "(contact_ref, customer_id, name, phone, address, created_at) "
    "SELECT $1, $2, $3, $4, $5, $6 FROM stored"
)
_HOLDS_CONTACT: Final = (
    f"EXISTS (SELECT 1 FROM {INTAKE_SCHEMA}.contact "  # noqa: S608 - constant schema
    "WHERE contact_ref = $1 AND customer_id = $2)"
)


def contact_write(
    *,
    contact_ref: UUID,
    customer_id: str,
    name: str,
    phone: str,
    address: str,
    created_at: datetime,
) -> StatementPart:
    """Store a contact under its opaque reference, with the order's `created`."""
    return StatementPart(
        _INSERT_CONTACT,
        (contact_ref, customer_id, name, phone, address, created_at),
    )


def vault_holds_contact(*, contact_ref: UUID, customer_id: str) -> StatementPart:
    """Whether the vault holds this customer's `contact_ref` (the append's guard).

    No row lock: it would need UPDATE on the vault, which intake is not granted.
    An erasure committing just after the append's snapshot leaves the new order as
    it leaves every order of an erased customer: a reference to nothing, no
    personal data.
    """
    return StatementPart(_HOLDS_CONTACT, (contact_ref, customer_id))


async def erase_contacts(conn: AsyncConnection, customer_id: str) -> int:
    """Delete every contact of a customer (GDPR erasure); events keep only refs."""
    result = await conn.execute(
        delete(contact).where(contact.c.customer_id == customer_id)
    )
    return result.rowcount
