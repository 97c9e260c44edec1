"""Ledger read side: history, state as of a moment, verification, proofs, export."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any, Final
from uuid import UUID

from pydantic import TypeAdapter
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.ledger import store
from services.ledger.audit import Entry, Finding, LedgerAuditor, Report
from services.ledger.domain import (
    TreeHead,
    consistency_proof,
    frontier_keys,
    inclusion_proof,
    required_nodes,
    root_from_frontier,
    tree_head_message,
    verify_inclusion,
)
from services.ledger.schemas import (
    Checkpoint,
    Completeness,
    ConsistencyProof,
    FindingOut,
    HistoryEntry,
    InclusionProof,
    OrderGap,
    OrderStateAt,
    Receipt,
    ReceiptEntry,
    SignedTreeHead,
    VerifyResult,
)
from services.ledger.signing import TreeSigner, public_key_pem
from shared.db.engine import driver_of
from shared.domain.actors import Actor, Role
from shared.domain.errors import DomainError, OrderNotFound
from shared.domain.lifecycle import OrderState, fold
from shared.events.envelope import Envelope, format_time, to_order_event

CHUNK: Final = 5000
# Rows checked between two turns of the event loop while verifying: the driver then
# takes in the next chunk as the server sends it, instead of leaving the server
# blocked on a full socket until this chunk is done.
VERIFY_SLICE: Final = 1000
_STATE: Final = TypeAdapter(OrderState)


class EventNotInLedger(DomainError):
    code = "order_not_found"


class LedgerEmpty(DomainError):
    """No entry yet, so no tree head to sign (404): not an order that is missing."""

    code = "ledger_empty"


class TreeSizeOutOfRange(DomainError):
    code = "tree_size_out_of_range"


_ENTRY_COLUMNS: Final = (
    "position, event_id, order_id, order_version, canonical, chain_hash, leaf_hash"
)


# `audit.Row`: what the auditor checks, straight from the driver's rows. The order
# id as its 16 bytes (uuid_send): the auditor keys orders by them, and the driver
# then builds no UUID object per row.
_AUDIT_COLUMNS: Final = (
    "position, uuid_send(order_id), order_version, canonical, chain_hash, leaf_hash"
)


def _entry(row: Any) -> Entry:
    return Entry(
        position=row["position"],
        event_id=row["event_id"],
        order_id=row["order_id"],
        order_version=row["order_version"],
        canonical=bytes(row["canonical"]),
        chain_hash=bytes(row["chain_hash"]),
        leaf_hash=bytes(row["leaf_hash"]),
    )


async def order_entries(conn: AsyncConnection, order_id: UUID) -> list[Entry]:
    driver = await driver_of(conn)
    rows = await driver.fetch(
        f"SELECT {_ENTRY_COLUMNS} FROM ledger.ledger_entry "  # noqa: S608 - constants
        "WHERE order_id = $1 ORDER BY position",
        order_id,
    )
    if not rows:
        raise _no_events(order_id)
    return [_entry(r) for r in rows]


def _no_events(order_id: UUID) -> OrderNotFound:
    return OrderNotFound(f"The ledger holds no events of order {order_id}.")


_KEYSET: Final = (
    "FROM ledger.ledger_entry "
    "WHERE position >= $1 AND ($2::bigint IS NULL OR position < $2) "
    "ORDER BY position LIMIT $3"
)


async def _chunks(
    conn: AsyncConnection, columns: str, *, start: int = 0, end: int | None = None
) -> AsyncIterator[list[Any]]:
    """Rows in position order, CHUNK at a time by keyset (constant memory).

    The next chunk is asked for before this one is handed out, so the server reads
    it while the caller works on this one.
    """
    driver = await driver_of(conn)
    sql = f"SELECT {columns} {_KEYSET}"

    def fetch(position: int) -> asyncio.Task[list[Any]]:
        return asyncio.ensure_future(driver.fetch(sql, position, end, CHUNK))

    pending: asyncio.Task[list[Any]] | None = fetch(start)
    try:
        while pending is not None:
            rows = await pending
            pending = None
            if len(rows) == CHUNK:
                pending = fetch(rows[-1][0] + 1)
                await asyncio.sleep(0)  # let it go out before the caller's work
            yield rows
    finally:
        if pending is not None:  # the caller stopped early: leave the line idle
            await pending


async def iter_entries(
    conn: AsyncConnection, *, start: int = 0, end: int | None = None
) -> AsyncIterator[Entry]:
    """Entries in position order, read in chunks by keyset (constant memory)."""
    async for rows in _chunks(conn, _ENTRY_COLUMNS, start=start, end=end):
        for row in rows:
            yield _entry(row)


async def get_history(conn: AsyncConnection, order_id: UUID) -> Sequence[HistoryEntry]:
    """Every ledger entry of one order in order; OrderNotFound when there is none."""
    return [
        HistoryEntry(
            position=e.position,
            orderversion=e.order_version,
            chain_hash=e.chain_hash.hex(),
            leaf_hash=e.leaf_hash.hex(),
            event=json.loads(e.canonical),
        )
        for e in await order_entries(conn, order_id)
    ]


async def state_as_of(
    conn: AsyncConnection, order_id: UUID, as_of: datetime
) -> OrderStateAt:
    """The order folded from the events that had happened (event `time`) by `as_of`."""
    events = [
        to_order_event(Envelope.model_validate_json(e.canonical))
        for e in await order_entries(conn, order_id)
    ]
    applied = [e for e in events if e.time <= as_of]
    state = fold(applied)
    return OrderStateAt(
        order_id=order_id,
        as_of=format_time(as_of),
        events_applied=len(applied),
        state=None if state is None else _STATE.dump_python(state, mode="json"),
    )


def _result(report: Report, head_hash: bytes | None) -> VerifyResult:
    return VerifyResult(
        valid=report.valid,
        events=report.entries,
        head_hash=None if head_hash is None else head_hash.hex(),
        first_broken_position=report.first_broken_position,
        findings=[
            FindingOut(position=f.position, order_id=f.order_id, problem=f.problem)
            for f in report.findings
        ],
    )


async def verify_order(conn: AsyncConnection, order_id: UUID) -> VerifyResult:
    """One order: its hash chain and leaf hashes from the stored bytes, and each entry
    proven into the latest signed tree (so an entry added or removed behind the
    signed head is caught too)."""
    entries = await order_entries(conn, order_id)
    auditor = LedgerAuditor(check_positions=False)
    for entry in entries:
        auditor.add(entry)
    report = auditor.report
    latest = await store.latest_tree_head(conn)
    if latest is None:
        report.findings.append(
            Finding(entries[0].position, order_id, "no signed tree head")
        )
        return _result(report, auditor.head_hashes().get(order_id))
    head = latest[0]
    size = int(
        await conn.scalar(select(func.count()).select_from(store.ledger_entry)) or 0
    )
    if size < head.tree_size:
        report.findings.append(
            Finding(
                size,
                None,
                f"the signed tree head covers {head.tree_size} entries, "
                f"the ledger holds {size}: entries were removed",
            )
        )
    covered = [e for e in entries if e.position < head.tree_size]
    for entry in entries[len(covered) :]:
        report.findings.append(
            Finding(entry.position, order_id, "not covered by any signed tree head")
        )
    if report.findings:
        # A broken chain or a missing tail already names the first bad position; a
        # failed proof would also blame its innocent neighbours (their siblings).
        return _result(report, auditor.head_hashes().get(order_id))
    paths = await _audit_paths(conn, [e.position for e in covered], head.tree_size)
    for entry, path in zip(covered, paths, strict=True):
        if not verify_inclusion(
            entry.leaf_hash, entry.position, head.tree_size, path, head.root_hash
        ):
            report.findings.append(
                Finding(entry.position, order_id, "not included in the signed tree")
            )
    return _result(report, auditor.head_hashes().get(order_id))


async def verify_ledger(
    conn: AsyncConnection, signer: TreeSigner, *, progress_every: int = 100_000
) -> AsyncIterator[dict[str, Any]]:
    """Verify everything, yielding progress lines and then the result."""
    latest = await store.latest_tree_head(conn)
    auditor = LedgerAuditor()
    if latest is not None:
        auditor.want_root_at(latest[0].tree_size)
    reported = 0
    async for rows in _chunks(conn, _AUDIT_COLUMNS):
        for first in range(0, len(rows), VERIFY_SLICE):
            auditor.add_rows(rows[first : first + VERIFY_SLICE])
            await asyncio.sleep(0)
        if auditor.report.entries // progress_every > reported // progress_every:
            reported = auditor.report.entries
            yield {"progress": reported}
    head, signature = latest if latest is not None else (None, None)
    report = auditor.finish(head, signature, signer.public_key)
    yield {"result": _result(report, report.root_hash).model_dump(mode="json")}


def _signed_head(head: TreeHead, signature: bytes) -> SignedTreeHead:
    return SignedTreeHead(
        tree_size=head.tree_size,
        root_hash=head.root_hash.hex(),
        timestamp=head.timestamp,
        key_id=head.key_id,
        signature=base64.b64encode(signature).decode(),
    )


def checkpoint_of(head: TreeHead, signature: bytes, signer: TreeSigner) -> Checkpoint:
    return Checkpoint(
        **_signed_head(head, signature).model_dump(),
        public_key=public_key_pem(signer.public_key),
        signed_message=tree_head_message(head).decode(),
    )


async def latest_checkpoint(conn: AsyncConnection, signer: TreeSigner) -> Checkpoint:
    latest = await store.latest_tree_head(conn)
    if latest is None:
        raise LedgerEmpty("the ledger is empty: no tree head yet")
    return checkpoint_of(*latest, signer)


async def _node_source(
    conn: AsyncConnection, compute: Any
) -> dict[tuple[int, int], bytes]:
    return await store.fetch_nodes(conn, required_nodes(compute))


async def _audit_paths(
    conn: AsyncConnection, positions: Sequence[int], size: int
) -> list[list[bytes]]:
    """Each position's RFC 9162 audit path in the tree of `size` leaves, from one
    fetch of the stored nodes; empty where a node is missing (it then fails)."""
    nodes = await _node_source(
        conn, lambda source: [inclusion_proof(p, size, source) for p in positions]
    )
    paths: list[list[bytes]] = []
    for position in positions:
        try:
            paths.append(inclusion_proof(position, size, nodes.__getitem__))
        except KeyError:
            paths.append([])
    return paths


async def prove_inclusion(
    conn: AsyncConnection, event_id: UUID, signer: TreeSigner
) -> InclusionProof:
    """The audit path of an event against the latest signed tree head."""
    latest = await store.latest_tree_head(conn)
    row = (
        await conn.execute(
            select(store.ledger_entry.c.position, store.ledger_entry.c.leaf_hash).where(
                store.ledger_entry.c.event_id == event_id
            )
        )
    ).one_or_none()
    if latest is None or row is None or row.position >= latest[0].tree_size:
        raise EventNotInLedger(f"event {event_id} is not under a signed tree head yet")
    head, signature = latest
    (proof,) = await _audit_paths(conn, [row.position], head.tree_size)
    return InclusionProof(
        event_id=event_id,
        position=row.position,
        leaf_hash=bytes(row.leaf_hash).hex(),
        tree_size=head.tree_size,
        root_hash=head.root_hash.hex(),
        proof=[p.hex() for p in proof],
        checkpoint=checkpoint_of(head, signature, signer),
    )


async def _head_covering(
    conn: AsyncConnection, signer: TreeSigner, position: int
) -> tuple[TreeHead, bytes]:
    """The latest signed tree head if it covers `position`, else one signed now.

    The appender signs a head in each batch's transaction, so the latest head read
    after the entries covers them; a head is signed here only for a ledger whose
    heads lag (appended without them, or restored). It is signed the appender's way
    over the stored frontier, and not stored: that size is the appender's to sign.
    """
    latest = await store.latest_tree_head(conn)
    if latest is not None and position < latest[0].tree_size:
        return latest
    last = await conn.scalar(select(func.max(store.ledger_entry.c.position)))
    size = 0 if last is None else int(last) + 1
    keys = frontier_keys(size)
    nodes = await store.fetch_nodes(conn, keys)
    if len(nodes) != len(keys):
        raise RuntimeError(f"Merkle nodes missing for tree size {size}")
    head = TreeHead(
        tree_size=size,
        root_hash=root_from_frontier([nodes[key] for key in keys]),
        timestamp=format_time(datetime.now(UTC)),
        key_id=signer.key_id,
    )
    return head, signer.sign(head)


def _customer_of(entries: Sequence[Entry]) -> str | None:
    """The `customer_id` of the order's `created` (its version 1), if it is there."""
    first = entries[0]
    if first.order_version != 1:
        return None
    customer: object = json.loads(first.canonical).get("data", {}).get("customer_id")
    return customer if isinstance(customer, str) else None


async def get_receipt(
    conn: AsyncConnection, order_id: UUID, signer: TreeSigner, *, actor: Actor
) -> Receipt:
    """Every ledger entry of the order, each with its audit path to one signed
    tree head. A customer gets only their own order's (others: OrderNotFound)."""
    entries = await order_entries(conn, order_id)
    if actor.role is Role.CUSTOMER and _customer_of(entries) != actor.id:
        raise _no_events(order_id)
    head, signature = await _head_covering(conn, signer, entries[-1].position)
    paths = await _audit_paths(conn, [e.position for e in entries], head.tree_size)
    return Receipt(
        order_id=order_id,
        tree_head=_signed_head(head, signature),
        public_key=public_key_pem(signer.public_key),
        entries=[
            ReceiptEntry(
                position=e.position,
                canonical=base64.b64encode(e.canonical).decode(),
                leaf_hash=e.leaf_hash.hex(),
                chain_hash=e.chain_hash.hex(),
                inclusion_proof=[p.hex() for p in path],
            )
            for e, path in zip(entries, paths, strict=True)
        ],
    )


async def prove_consistency(
    conn: AsyncConnection, first: int, second: int | None
) -> ConsistencyProof:
    """RFC 9162 consistency proof between two signed tree sizes."""
    heads = store.tree_head
    latest = await store.latest_tree_head(conn)
    second = second if second is not None else (latest[0].tree_size if latest else 0)
    rows = {
        row.tree_size: bytes(row.root_hash)
        for row in await conn.execute(
            select(heads.c.tree_size, heads.c.root_hash).where(
                heads.c.tree_size.in_([first, second])
            )
        )
    }
    if not 0 < first <= second or first not in rows or second not in rows:
        raise TreeSizeOutOfRange(
            f"both sizes must be signed tree sizes with 0 < first <= second "
            f"(got {first}, {second})"
        )
    nodes = await _node_source(
        conn, lambda source: consistency_proof(first, second, source)
    )
    proof = consistency_proof(first, second, nodes.__getitem__)
    return ConsistencyProof(
        first=first,
        second=second,
        first_root=rows[first].hex(),
        second_root=rows[second].hex(),
        proof=[p.hex() for p in proof],
    )


async def export_lines(
    conn: AsyncConnection, signer: TreeSigner, *, start: int = 0, end: int | None = None
) -> AsyncIterator[str]:
    """NDJSON: a header, every entry in the range, then the latest signed tree head."""
    latest = await store.latest_tree_head(conn)
    yield (
        json.dumps(
            {
                "type": "servicetrail.ledger.export",
                "version": 1,
                "from": start,
                "to": end,
                "key_id": signer.key_id,
                "public_key": public_key_pem(signer.public_key),
            }
        )
        + "\n"
    )
    async for e in iter_entries(conn, start=start, end=end):
        yield (
            json.dumps(
                {
                    "type": "entry",
                    "position": e.position,
                    "event_id": str(e.event_id),
                    "order_id": str(e.order_id),
                    "order_version": e.order_version,
                    "canonical": e.canonical.decode(),
                    "chain_hash": e.chain_hash.hex(),
                    "leaf_hash": e.leaf_hash.hex(),
                },
                ensure_ascii=False,
            )
            + "\n"
        )
    if latest is not None:
        head, signature = latest
        signed = _signed_head(head, signature).model_dump()
        yield json.dumps({"type": "tree_head", **signed}) + "\n"


async def completeness(conn: AsyncConnection) -> Completeness:
    """What the ledger lacks compared with the event store, and orders with gaps."""
    ledger_size = int(
        await conn.scalar(select(func.count()).select_from(store.ledger_entry)) or 0
    )
    row = (
        await conn.execute(
            text(
                "SELECT count(*) AS n, "
                "extract(epoch FROM now() - min(e.recorded_at)) AS lag "
                "FROM event_store.order_event e "
                "WHERE NOT EXISTS (SELECT 1 FROM ledger.ledger_entry l "
                "WHERE l.event_id = e.event_id)"
            )
        )
    ).one()
    store_size = int(
        await conn.scalar(text("SELECT count(*) FROM event_store.order_event")) or 0
    )
    gaps = await conn.execute(
        text(
            "SELECT order_id, array_agg(order_version ORDER BY order_version) AS versions "
            "FROM ledger.ledger_entry GROUP BY order_id "
            "HAVING max(order_version) <> count(*) OR min(order_version) <> 1 "
            "LIMIT 1000"
        )
    )
    return Completeness(
        ledger_size=ledger_size,
        event_store_size=store_size,
        missing_from_ledger=int(row.n),
        lag_seconds=None if row.lag is None else float(row.lag),
        orders_with_gaps=[
            OrderGap(
                order_id=g.order_id,
                versions=list(g.versions),
                missing=sorted(set(range(1, max(g.versions) + 1)) - set(g.versions)),
            )
            for g in gaps
        ],
    )
