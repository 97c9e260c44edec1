"""Dispatch's Kafka handler: assign new and declined orders automatically."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from services.dispatch.commands import auto_assign
from shared.domain.errors import DomainError
from shared.domain.events import Created, Declined
from shared.kafka.consumer import ConsumedEvent
from shared.orders.writer import OrderWriter

logger = logging.getLogger(__name__)


class AutoAssigner:
    """On `created` and `declined`, offer the order to the best eligible technician.

    A redelivered `created` whose order has moved on finds it no longer waiting.
    """

    def __init__(self, writer: OrderWriter) -> None:
        self._writer = writer

    async def handle(
        self, events: Sequence[ConsumedEvent], conn: AsyncConnection
    ) -> None:
        for consumed in events:
            match consumed.event.data:
                case Created() | Declined():
                    try:
                        await auto_assign(
                            self._writer,
                            conn,
                            consumed.event.order_id,
                            now=datetime.now(UTC),
                        )
                    except DomainError as err:
                        # The order moved on (cancelled, assigned by hand): nothing to do.
                        logger.info(
                            "no auto-assignment for %s: %s",
                            consumed.event.order_id,
                            err.code,
                        )
                case _:
                    pass
