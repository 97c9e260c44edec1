"""Verifying a ledger: the same streaming checks online (API, CLI) and offline (audit).

Entries arrive in position order. For each: the position follows the previous one,
the leaf hash is SHA-256(0x00 || canonical bytes), the order's chain continues from
its previous link, and its version follows the previous one. The leaves feed a Merkle
accumulator whose root, at the size of the signed tree head, must equal the signed
root under a valid signature. An auditor who saved an older head checks that the
ledger extends it (a consistency proof), which catches a rewritten history even when
every hash in it was recomputed.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeAlias
from uuid import UUID

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from services.ledger.domain import (
    GENESIS_HASH,
    MerkleAccumulator,
    TreeHead,
    chain_hash,
    consistency_proof,
    leaf_hash,
    verify_consistency,
)
from services.ledger.signing import verify_tree_head


@dataclass(frozen=True, slots=True)
class Entry:
    """One ledger entry as stored or exported."""

    position: int
    event_id: UUID
    order_id: UUID
    order_version: int
    canonical: bytes
    chain_hash: bytes
    leaf_hash: bytes


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing wrong, where it is, and with which order."""

    position: int | None
    order_id: UUID | None
    problem: str


@dataclass
class Report:
    entries: int = 0
    findings: list[Finding] = field(default_factory=list)
    root_hash: bytes | None = None
    signed_size: int | None = None

    @property
    def valid(self) -> bool:
        return not self.findings

    @property
    def first_broken_position(self) -> int | None:
        positions = [f.position for f in self.findings if f.position is not None]
        return min(positions) if positions else None


Row: TypeAlias = tuple[int, bytes, int, bytes, bytes, bytes]
"""An entry as `LedgerAuditor.add_rows` reads it: position, the order id's 16 bytes,
order version, canonical bytes, chain hash, leaf hash (the columns in `Entry` order)."""


class LedgerAuditor:
    """Feed entries in position order, then `finish` with the signed tree head."""

    def __init__(
        self,
        *,
        first_position: int = 0,
        max_findings: int = 100,
        check_positions: bool = True,
    ) -> None:
        self._next = first_position
        # Off for one order's entries, which are sparse among all positions.
        self._check_positions = check_positions
        # Per order (its id's 16 bytes): its latest link and version. Bytes, because
        # each row brings a new UUID object whose hash is computed on first use, in
        # interpreted code for uuid.UUID: more than the dict lookup itself. Two dicts
        # of bytes and ints, not one of tuples: the garbage collector never scans
        # them, where a dict of tuples (one per order) was scanned over and over.
        self._links: dict[bytes, bytes] = {}
        self._versions: dict[bytes, int] = {}
        self._tree = MerkleAccumulator()
        self._leaves: list[bytes] | None = None
        self._max_findings = max_findings
        self._root_at: dict[int, bytes] = {}
        self.report = Report()

    def keep_leaves(self) -> None:
        """Keep every leaf hash (for consistency proofs against a saved head)."""
        self._leaves = []

    def want_root_at(self, size: int) -> None:
        """Remember the tree root when the ledger reaches `size` entries."""
        self._root_at.setdefault(size, b"")

    def _find(self, position: int | None, order: bytes | None, problem: str) -> None:
        if len(self.report.findings) < self._max_findings:
            order_id = None if order is None else UUID(bytes=order)
            self.report.findings.append(Finding(position, order_id, problem))

    def add(self, entry: Entry) -> None:
        """Check one entry and extend the tree with it."""
        self.add_rows(
            (
                (
                    entry.position,
                    entry.order_id.bytes,
                    entry.order_version,
                    entry.canonical,
                    entry.chain_hash,
                    entry.leaf_hash,
                ),
            )
        )

    def add_rows(self, rows: Iterable[Row]) -> None:
        """Check entries (database rows as they come) and extend the tree with them.

        The loop a whole-ledger verify runs per entry: two hashes and four dict
        operations; the tree grows once per call, a level at a time.
        """
        links, versions = self._links, self._versions
        expected, check_positions = self._next, self._check_positions
        added: list[bytes] = []
        # Bound once: this loop runs once per entry of the whole ledger.
        leaf_of, link_of, previous_link, previous_version_of, add = (
            leaf_hash,
            chain_hash,
            links.get,
            versions.get,
            added.append,
        )
        for position, order, version, canonical, link, stored_leaf in rows:
            if check_positions and position != expected:
                # No order is named: the entry after a gap lost nothing itself.
                self._find(
                    expected,
                    None,
                    f"positions {expected}..{position - 1} are missing"
                    if position > expected
                    else f"position {position} is out of order",
                )
            expected = position + 1
            leaf = leaf_of(canonical)
            if leaf != stored_leaf:
                self._find(position, order, "leaf hash does not match the event bytes")
            if link_of(previous_link(order, GENESIS_HASH), canonical) != link:
                self._find(position, order, "order hash chain is broken here")
            previous_version = previous_version_of(order, 0)
            if version != previous_version + 1:
                self._find(
                    position,
                    order,
                    f"order version {version} follows {previous_version}",
                )
            links[order] = link
            versions[order] = version
            add(leaf)
        self._next = expected
        self._grow(added)
        self.report.entries += len(added)

    def _grow(self, leaves: list[bytes]) -> None:
        """Extend the tree, taking its root at every wanted size on the way."""
        tree, done = self._tree, 0
        first = tree.size
        for size in sorted(
            s for s in self._root_at if first < s <= first + len(leaves)
        ):
            tree.extend_by_levels(leaves[done : size - first])
            done = size - first
            self._root_at[size] = tree.root()
        tree.extend_by_levels(leaves[done:])
        if self._leaves is not None:
            self._leaves.extend(leaves)

    def head_hashes(self) -> dict[UUID, bytes]:
        return {UUID(bytes=order): link for order, link in self._links.items()}

    def finish(
        self,
        head: TreeHead | None,
        signature: bytes | None,
        public_key: Ed25519PublicKey | None,
        *,
        saved_head: TreeHead | None = None,
    ) -> Report:
        """Check the signed head (and an auditor's saved one) against the entries."""
        size = self._tree.size
        self.report.root_hash = self._tree.root()
        if head is None or signature is None:
            if size:
                self._find(0, None, "no signed tree head covers the ledger")
            return self.report
        self.report.signed_size = head.tree_size
        if public_key is not None and not verify_tree_head(public_key, head, signature):
            self._find(
                None, None, "the tree head's signature is not valid for this key"
            )
        if size < head.tree_size:
            self._find(
                size,
                None,
                f"the signed tree head covers {head.tree_size} entries, "
                f"the ledger ends at {size}: entries were removed",
            )
        elif self._root(head.tree_size) != head.root_hash:
            self._find(
                None,
                None,
                f"the root over the first {head.tree_size} entries "
                "differs from the signed root",
            )
        if size > head.tree_size:
            self._find(
                head.tree_size,
                None,
                f"entries from position {head.tree_size} "
                "are not covered by any signed tree head",
            )
        if saved_head is not None:
            self._check_saved(saved_head, head)
        return self.report

    def _root(self, size: int) -> bytes | None:
        if size == self._tree.size:
            return self._tree.root()
        if self._root_at.get(size):
            return self._root_at[size]
        if self._leaves is not None and size <= len(self._leaves):
            prefix = MerkleAccumulator()
            for leaf in self._leaves[:size]:
                prefix.append(leaf)
            return prefix.root()
        return None

    def _check_saved(self, saved: TreeHead, head: TreeHead) -> None:
        """The current head must extend the head an auditor saved earlier."""
        if saved.tree_size > head.tree_size:
            self._find(
                head.tree_size,
                None,
                f"a tree head of size {saved.tree_size} was "
                f"seen before; the ledger now claims {head.tree_size}",
            )
            return
        if self._leaves is None or len(self._leaves) < head.tree_size:
            self._find(None, None, "cannot check the saved head: leaves not kept")
            return
        leaves = self._leaves

        def source(key: tuple[int, int]) -> bytes:
            level, index = key
            start, end = index << level, (index + 1) << level
            acc = MerkleAccumulator()
            for leaf in leaves[start:end]:
                acc.append(leaf)
            return acc.root()

        proof = (
            consistency_proof(saved.tree_size, head.tree_size, source)
            if saved.tree_size
            else []
        )
        if saved.tree_size and not verify_consistency(
            saved.tree_size, head.tree_size, saved.root_hash, head.root_hash, proof
        ):
            self._find(
                None,
                None,
                f"the ledger does not extend the tree head of size "
                f"{saved.tree_size} seen before: history was rewritten (fork)",
            )


def audit_entries(
    entries: Iterable[Entry],
    head: TreeHead | None,
    signature: bytes | None,
    public_key: Ed25519PublicKey | None,
    *,
    saved_head: TreeHead | None = None,
) -> Report:
    """Run every check over a whole ledger."""
    auditor = LedgerAuditor()
    if saved_head is not None:
        auditor.keep_leaves()
    if head is not None:
        auditor.want_root_at(head.tree_size)
    for entry in entries:
        auditor.add(entry)
    return auditor.finish(head, signature, public_key, saved_head=saved_head)


@dataclass(frozen=True, slots=True)
class SignedHead:
    head: TreeHead
    signature: bytes


def signed_head_from_json(record: dict[str, Any]) -> SignedHead:
    """A tree head as exported or served by `GET /v1/ledger/checkpoint`."""
    return SignedHead(
        TreeHead(
            tree_size=int(record["tree_size"]),
            root_hash=bytes.fromhex(record["root_hash"]),
            timestamp=str(record["timestamp"]),
            key_id=str(record["key_id"]),
        ),
        base64.b64decode(record["signature"]),
    )


def _entry_from_json(record: dict[str, Any]) -> Entry:
    return Entry(
        position=int(record["position"]),
        event_id=UUID(record["event_id"]),
        order_id=UUID(record["order_id"]),
        order_version=int(record["order_version"]),
        canonical=str(record["canonical"]).encode(),
        chain_hash=bytes.fromhex(record["chain_hash"]),
        leaf_hash=bytes.fromhex(record["leaf_hash"]),
    )


def audit_export(
    lines: Iterable[str],
    public_key: Ed25519PublicKey,
    *,
    saved_head: SignedHead | None = None,
    on_entry: Callable[[int], None] | None = None,
) -> Report:
    """Verify an NDJSON export offline: no database, no trust in the operator.

    The public key must come from the auditor's own records, not from the export.
    """
    auditor = LedgerAuditor()
    # The head comes last in an export: keep the leaves to take its root afterwards
    # (32 bytes an entry).
    auditor.keep_leaves()
    if saved_head is not None and not verify_tree_head(
        public_key, saved_head.head, saved_head.signature
    ):
        auditor.report.findings.append(
            Finding(None, None, "the saved tree head's signature is not valid")
        )
    head: SignedHead | None = None
    for line in lines:
        if not line.strip():
            continue
        record = json.loads(line)
        match record.get("type"):
            case "entry":
                auditor.add(_entry_from_json(record))
                if on_entry is not None:
                    on_entry(auditor.report.entries)
            case "tree_head":
                head = signed_head_from_json(record)
            case _:
                pass
    return auditor.finish(
        None if head is None else head.head,
        None if head is None else head.signature,
        public_key,
        saved_head=None if saved_head is None else saved_head.head,
    )
