"""The ledger's Kafka handler: append every order event exactly once, and sign.

Each batch, in the consumer's transaction: take the next gapless positions (an
advisory lock serialises appenders), extend each order's hash chain, COPY the
entries in, add the leaves to the Merkle tree (storing every perfect subtree that
completes, in one statement), and store one signed tree head for the new size: a
constant number of statements and one signature per batch, whatever its length. Offsets are stored by the caller in the same transaction.

Only records the event store holds as they are reach `handle`: the consumer base
checks each batch against the store first (`check_against_store`, set in app.py), so
the ledger signs what was stored, never merely what someone produced to the topic.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from services.ledger import store
from services.ledger.domain import (
    GENESIS_HASH,
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


class LedgerAppender:
    """Appends a batch with consecutive positions, chained hashes and a signed head."""

    def __init__(self, signer: TreeSigner) -> None:
        self._signer = signer

    async def handle(
        self, events: Sequence[ConsumedEvent], conn: AsyncConnection
    ) -> None:
        start = await store.lock_for_append(conn)
        keys = frontier_keys(start)
        stored = await store.fetch_nodes(conn, keys)
        if len(stored) != len(keys):
            raise RuntimeError(f"Merkle nodes missing for tree size {start}")
        previous = await store.chain_heads(conn, {e.event.order_id for e in events})
        rows: list[store.EntryRow] = []
        leaves: list[bytes] = []
        for position, consumed in enumerate(events, start):
            event = consumed.event
            assert consumed.record.value is not None
            canonical = canonical_from_json(consumed.record.value)
            link = chain_hash(previous.get(event.order_id, GENESIS_HASH), canonical)
            previous[event.order_id] = link
            leaf = leaf_hash(canonical)
            leaves.append(leaf)
            rows.append(
                (
                    position,
                    event.event_id,
                    event.order_id,
                    event.version,
                    consumed.envelope.type,
                    event.time,
                    event.recorded_at,
                    canonical,
                    link,
                    leaf,
                )
            )
        await store.append_entries(conn, rows)
        grown = append_leaves([(k, stored[k]) for k in keys], leaves)
        await store.insert_nodes(conn, grown.completed)
        head = TreeHead(
            tree_size=start + len(rows),
            root_hash=root_from_frontier([h for _, h in grown.frontier]),
            timestamp=format_time(datetime.now(UTC)),
            key_id=self._signer.key_id,
        )
        await store.insert_tree_head(conn, head, self._signer.sign(head))
