"""Checking an order's receipt offline: no database, only the public key one holds.

A receipt (`GET /v1/orders/{id}/receipt`) holds every ledger entry of one order from
its first event, each with an audit path to one signed tree head. Each entry must:

- carry base64 of RFC 8785 bytes of a CloudEvent of this order whose `orderversion`
  is the entry's number (gapless from 1);
- have the RFC 9162 leaf hash of those bytes, and the chain hash the ledger computes
  from the previous entry's (32 zero bytes before the first);
- sit at a position after the previous entry's, proven into the signed tree by its
  audit path (of the leaf hash recomputed here, so the bytes themselves are proven).

The head's signature must verify with the key given, and its `key_id` be that key's.
Every failure names its entry and check; the public key in the receipt is ignored.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from typing import Any
from uuid import UUID

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from services.ledger.audit import Finding, Report, SignedHead, signed_head_from_json
from services.ledger.domain import (
    GENESIS_HASH,
    TreeHead,
    chain_hash,
    leaf_hash,
    verify_inclusion,
)
from services.ledger.schemas import Receipt, ReceiptEntry
from services.ledger.signing import key_id_of, verify_tree_head
from shared.events.canonical import canonical_from_json
from shared.events.envelope import parse_envelope


def _hex(value: str) -> bytes | None:
    try:
        return bytes.fromhex(value)
    except ValueError:
        return None


def _head_problems(head: SignedHead, public_key: Ed25519PublicKey) -> Iterator[str]:
    expected = key_id_of(public_key)
    if head.head.key_id != expected:
        yield f"tree head: key id {head.head.key_id!r} is not the given key's ({expected})"
    if not verify_tree_head(public_key, head.head, head.signature):
        yield "tree head: the signature is not valid for the given public key"


def _event_problems(data: bytes, order_id: UUID, number: int) -> Iterator[str]:
    """Whether the bytes are RFC 8785 JSON of this order's event number `number`."""
    try:
        canonical = canonical_from_json(data)
    except ValueError:
        yield "canonical bytes are not JSON"
        return
    if canonical != data:
        yield "canonical bytes are not in RFC 8785 form"
    try:
        event = parse_envelope(data)
    except ValidationError:
        yield "canonical bytes are not an order event's CloudEvent"
        return
    if event.subject != order_id:
        yield f"the event is of order {event.subject}, not {order_id}"
    if event.orderversion != number:
        yield f"orderversion {event.orderversion} where {number} follows"


def _entry_problems(
    entry: ReceiptEntry,
    *,
    order_id: UUID,
    number: int,
    previous_chain: bytes,
    previous_position: int,
    head: TreeHead | None,
) -> Iterator[str]:
    try:
        data = base64.b64decode(entry.canonical, validate=True)
    except binascii.Error:
        yield "canonical is not base64"
        return
    yield from _event_problems(data, order_id, number)
    leaf = leaf_hash(data)
    if _hex(entry.leaf_hash) != leaf:
        yield "leaf hash does not match the canonical bytes"
    if _hex(entry.chain_hash) != chain_hash(previous_chain, data):
        yield "chain hash does not follow from the previous entry's and these bytes"
    if entry.position <= previous_position:
        yield f"position {entry.position} does not follow {previous_position}"
    proof = [node for node in map(_hex, entry.inclusion_proof) if node is not None]
    if len(proof) != len(entry.inclusion_proof):
        yield "inclusion proof holds a hash that is not hex"
    elif head is not None and not verify_inclusion(
        leaf, entry.position, head.tree_size, proof, head.root_hash
    ):
        yield (
            f"inclusion proof does not verify against the tree head "
            f"(size {head.tree_size})"
        )


def verify_receipt(document: Any, public_key: Ed25519PublicKey) -> Report:
    """Every check of the module doc over a parsed receipt (JSON value)."""
    try:
        receipt = Receipt.model_validate(document)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(map(str, first["loc"])) or "the document"
        problem = f"not a receipt: {where}: {first['msg']}"
        return Report(findings=[Finding(None, None, problem)])
    order_id = receipt.order_id
    report = Report(entries=len(receipt.entries))

    def find(position: int | None, problem: str) -> None:
        report.findings.append(Finding(position, order_id, problem))

    head: TreeHead | None = None
    try:
        signed = signed_head_from_json(receipt.tree_head.model_dump())
    except ValueError as err:
        find(None, f"tree head: malformed ({err})")
    else:
        head = signed.head
        report.signed_size = head.tree_size
        for problem in _head_problems(signed, public_key):
            find(None, problem)
    if not receipt.entries:
        find(None, "the receipt holds no entries")
    previous_chain, previous_position = GENESIS_HASH, -1
    for number, entry in enumerate(receipt.entries, 1):
        for problem in _entry_problems(
            entry,
            order_id=order_id,
            number=number,
            previous_chain=previous_chain,
            previous_position=previous_position,
            head=head,
        ):
            find(entry.position, f"entry {number}: {problem}")
        # The next link follows the stated one: one changed entry is one finding.
        previous_chain = _hex(entry.chain_hash) or b""
        previous_position = entry.position
    return report
