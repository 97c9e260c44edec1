"""The ledger's Kafka handler: append every order event exactly once, and sign.

Each batch, in the consumer's transaction: take the next gapless positions (an
advisory lock serialises appenders), extend each order's hash chain, COPY the
entries in, add the leaves to the Merkle tree and store every perfect subtree that
completes together with one signed tree head for the new size: five statements, a
COPY per 500 entries and one signature per batch. Offsets are stored by the caller
in the same transaction.

The server is kept busy while this process computes: the reads (lock, frontier,
chain heads) run while the first chunk's canonical bytes and leaf hashes are
computed, which need none of them, and each chunk's COPY while the next chunk's are.

Only records the event store holds as they are reach `handle`: the consumer base
checks each batch against the store first (`check_against_store`, set in app.py), so
the ledger signs what was stored, never merely what someone produced to the topic.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection

from services.ledger import store
from services.ledger.domain import (
    GENESIS_HASH,
    Node,
    TreeHead,
    append_leaves,
    chain_hash,
    frontier_keys,
    leaf_hash,
    root_from_frontier,
)
from services.ledger.signing import TreeSigner
from shared.events.canonical import canonical_from_json
from shared.events.envelope import format_time
from shared.kafka.consumer import ConsumedEvent

# Events canonicalised between two turns of the event loop, which lets the reads
# move on meanwhile.
SLICE: Final = 250
# Entries a COPY: the next chunk is canonicalised while the server stores this one.
COPY_CHUNK: Final = 500


@dataclass(frozen=True, slots=True)
class _Tail:
    """The ledger's end, read under the append lock."""

    start: int
    frontier: list[Node]
    chain_heads: dict[UUID, bytes]


async def _read_tail(conn: AsyncConnection, order_ids: Collection[UUID]) -> _Tail:
    start = await store.lock_for_append(conn)
    keys = frontier_keys(start)
    stored = await store.fetch_nodes(conn, keys)
    if len(stored) != len(keys):
        raise RuntimeError(f"Merkle nodes missing for tree size {start}")
    heads = await store.chain_heads(conn, order_ids)
    return _Tail(start, [(key, stored[key]) for key in keys], heads)


async def _leaves(events: Sequence[ConsumedEvent]) -> tuple[list[bytes], list[bytes]]:
    """Each record's RFC 8785 bytes and leaf hash, yielding to the event loop
    between slices. The store check has usually confirmed the bytes already."""
    canonical: list[bytes] = []
    leaves: list[bytes] = []
    for first in range(0, len(events), SLICE):
        for consumed in events[first : first + SLICE]:
            data = consumed.canonical
            if data is None:
                assert consumed.record.value is not None
                data = canonical_from_json(consumed.record.value)
            canonical.append(data)
            leaves.append(leaf_hash(data))
        await asyncio.sleep(0)
    return canonical, leaves


class LedgerAppender:
    """Appends a batch with consecutive positions, chained hashes and a signed head."""

    def __init__(self, signer: TreeSigner) -> None:
        self._signer = signer

    async def handle(
        self, events: Sequence[ConsumedEvent], conn: AsyncConnection
    ) -> None:
        reading = asyncio.ensure_future(_read_tail(conn, _continued_orders(events)))
        # What the server is doing while this process canonicalises the next chunk:
        # first the reads, then the COPY of the previous chunk.
        in_flight: asyncio.Future[Any] = reading
        tail: _Tail | None = None
        leaves: list[bytes] = []
        try:
            for first in range(0, len(events), COPY_CHUNK):
                chunk = events[first : first + COPY_CHUNK]
                canonical, chunk_leaves = await _leaves(chunk)
                if tail is None:
                    tail = await reading
                else:
                    await in_flight
                rows = _entry_rows(
                    chunk, canonical, chunk_leaves, tail.chain_heads, tail.start + first
                )
                leaves += chunk_leaves
                in_flight = asyncio.ensure_future(store.append_entries(conn, rows))
                await asyncio.sleep(0)  # let the COPY go out
            await in_flight
        except BaseException:
            await asyncio.gather(in_flight, return_exceptions=True)  # free the line
            raise
        if tail is None:
            tail = await reading
        grown = append_leaves(tail.frontier, leaves)
        head = TreeHead(
            tree_size=tail.start + len(leaves),
            root_hash=root_from_frontier([h for _, h in grown.frontier]),
            timestamp=format_time(datetime.now(UTC)),
            key_id=self._signer.key_id,
        )
        await store.insert_nodes_and_head(
            conn, grown.completed, head, self._signer.sign(head)
        )


def _continued_orders(events: Sequence[ConsumedEvent]) -> set[UUID]:
    """The orders whose chain may already be in the ledger: those whose first event
    in the batch is not their first event. An order's events reach the ledger in
    version order, so a version-1 event starts its chain (no lookup needed)."""
    continued: set[UUID] = set()
    started: set[UUID] = set()
    for consumed in events:
        order_id = consumed.header.order_id
        if order_id in started or order_id in continued:
            continue
        (continued if consumed.header.version > 1 else started).add(order_id)
    return continued


def _entry_rows(
    events: Sequence[ConsumedEvent],
    canonical: Sequence[bytes],
    leaves: Sequence[bytes],
    previous: dict[UUID, bytes],
    start: int,
) -> list[store.EntryRow]:
    """The entries from `start` on, extending each order's chain in `previous`."""
    rows: list[store.EntryRow] = []
    for position, consumed, data, leaf in zip(
        range(start, start + len(events)), events, canonical, leaves, strict=True
    ):
        event = consumed.header
        link = chain_hash(previous.get(event.order_id, GENESIS_HASH), data)
        previous[event.order_id] = link
        rows.append(
            (
                position,
                event.event_id,
                event.order_id,
                event.version,
                event.type,
                event.time,
                event.recorded_at,
                data,
                link,
                leaf,
            )
        )
    return rows
