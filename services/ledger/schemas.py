"""Ledger response models."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field


class HistoryEntry(BaseModel):
    position: int = Field(description="Gapless position in the whole ledger.")
    orderversion: int
    chain_hash: str = Field(
        description="Hex SHA-256(previous chain hash || canonical)."
    )
    leaf_hash: str = Field(
        description="Hex SHA-256(0x00 || canonical): the Merkle leaf."
    )
    event: dict[str, Any] = Field(description="The CloudEvent, as hashed (RFC 8785).")


class OrderHistory(BaseModel):
    order_id: UUID
    entries: list[HistoryEntry]


class OrderStateAt(BaseModel):
    order_id: UUID
    as_of: str
    events_applied: int
    state: dict[str, Any] | None = Field(
        description="The order folded from its events up to `as_of` (None: not yet created)."
    )


class FindingOut(BaseModel):
    position: int | None
    order_id: UUID | None
    problem: str


class VerifyResult(BaseModel):
    valid: bool
    events: int
    head_hash: str | None = Field(
        description="Hex chain hash of the order's last event."
    )
    first_broken_position: int | None
    findings: list[FindingOut]


class Checkpoint(BaseModel):
    tree_size: int
    root_hash: str
    timestamp: str
    key_id: str
    signature: str = Field(
        description="Base64 Ed25519 signature over the head message."
    )
    public_key: str = Field(description="PEM of the ledger's Ed25519 public key.")
    signed_message: str = Field(description="The exact signed bytes (UTF-8 JSON).")


class InclusionProof(BaseModel):
    event_id: UUID
    position: int
    leaf_hash: str
    tree_size: int
    root_hash: str
    proof: list[str] = Field(description="Hex hashes, RFC 9162 2.1.3 audit path.")
    checkpoint: Checkpoint


class ConsistencyProof(BaseModel):
    first: int
    second: int
    first_root: str
    second_root: str
    proof: list[str] = Field(
        description="Hex hashes, RFC 9162 2.1.4 consistency proof."
    )


class OrderGap(BaseModel):
    order_id: UUID
    versions: list[int]
    missing: list[int]


class Completeness(BaseModel):
    ledger_size: int
    event_store_size: int
    missing_from_ledger: int = Field(
        description="Events stored but not yet in the ledger."
    )
    lag_seconds: float | None = Field(
        description="Age of the oldest stored event the ledger does not hold yet."
    )
    orders_with_gaps: list[OrderGap]
