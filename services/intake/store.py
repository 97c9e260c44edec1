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
from shared.db.engine import Driver

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


_INSERT_CONTACT: Final = (
    f"INSERT INTO {INTAKE_SCHEMA}.contact "  # noqa: S608 - constant schema
    "(contact_ref, customer_id, name, phone, address, created_at) "
    "VALUES ($1, $2, $3, $4, $5, $6)"
)


async def insert_contact(
    conn: Driver,
    *,
    contact_ref: UUID,
    customer_id: str,
    name: str,
    phone: str,
    address: str,
    created_at: datetime,
) -> None:
    """Store a contact under its opaque reference (on the order-append hot path)."""
    await conn.execute(
        _INSERT_CONTACT, contact_ref, customer_id, name, phone, address, created_at
    )


_FIND_CONTACT: Final = (
    f"SELECT 1 FROM {INTAKE_SCHEMA}.contact "  # noqa: S608 - constant schema
    "WHERE contact_ref = $1 AND customer_id = $2"
)


async def vault_holds_contact(
    conn: Driver, *, contact_ref: UUID, customer_id: str
) -> bool:
    """Whether the vault holds this customer's `contact_ref`.

    No row lock: it would need UPDATE on the vault, which intake is not granted.
    An erasure committing just after this check leaves the new order as it leaves
    every order of an erased customer: a reference to nothing, no personal data.
    """
    return await conn.fetchval(_FIND_CONTACT, contact_ref, customer_id) is not None


async def erase_contacts(conn: AsyncConnection, customer_id: str) -> int:
    """Delete every contact of a customer (GDPR erasure); events keep only refs."""
    result = await conn.execute(
        delete(contact).where(contact.c.customer_id == customer_id)
    )
    return result.rowcount
