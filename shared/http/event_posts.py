"""The answer to an event post over HTTP (intake and dispatch)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field

from shared.orders.request import Recorded


class EventRecorded(BaseModel):
    """The answer to an accepted (or retried) event post."""

    order_id: UUID
    orderversion: int
    event: dict[str, Any] = Field(
        description="The stored CloudEvent (structured JSON)."
    )

    @classmethod
    def of(cls, recorded: Recorded) -> EventRecorded:
        return cls(
            order_id=recorded.order_id,
            orderversion=recorded.version,
            event=recorded.envelope,
        )
