"""Import a ledger export into an empty ledger (`servicetrail import-ledger`).

For restoring a ledger into a new database (disaster recovery, a move, the golden
stream's test): the export is audited first, against a public key from the
operator's own records and a saved tree head if one is given, and nothing of an
export that fails the audit is written. Its entries (the exact bytes, their chain
and leaf hashes), the Merkle tree's perfect subtrees and its signed tree head are
then written as exported, in the caller's one transaction, into a ledger that must
be empty: ledgers are never merged, and positions are the export's own.

Only the ledger is restored: `servicetrail metrics rebuild` recomputes the
indicators from it, and `servicetrail replay` folds any order from it. Events of
every schema version ever published are read (shared.domain.evolution); the bytes
are never upcast, so the chain still verifies.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.ext.asyncio import AsyncConnection

from services.ledger import store
from services.ledger.audit import (
    Report,
    SignedHead,
    audit_export,
    signed_head_from_json,
)
from services.ledger.domain import append_leaves
from shared.domain.errors import DomainError
from shared.events.envelope import parse_envelope

COPY_CHUNK: Final = 500


class ExportRefused(DomainError):
    """The export fails its audit, or cannot be imported whole."""

    code = "ledger_export_refused"


class LedgerNotEmpty(DomainError):
    code = "ledger_not_empty"


def _records(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    for line in lines:
        if line.strip():
            record: dict[str, Any] = json.loads(line)
            yield record


def _entry_row(record: dict[str, Any]) -> store.EntryRow:
    canonical = str(record["canonical"]).encode()
    envelope = parse_envelope(canonical)  # the audit checked the hashes, not this
    return (
        int(record["position"]),
        envelope.id,
        envelope.subject,
        envelope.orderversion,
        envelope.type,
        envelope.time,
        envelope.recordedtime,
        canonical,
        bytes.fromhex(record["chain_hash"]),
        bytes.fromhex(record["leaf_hash"]),
    )


async def import_export(
    conn: AsyncConnection,
    read_lines: Callable[[], Iterable[str]],
    public_key: Ed25519PublicKey,
    *,
    saved_head: SignedHead | None = None,
) -> Report:
    """Audit the export `read_lines()` yields, then write it into the empty ledger.

    `read_lines` is called twice (audit, then import), so a file is streamed.

    Raises:
        ExportRefused: the audit found problems, or the export has no signed tree
            head covering all its entries.
        LedgerNotEmpty: the ledger already holds entries.
    """
    report = audit_export(read_lines(), public_key, saved_head=saved_head)
    if not report.valid:
        problems = "; ".join(f.problem for f in report.findings[:5])
        raise ExportRefused(f"the export fails its audit: {problems}")
    if await store.lock_for_append(conn) != 0:
        raise LedgerNotEmpty(
            "the ledger already holds entries; import into an empty one"
        )
    head: SignedHead | None = None
    leaves: list[bytes] = []
    chunk: list[store.EntryRow] = []
    for record in _records(read_lines()):
        match record.get("type"):
            case "entry":
                row = _entry_row(record)
                chunk.append(row)
                leaves.append(row[-1])
                if len(chunk) == COPY_CHUNK:
                    await store.append_entries(conn, chunk)
                    chunk = []
            case "tree_head":
                head = signed_head_from_json(record)
            case _:
                pass
    if chunk:
        await store.append_entries(conn, chunk)
    if head is None or head.head.tree_size != len(leaves):
        raise ExportRefused(
            "the export has no signed tree head over all its entries: export it again"
        )
    grown = append_leaves([], leaves)
    await store.insert_nodes_and_head(conn, grown.completed, head.head, head.signature)
    return report
