"""Ledger HTTP routes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Final
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ledger import queries
from services.ledger.schemas import (
    Checkpoint,
    Completeness,
    ConsistencyProof,
    InclusionProof,
    OrderHistory,
    OrderStateAt,
    Receipt,
    VerifyResult,
)
from services.ledger.signing import TreeSigner
from shared.domain.actors import Actor, Role
from shared.domain.instants import Instant
from shared.http.deps import CurrentActor, DbConnection, Engine, actor_with_role

router = APIRouter(prefix="/v1", tags=["ledger"])

Reader = Annotated[Actor, Depends(actor_with_role(Role.AUDITOR, Role.DISPATCHER))]
Auditor = Annotated[Actor, Depends(actor_with_role(Role.AUDITOR))]
# Customers pass the role check; the query then shows them only their own orders.
ReceiptReader = Annotated[Actor, Depends(actor_with_role(Role.CUSTOMER, Role.AUDITOR))]


async def get_signer(request: Request) -> TreeSigner:
    signer: TreeSigner = request.state.signer
    return signer


Signer = Annotated[TreeSigner, Depends(get_signer)]
# Positions and tree sizes are PostgreSQL bigints: a larger number names nothing, and
# asyncpg would refuse to send it (a 500) rather than find no row.
MAX_POSITION: Final = 2**63 - 1


def _ndjson(lines: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(lines, media_type="application/x-ndjson")


async def _streamed(engine: AsyncEngine, produce: object) -> AsyncIterator[str]:
    # The stream outlives the request's dependencies: it opens its own connection.
    async with engine.connect() as conn:
        async for item in produce(conn):  # type: ignore[operator]  # a generator factory
            yield item if isinstance(item, str) else json.dumps(item) + "\n"


@router.get("/orders/{order_id}/history", response_model=OrderHistory)
async def order_history(order_id: UUID, conn: DbConnection, _: Reader) -> OrderHistory:
    """Every event of the order in ledger order, with positions and hashes."""
    return OrderHistory(
        order_id=order_id, entries=list(await queries.get_history(conn, order_id))
    )


@router.get("/orders/{order_id}/state", response_model=OrderStateAt)
async def order_state(
    order_id: UUID, as_of: Instant, conn: DbConnection, _: Reader
) -> OrderStateAt:
    """The order folded from the events that had happened by `as_of` (RFC 3339)."""
    return await queries.state_as_of(conn, order_id, as_of)


@router.get("/orders/{order_id}/verify", response_model=VerifyResult)
async def verify_order(order_id: UUID, conn: DbConnection, _: Auditor) -> VerifyResult:
    """Recompute the order's hash chain from the stored bytes."""
    return await queries.verify_order(conn, order_id)


@router.get("/orders/{order_id}/receipt", response_model=Receipt)
async def order_receipt(
    order_id: UUID, conn: DbConnection, signer: Signer, actor: ReceiptReader
) -> Receipt:
    """The order's ledger entries with inclusion proofs against one signed tree
    head: verify offline with `servicetrail audit-receipt`."""
    return await queries.get_receipt(conn, order_id, signer, actor=actor)


@router.get("/ledger/verify", response_class=StreamingResponse)
async def verify_ledger(
    engine: Engine, signer: Signer, _: Auditor
) -> StreamingResponse:
    """Verify the whole ledger: NDJSON progress lines, then `{"result": ...}`."""
    return _ndjson(_streamed(engine, lambda conn: queries.verify_ledger(conn, signer)))


@router.get("/ledger/checkpoint", response_model=Checkpoint)
async def checkpoint(conn: DbConnection, signer: Signer, _: CurrentActor) -> Checkpoint:
    """The latest signed tree head, with the public key that verifies it."""
    return await queries.latest_checkpoint(conn, signer)


@router.get("/ledger/proof/{event_id}", response_model=InclusionProof)
async def inclusion(
    event_id: UUID, conn: DbConnection, signer: Signer, _: Auditor
) -> InclusionProof:
    """Merkle inclusion proof of an event against the latest signed tree head."""
    return await queries.prove_inclusion(conn, event_id, signer)


@router.get("/ledger/consistency", response_model=ConsistencyProof)
async def consistency(
    conn: DbConnection,
    _: Auditor,
    first: Annotated[int, Query(ge=1, le=MAX_POSITION)],
    second: Annotated[int | None, Query(ge=1, le=MAX_POSITION)] = None,
) -> ConsistencyProof:
    """Consistency proof between two signed tree sizes (second: the latest)."""
    return await queries.prove_consistency(conn, first, second)


@router.get("/ledger/export", response_class=StreamingResponse)
async def export(
    engine: Engine,
    signer: Signer,
    _: Auditor,
    start: Annotated[int, Query(alias="from", ge=0, le=MAX_POSITION)] = 0,
    end: Annotated[int | None, Query(alias="to", ge=0, le=MAX_POSITION)] = None,
) -> StreamingResponse:
    """NDJSON export of ledger entries [from, to) and the latest signed tree head."""
    return _ndjson(
        _streamed(
            engine,
            lambda conn: queries.export_lines(conn, signer, start=start, end=end),
        )
    )


@router.get("/ledger/completeness", response_model=Completeness)
async def completeness(conn: DbConnection, _: Auditor) -> Completeness:
    """Events the ledger lacks, its lag behind the event store, orders with gaps."""
    return await queries.completeness(conn)
