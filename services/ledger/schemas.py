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


class SignedTreeHead(BaseModel):
    """A signed tree head: `signature` is Ed25519 over its RFC 8785 form without
    the signature (a checkpoint's `signed_message`)."""

    tree_size: int = Field(ge=0)
    root_hash: str = Field(description="Hex Merkle root (RFC 9162).")
    timestamp: str
    key_id: str
    signature: str = Field(
        description="Base64 Ed25519 signature over the head message."
    )


class Checkpoint(SignedTreeHead):
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


class ReceiptEntry(BaseModel):
    position: int = Field(ge=0, description="Position in the whole ledger.")
    canonical: str = Field(
        description="Base64 of the exact ledger bytes: the CloudEvent, RFC 8785."
    )
    leaf_hash: str = Field(description="Hex SHA-256(0x00 || canonical).")
    chain_hash: str = Field(
        description="Hex SHA-256(previous entry's chain hash || canonical); the "
        "first entry's previous is 32 zero bytes."
    )
    inclusion_proof: list[str] = Field(
        description="Hex hashes, RFC 9162 2.1.3 audit path to `tree_head`."
    )


class Receipt(BaseModel):
    """Every ledger entry of one order from its first event, each proven against
    one signed tree head: verifiable offline with `servicetrail audit-receipt`."""

    order_id: UUID
    tree_head: SignedTreeHead
    public_key: str = Field(description="PEM of the ledger's Ed25519 public key.")
    entries: list[ReceiptEntry]
