"""Response models that more than one service returns."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, Field

from shared.db.order_summary import Page


class OrderSummary(BaseModel):
    order_id: UUID
    status: str
    orderversion: int
    customer_id: str | None
    technician_id: str | None
    created_at: datetime | None
    updated_at: datetime


class OrderPage(BaseModel):
    items: list[OrderSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")

    @classmethod
    def of(cls, page: Page) -> OrderPage:
        return cls(
            items=[
                OrderSummary(
                    order_id=row.order_id,
                    status=row.status,
                    orderversion=row.version,
                    customer_id=row.customer_id,
                    technician_id=row.technician_id,
                    created_at=row.created_at,
                    updated_at=row.updated_at,
                )
                for row in page.rows
            ],
            next_cursor=page.next_cursor,
        )
