"""Ledger response models."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field


class HistoryEntry(BaseModel):
    position: int = Field(description="Gapless position in the whole ledger.")
    orderversion: int
    chain_hash: str = Field(
        description="Hex SHA-256 of the previous hash || canonical."
    )
    event: dict[str, Any] = Field(description="The CloudEvent, as hashed (RFC 8785).")


class OrderHistory(BaseModel):
    order_id: UUID
    entries: list[HistoryEntry]
