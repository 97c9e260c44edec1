"""Ledger HTTP routes."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends

from services.ledger import queries
from services.ledger.schemas import OrderHistory
from shared.domain.actors import Actor, Role
from shared.http.deps import DbConnection, actor_with_role

router = APIRouter(prefix="/v1", tags=["ledger"])

Auditor = Annotated[Actor, Depends(actor_with_role(Role.AUDITOR, Role.DISPATCHER))]


@router.get("/orders/{order_id}/history", response_model=OrderHistory)
async def order_history(order_id: UUID, conn: DbConnection, _: Auditor) -> OrderHistory:
    """Every event of the order in ledger order, with positions and hashes."""
    return OrderHistory(
        order_id=order_id, entries=list(await queries.get_history(conn, order_id))
    )
