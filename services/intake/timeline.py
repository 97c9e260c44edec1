"""The customer's view of an order: its events as the customer may see them.

Each event keeps its type, time and version and only the part of its data that is
the customer's business: who comes (the technician's id and registry name), when
(the ETA), what was found, quoted, charged and rated. Left out on purpose: the
CloudEvents `actor` (which dispatcher or service acted), `contact_ref`, device ids
and sequences, trace and correlation ids, the assignment engine's reasons, decline
reasons, evidence object keys and the technician's location.

`assignment_expired` (dispatch, events.md v2) and `declined` are shown as plain notes
without the technician's id: the customer learns that someone else is being found,
not who let the order go. Types this release does not know are skipped, so a new event type
never breaks the timeline.

Pure: the stdlib, pydantic and the shared domain; technician names are an argument.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final
from uuid import UUID

from pydantic import ValidationError

from services.intake.schemas import (
    ComplaintView,
    CompletionView,
    DiagnosisView,
    FinalPriceView,
    OrderTimeline,
    PriceLine,
    QuoteLines,
    RatingView,
    RequestView,
    TechnicianRef,
    TimelineEntry,
)
from shared.domain import events
from shared.domain.errors import UnknownEventType, UnknownSchema
from shared.domain.events import TYPE_PREFIX, OrderPayload, PriceItem
from shared.domain.evolution import read_event_data
from shared.domain.lifecycle import OrderState

# Dispatch's event when an assignment is not answered in time. Handled by its name:
# nothing of its data is shown.
ASSIGNMENT_EXPIRED: Final = "assignment_expired"
EXPIRED_NOTE: Final = "The technician did not answer in time; reassigning."
DECLINED_NOTE: Final = "The technician could not take the order; reassigning."


@dataclass(frozen=True, slots=True)
class SeenEvent:
    """An event the timeline shows; `data` None: shown by its type alone."""

    type: str
    event_id: UUID
    time: datetime
    version: int
    data: OrderPayload | None


def seen_events(envelopes: Iterable[Mapping[str, Any]]) -> list[SeenEvent]:
    """The stored envelopes the timeline shows, parsed; unknown types are skipped."""
    seen: list[SeenEvent] = []
    for envelope in envelopes:
        short = str(envelope["type"]).removeprefix(TYPE_PREFIX)
        data: OrderPayload | None = None
        if short != ASSIGNMENT_EXPIRED:
            try:
                data = read_event_data(
                    short, envelope.get("dataschema"), json.dumps(envelope["data"])
                ).data
            except (UnknownEventType, UnknownSchema, ValidationError):
                continue  # a type (or version, or shape) newer than this release
        seen.append(
            SeenEvent(
                type=short,
                event_id=UUID(str(envelope["id"])),
                time=datetime.fromisoformat(str(envelope["time"])),
                version=int(envelope["orderversion"]),
                data=data,
            )
        )
    return seen


def _technician_of(data: OrderPayload | None) -> str | None:
    match data:
        case (
            events.Assigned(technician_id=technician_id)
            | events.Accepted(technician_id=technician_id)
            | events.Arrived(technician_id=technician_id)
        ):
            return technician_id
    return None


def technician_ids(seen: Iterable[SeenEvent]) -> set[str]:
    """Every technician the events name (whose registry names the view needs)."""
    return {t for e in seen if (t := _technician_of(e.data)) is not None}


def final_price_of(state: OrderState) -> FinalPriceView | None:
    """What the job cost, with the final outcome (None: not completed).

    The sum over the visits since the order was created or reopened: a follow-up
    visit's bill adds to the first one's, both under one approved quote.
    """
    if state.final_total is None:
        return None
    return FinalPriceView(
        currency=state.final_currency,
        total=state.charged_total,
        outcome=None if state.final_outcome is None else state.final_outcome.value,
    )


def _technician(technician_id: str, names: Mapping[str, str]) -> TechnicianRef:
    return TechnicianRef(technician_id=technician_id, name=names.get(technician_id))


def _lines(items: Sequence[PriceItem]) -> list[PriceLine]:
    return [
        PriceLine(
            kind=item.kind.value,
            description=item.description,
            quantity=item.quantity,
            unit_price=item.unit_price,
            amount=item.amount,
        )
        for item in items
    ]


def _details(event: SeenEvent, names: Mapping[str, str]) -> dict[str, object]:
    """The entry's fields beyond type, time and version."""
    match event.data:
        case None:  # assignment_expired
            return {"note": EXPIRED_NOTE}
        case events.Created() as created:
            private = {"customer_id", "contact_ref"}
            return {
                "request": RequestView.model_validate(
                    created.model_dump(mode="json", exclude=private)
                )
            }
        case events.Declined():
            return {"note": DECLINED_NOTE}
        case (
            events.Assigned(technician_id=technician_id)
            | events.Arrived(technician_id=technician_id)
        ):
            return {"technician": _technician(technician_id, names)}
        case events.Accepted(technician_id=technician_id, eta_minutes=minutes):
            return {
                "technician": _technician(technician_id, names),
                "eta": event.time + timedelta(minutes=minutes),
            }
        case events.Diagnosed() as diagnosed:
            return {"diagnosis": DiagnosisView.model_validate(diagnosed.model_dump())}
        case events.Priced(currency=currency, items=items, total=total):
            return {
                "quote": QuoteLines(
                    event_id=event.event_id,
                    currency=currency,
                    items=_lines(items),
                    total=total,
                )
            }
        case (
            events.QuoteApproved(quote_event_id=quote)
            | events.QuoteRejected(quote_event_id=quote)
        ):
            return {"quote_event_id": quote}
        case events.Completed() as completed:
            return {
                "completion": CompletionView(
                    currency=completed.currency,
                    items=_lines(completed.final_items),
                    total=completed.final_total,
                    outcome=completed.outcome.value,
                    parts_used=list(completed.parts_used),
                    notes=completed.notes,
                )
            }
        case events.Rated() as rated:
            dimensions = (
                {} if rated.dimensions is None else rated.dimensions.model_dump()
            )
            return {
                "rating": RatingView(
                    score=rated.score,
                    nps=rated.nps,
                    dimensions={k: v for k, v in dimensions.items() if v is not None},
                    comment=None if rated.comment is None else rated.comment.text,
                    comment_language=None
                    if rated.comment is None
                    else rated.comment.language,
                )
            }
        case events.Cancelled(reason=reason) | events.Reopened(reason=reason):
            return {"reason": reason}
        case events.ComplaintFiled() as filed:
            return {"complaint": ComplaintView.model_validate(filed.model_dump())}
        case events.ComplaintResolved() as resolved:
            return {"complaint": ComplaintView.model_validate(resolved.model_dump())}
    return {}


def build_timeline(
    state: OrderState, seen: Sequence[SeenEvent], names: Mapping[str, str]
) -> OrderTimeline:
    """The order's summary (status, technician, ETA, final price, rating) and entries."""
    ratings = [e.data.score for e in seen if isinstance(e.data, events.Rated)]
    return OrderTimeline(
        order_id=state.order_id,
        status=state.status.value,
        orderversion=state.version,
        technician=None
        if state.technician_id is None
        else _technician(state.technician_id, names),
        eta=state.promised_arrival,
        final_price=final_price_of(state),
        rating=ratings[-1] if ratings else None,
        entries=[
            TimelineEntry.model_validate(
                {
                    "type": e.type,
                    "time": e.time,
                    "orderversion": e.version,
                    **_details(e, names),
                }
            )
            for e in seen
        ],
    )
