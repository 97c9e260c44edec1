"""The ledger's Kafka handler: append every order event exactly once."""

from __future__ import annotations

import json
from collections.abc import Sequence
from uuid import UUID

from sqlalchemy import insert, select, update
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.ext.asyncio import AsyncConnection

from services.ledger.domain import GENESIS_HASH, chain_hash
from services.ledger.store import ledger_entry, ledger_head
from shared.events.canonical import canonical_bytes
from shared.kafka.consumer import ConsumedEvent


class LedgerAppender:
    """Appends a batch with consecutive positions and per-order chained hashes."""

    async def handle(
        self, events: Sequence[ConsumedEvent], conn: AsyncConnection
    ) -> None:
        head = (
            await conn.execute(
                select(ledger_head.c.next_position)
                .where(ledger_head.c.id == 1)
                .with_for_update()
            )
        ).scalar_one()
        order_ids = {e.event.order_id for e in events}
        previous = await self._chain_heads(conn, order_ids)
        rows = []
        for offset, consumed in enumerate(events):
            event = consumed.event
            assert consumed.record.value is not None
            canonical = canonical_bytes(json.loads(consumed.record.value))
            link = chain_hash(previous.get(event.order_id, GENESIS_HASH), canonical)
            previous[event.order_id] = link
            rows.append(
                {
                    "position": head + offset,
                    "event_id": event.event_id,
                    "order_id": event.order_id,
                    "order_version": event.version,
                    "event_type": consumed.envelope.type,
                    "event_time": event.time,
                    "recorded_at": event.recorded_at,
                    "canonical": canonical,
                    "chain_hash": link,
                }
            )
        await conn.execute(insert(ledger_entry), rows)
        await conn.execute(
            update(ledger_head)
            .where(ledger_head.c.id == 1)
            .values(next_position=head + len(rows))
        )

    @staticmethod
    async def _chain_heads(
        conn: AsyncConnection, order_ids: set[UUID]
    ) -> dict[UUID, bytes]:
        rows = await conn.execute(
            select(ledger_entry.c.order_id, ledger_entry.c.chain_hash)
            .where(ledger_entry.c.order_id.in_(order_ids))
            .order_by(ledger_entry.c.order_id, ledger_entry.c.position.desc())
            .ext(distinct_on(ledger_entry.c.order_id))
        )
        return {row.order_id: bytes(row.chain_hash) for row in rows}
