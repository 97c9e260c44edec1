"""Batches longer than one COPY chunk: chains and the tree as if appended one by one.

The appender COPYs a batch in chunks, canonicalising the next while the server
stores the previous; orders whose events straddle chunks (and batches) must still
chain, and the signed head must cover every entry. Checked with the independent
RFC 9162 / hash-chain functions of `ledger_io`, not the service's own.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import rfc8785
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ledger import store
from services.ledger.consumer import COPY_CHUNK, LedgerAppender
from services.ledger.signing import TreeSigner
from shared.kafka.consumer import parse_record
from tests.builders import happy_path_history
from tests.integration.kafka_io import consumer_records, record_value
from tests.integration.ledger_io import (
    GENESIS,
    chain_link,
    ledger_rows,
    merkle_tree_hash,
    rfc_leaf_hash,
)

pytestmark = pytest.mark.integration


def interleaved_values(orders: int) -> list[bytes]:
    """Each order's events in order, the orders round-robin (as intake publishes)."""
    histories = [happy_path_history() for _ in range(orders)]
    values: list[bytes] = []
    for version in range(max(len(h) for h in histories)):
        values += [record_value(h[version]) for h in histories if version < len(h)]
    return values


async def test_long_batches_chain_and_sign_every_entry(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    values = interleaved_values(orders=COPY_CHUNK // 3)
    split = COPY_CHUNK + COPY_CHUNK // 2  # the second batch starts mid-order
    assert len(values) > split + COPY_CHUNK
    appender = LedgerAppender(TreeSigner.load_or_create(tmp_path / "key.pem"))
    for first, last in ((0, split), (split, len(values))):
        events = [parse_record(r) for r in consumer_records(values[first:last], first)]
        async with engine.begin() as conn:
            await appender.handle(events, conn)

    rows = await ledger_rows(engine)
    assert [r.position for r in rows] == list(range(len(values)))
    documents = [json.loads(value) for value in values]
    assert [bytes(r.canonical) for r in rows] == [rfc8785.dumps(d) for d in documents]
    assert [r.event_type for r in rows] == [d["type"] for d in documents]
    heads: dict[object, bytes] = {}
    for row in rows:
        canonical = bytes(row.canonical)
        assert bytes(row.leaf_hash) == rfc_leaf_hash(canonical)
        link = chain_link(heads.get(row.order_id, GENESIS), canonical)
        assert bytes(row.chain_hash) == link, row.position
        heads[row.order_id] = link
    async with engine.connect() as conn:
        latest = await store.latest_tree_head(conn)
    assert latest is not None
    head, _ = latest
    assert head.tree_size == len(values)
    assert head.root_hash == merkle_tree_hash([bytes(r.leaf_hash) for r in rows])
