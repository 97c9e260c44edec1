"""Dispatch's Kafka handlers: assign waiting orders automatically; keep the
technicians' quality scores that metrics publishes."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection

from services.dispatch import store
from services.dispatch.commands import auto_assign, clear_unassignable
from services.dispatch.domain import AssignmentPolicy, QualityScore
from shared.domain.errors import DomainError
from shared.domain.events import (
    Assigned,
    AssignmentExpired,
    Cancelled,
    Created,
    Declined,
    Reopened,
)
from shared.events.quality import TECHNICIAN_SCORED_TYPE, parse_technician_scored
from shared.kafka.consumer import ConsumedEvent, PoisonRecord, parse_cloudevent_header
from shared.orders.writer import OrderWriter
from shared.tracing import in_span

logger = logging.getLogger(__name__)


class AutoAssigner:
    """Whenever an order starts waiting for a technician (`created`, `declined`,
    `assignment_expired`, `reopened`), offer it to the best eligible technician;
    when it is assigned or cancelled, clear its unassignable alert.

    A redelivered event whose order has moved on finds it no longer waiting.
    """

    def __init__(self, writer: OrderWriter, policy: AssignmentPolicy) -> None:
        self._writer = writer
        self._policy = policy

    async def handle(
        self, events: Sequence[ConsumedEvent], conn: AsyncConnection
    ) -> None:
        for consumed in events:
            order_id = consumed.event.order_id
            match consumed.event.data:
                case Created() | Declined() | AssignmentExpired() | Reopened():
                    try:
                        # Traced, the assignment continues the waiting event's trace.
                        with in_span(consumed.span):
                            await auto_assign(
                                self._writer,
                                conn,
                                order_id,
                                now=datetime.now(UTC),
                                policy=self._policy,
                            )
                    except DomainError as err:
                        # The order moved on (cancelled, assigned by hand): nothing to do.
                        logger.info("no auto-assignment for %s: %s", order_id, err.code)
                case Assigned() | Cancelled():
                    await clear_unassignable(conn, order_id, now=datetime.now(UTC))
                case _:
                    pass


def parse_quality_record(record: ConsumerRecord[bytes, bytes]) -> ConsumedEvent:
    """Read a quality-topic record; a score event must validate entirely.

    Other quality events (alerts and their cases) are read as far as their type and
    ignored by the handler. A malformed score event raises PoisonRecord, so it is
    dead-lettered and never reaches the read model.
    """
    consumed = parse_cloudevent_header(record)
    if consumed.header.type == TECHNICIAN_SCORED_TYPE:
        assert record.value is not None  # parse_cloudevent_header refused it
        try:
            parse_technician_scored(record.value)
        except ValidationError as err:
            raise PoisonRecord(f"invalid technician_scored: {err}") from err
    return consumed


class QualityScores:
    """Keeps `dispatch.technician_quality`: the newest score per technician wins."""

    async def handle(
        self, events: Sequence[ConsumedEvent], conn: AsyncConnection
    ) -> None:
        for consumed in events:
            if consumed.header.type != TECHNICIAN_SCORED_TYPE:
                continue
            assert consumed.record.value is not None
            scored = parse_technician_scored(consumed.record.value).data
            await store.upsert_quality(
                conn,
                scored.technician_id,
                QualityScore(composite=scored.composite, samples=scored.samples),
                as_of=scored.as_of,
            )
