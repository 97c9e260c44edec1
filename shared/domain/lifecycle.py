"""The order lifecycle of events.md: one state machine shared by every service.

Three functions, and the split matters:

- `evolve(state, event)` applies a recorded fact. It never raises, whatever the
  sequence, so replaying a stream (ledger `as_of`, projections, audits) cannot fail.
- `fold(events)` is `functools.reduce(evolve, events, None)`.
- `decide(state, proposed, policy=..., now=...)` checks one write against every rule
  and returns the event to append, or raises a `DomainError`.

The plain edges are data (`TRANSITIONS`); the conditional ones (remote diagnosis,
warranty completion, follow-up completion, a follow-up visit's completion, the expiry
of the current assignment only, rating once, the reopen window, complaint pairing)
are small named guards applied in `decide`.

Pure domain: imports only the stdlib and pydantic, never an I/O framework, and reads
no clock: `now` and the `Policy` are arguments.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Final, TypedDict, assert_never
from uuid import UUID

from shared.domain import errors, events
from shared.domain.actors import Actor, Role
from shared.domain.events import OrderPayload, Outcome, Urgency
from shared.domain.rules import Policy


class OrderStatus(StrEnum):
    CREATED = "created"
    ASSIGNED = "assigned"
    ACCEPTED = "accepted"
    ON_SITE = "on_site"
    DIAGNOSED = "diagnosed"
    QUOTED = "quoted"
    APPROVED = "approved"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


_S = OrderStatus

# "any state before completed" may be cancelled.
BEFORE_COMPLETED: Final[frozenset[OrderStatus]] = frozenset(
    {
        _S.CREATED,
        _S.ASSIGNED,
        _S.ACCEPTED,
        _S.ON_SITE,
        _S.DIAGNOSED,
        _S.QUOTED,
        _S.APPROVED,
    }
)

# Every allowed (status, event type) -> next status. Edges marked "guarded" also need
# their guard in `decide`; a follow-up completion leads to ACCEPTED instead (see
# `next_status`).
TRANSITIONS: Final[Mapping[tuple[OrderStatus, str], OrderStatus]] = MappingProxyType(
    {
        (_S.CREATED, events.Assigned.TYPE): _S.ASSIGNED,
        (_S.ASSIGNED, events.Accepted.TYPE): _S.ACCEPTED,
        (_S.ASSIGNED, events.Declined.TYPE): _S.CREATED,
        # guarded: the current assignment only
        (_S.ASSIGNED, events.AssignmentExpired.TYPE): _S.CREATED,
        (_S.ACCEPTED, events.Arrived.TYPE): _S.ON_SITE,
        (_S.ACCEPTED, events.Diagnosed.TYPE): _S.DIAGNOSED,  # guarded: remote only
        (_S.ON_SITE, events.Diagnosed.TYPE): _S.DIAGNOSED,
        # guarded: a follow-up visit under the approved quote (events.md v2)
        (_S.ON_SITE, events.Completed.TYPE): _S.COMPLETED,
        (_S.DIAGNOSED, events.Priced.TYPE): _S.QUOTED,
        (_S.DIAGNOSED, events.Completed.TYPE): _S.COMPLETED,  # guarded: free warranty
        (_S.QUOTED, events.QuoteApproved.TYPE): _S.APPROVED,  # guarded: current quote
        (_S.QUOTED, events.QuoteRejected.TYPE): _S.DIAGNOSED,  # guarded: current quote
        (_S.APPROVED, events.Priced.TYPE): _S.QUOTED,
        (_S.APPROVED, events.Completed.TYPE): _S.COMPLETED,  # guarded: price tolerance
        (_S.COMPLETED, events.Rated.TYPE): _S.COMPLETED,  # guarded: once per order
        (_S.COMPLETED, events.Reopened.TYPE): _S.CREATED,  # guarded: warranty window
        **{
            (status, events.Cancelled.TYPE): _S.CANCELLED for status in BEFORE_COMPLETED
        },
        # Complaints may come at any time once the order exists, even after it ended.
        **{(status, events.ComplaintFiled.TYPE): status for status in OrderStatus},
        # guarded: only an open complaint is resolved
        **{(status, events.ComplaintResolved.TYPE): status for status in OrderStatus},
    }
)

# Where each event type leads whatever the current status. Used only when replay
# meets an edge TRANSITIONS lacks (a history written under other rules, or repaired
# by hand): the fact happened, so the state follows it. Types that never move the
# order (rated, complaints, a repeated created) are absent and keep the status.
_LANDING: Final[Mapping[str, OrderStatus]] = MappingProxyType(
    {
        events.Assigned.TYPE: _S.ASSIGNED,
        events.Declined.TYPE: _S.CREATED,
        events.AssignmentExpired.TYPE: _S.CREATED,
        events.Accepted.TYPE: _S.ACCEPTED,
        events.Arrived.TYPE: _S.ON_SITE,
        events.Diagnosed.TYPE: _S.DIAGNOSED,
        events.Priced.TYPE: _S.QUOTED,
        events.QuoteApproved.TYPE: _S.APPROVED,
        events.QuoteRejected.TYPE: _S.DIAGNOSED,
        events.Completed.TYPE: _S.COMPLETED,
        events.Cancelled.TYPE: _S.CANCELLED,
        events.Reopened.TYPE: _S.CREATED,
    }
)

CUSTOMER_EVENTS: Final[frozenset[str]] = frozenset(
    cls.TYPE
    for cls in (
        events.Created,
        events.Cancelled,
        events.QuoteApproved,
        events.QuoteRejected,
        events.Rated,
        events.Reopened,
        events.ComplaintFiled,
    )
)
TECHNICIAN_EVENTS: Final[frozenset[str]] = frozenset(
    cls.TYPE
    for cls in (
        events.Accepted,
        events.Declined,
        events.Arrived,
        events.Diagnosed,
        events.Priced,
        events.Completed,
    )
)
DISPATCHER_EVENTS: Final[frozenset[str]] = frozenset(
    # Dispatchers take phone orders on a customer's behalf (channel "phone").
    cls.TYPE
    for cls in (
        events.Created,
        events.Assigned,
        events.Cancelled,
        events.ComplaintResolved,
    )
)
# Who may post which event types at all, before looking at the order. Admins may
# post anything (repairs, support on behalf of a participant); auditors and plain
# services post nothing.
POSTABLE_BY_ROLE: Final[Mapping[Role, frozenset[str]]] = MappingProxyType(
    {
        Role.CUSTOMER: CUSTOMER_EVENTS,
        Role.TECHNICIAN: TECHNICIAN_EVENTS,
        Role.DISPATCHER: DISPATCHER_EVENTS,
        Role.ADMIN: frozenset(events.PAYLOAD_TYPES),
    }
)
# `system:<service>` actors: only dispatch's assignment engine writes order events.
AUTO_DISPATCH: Final = Actor(Role.SYSTEM, "dispatch")
POSTABLE_BY_SYSTEM: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {AUTO_DISPATCH.id: frozenset({events.Assigned.TYPE, events.AssignmentExpired.TYPE})}
)


def _require_aware(value: datetime, name: str) -> None:
    # Naive datetimes cannot be compared with aware ones; refuse them at
    # construction so that neither evolve nor decide can trip over one later.
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {value!r}")


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """A recorded fact: one event of an order's stream, as stored."""

    event_id: UUID
    order_id: UUID
    version: int
    time: datetime
    recorded_at: datetime
    actor: Actor
    data: OrderPayload
    correlation_id: str | None = None
    causation_id: str | None = None
    device_id: str | None = None
    device_sequence: int | None = None
    # The payload as written when its schema version is older than `data`'s (which
    # is always the newest, upcast by shared.domain.evolution); None when written in
    # the newest. The envelope carries this form: stored bytes never change.
    written_as: events.Payload | None = None

    def __post_init__(self) -> None:
        _require_aware(self.time, "time")
        _require_aware(self.recorded_at, "recorded_at")


@dataclass(frozen=True, slots=True)
class ProposedEvent:
    """A write to check: what a client (or a service) wants to append."""

    event_id: UUID
    time: datetime
    actor: Actor
    data: OrderPayload
    correlation_id: str | None = None
    causation_id: str | None = None
    device_id: str | None = None
    device_sequence: int | None = None
    written_as: events.Payload | None = None  # as OrderEvent.written_as

    def __post_init__(self) -> None:
        _require_aware(self.time, "time")


@dataclass(frozen=True, slots=True)
class Quote:
    """A `priced` event, as the state remembers it."""

    event_id: UUID
    currency: str
    total: int
    items: tuple[events.PriceItem, ...]


@dataclass(frozen=True, slots=True)
class OrderState:
    """An order folded from its events.

    The attributes from `created` (customer_id .. created_at) are None only for a
    stream that lacks its `created` event (truncated or damaged): replay still works
    and never invents the order's attributes.
    """

    order_id: UUID
    version: int
    status: OrderStatus
    customer_id: str | None
    category: str | None
    region: str | None
    urgency: Urgency | None
    warranty: bool
    created_at: datetime | None
    # `time` of the latest event: the next one must not be earlier.
    last_event_at: datetime
    # The current assignee; None while the order waits for an assignment.
    technician_id: str | None = None
    # Technicians who declined this order; it is not offered to them again.
    declined_by: frozenset[str] = frozenset()
    # Technicians whose assignment expired unanswered since the order was created
    # or reopened: like a decline, the engine does not offer it to them again, but
    # a dispatcher still may assign them by hand.
    expired_for: frozenset[str] = frozenset()
    # The latest assignment: which event, and when (its accept clock starts there).
    assigned_event_id: UUID | None = None
    assigned_at: datetime | None = None
    first_assigned_at: datetime | None = None
    first_accepted_at: datetime | None = None
    # The first `accepted`'s time + its eta_minutes: what the customer was told.
    promised_arrival: datetime | None = None
    first_arrived_at: datetime | None = None
    first_diagnosed_at: datetime | None = None
    # The first *final* completion (outcome fixed or not_fixed), as indicators.md
    # measures it, and who performed it.
    first_completed_at: datetime | None = None
    first_outcome: Outcome | None = None
    first_completed_by: str | None = None
    # When the server recorded the first final completion: the warranty (reopen)
    # window runs from here, on the server's clock, never on a device's `time`.
    first_completed_recorded_at: datetime | None = None
    # The latest final completion.
    completed_at: datetime | None = None
    cancelled_at: datetime | None = None
    reopened_at: datetime | None = None
    # `arrived` events before the first final completion.
    visits: int = 0
    # Completions with outcome follow_up_required.
    follow_ups: int = 0
    # The latest quote, until it is rejected or the order is reopened.
    current_quote: Quote | None = None
    # The latest approved quote; completions are held to its total.
    approved_quote: Quote | None = None
    quotes_count: int = 0
    # The sum of final_total over the completions since the order was created or
    # reopened: several visits together must stay within the approved quote.
    charged_total: int = 0
    # Of the latest final completion.
    final_total: int | None = None
    final_currency: str | None = None
    final_outcome: Outcome | None = None
    rated: bool = False
    reopen_count: int = 0
    open_complaints: frozenset[str] = frozenset()
    all_complaints: frozenset[str] = frozenset()

    @property
    def under_warranty(self) -> bool:
        """Work is covered: a warranty order, or rework after a reopen.

        A reopen happens within the warranty window of the earlier repair, so the
        rework it asks for is warranty work too.
        """
        return self.warranty or self.reopen_count > 0


# --- evolve: apply facts, never refuse ------------------------------------------


def next_status(status: OrderStatus, data: OrderPayload) -> OrderStatus:
    """The status after `data` is applied in `status`.

    An allowed edge follows TRANSITIONS; an edge the rules would refuse follows the
    event type's usual landing, so replay of any history yields a status.
    """
    match data:
        case events.Completed(outcome=Outcome.FOLLOW_UP_REQUIRED):
            # Another visit is needed: back to waiting for the technician's arrival.
            return _S.ACCEPTED
        case _:
            return TRANSITIONS.get((status, data.TYPE), _LANDING.get(data.TYPE, status))


def _begin(event: OrderEvent) -> OrderState:
    """The state before an order's first event: attributes unknown until `created`."""
    return OrderState(
        order_id=event.order_id,
        version=0,
        status=_S.CREATED,
        customer_id=None,
        category=None,
        region=None,
        urgency=None,
        warranty=False,
        created_at=None,
        last_event_at=event.time,
    )


def _first(current: datetime | None, time: datetime) -> datetime:
    return time if current is None else current


class _Step(TypedDict):
    """What every fact changes: the stream position, the clock, the status."""

    version: int
    last_event_at: datetime
    status: OrderStatus


def _apply_completion(
    state: OrderState, event: OrderEvent, done: events.Completed, step: _Step
) -> OrderState:
    charged = state.charged_total + done.final_total
    if not done.outcome.is_final:
        return replace(
            state, **step, follow_ups=state.follow_ups + 1, charged_total=charged
        )
    first = state.first_completed_at is None
    return replace(
        state,
        **step,
        first_completed_at=event.time if first else state.first_completed_at,
        first_outcome=done.outcome if first else state.first_outcome,
        first_completed_by=state.technician_id if first else state.first_completed_by,
        first_completed_recorded_at=(
            event.recorded_at if first else state.first_completed_recorded_at
        ),
        completed_at=event.time,
        final_total=done.final_total,
        final_currency=done.currency,
        final_outcome=done.outcome,
        charged_total=charged,
    )


def _apply(state: OrderState, event: OrderEvent, step: _Step) -> OrderState:
    """The state after one fact; `step` carries what every fact changes.

    One `replace` per fact: the state has many fields, and replay speed matters.
    """
    time = event.time
    match event.data:
        case events.Created() as created if state.created_at is None:
            return replace(
                state,
                **step,
                customer_id=created.customer_id,
                category=created.category,
                region=created.region,
                urgency=created.urgency,
                warranty=created.warranty,
                created_at=time,
            )
        case events.Created():
            return replace(state, **step)  # a repeated created adds nothing
        case events.Assigned(technician_id=technician_id):
            return replace(
                state,
                **step,
                technician_id=technician_id,
                assigned_event_id=event.event_id,
                assigned_at=time,
                first_assigned_at=_first(state.first_assigned_at, time),
            )
        case events.Declined(technician_id=technician_id):
            return replace(
                state,
                **step,
                technician_id=None,
                declined_by=state.declined_by | {technician_id},
            )
        case events.AssignmentExpired(technician_id=technician_id):
            return replace(
                state,
                **step,
                technician_id=None,
                expired_for=state.expired_for | {technician_id},
            )
        case events.Accepted(technician_id=technician_id, eta_minutes=eta):
            first = state.first_accepted_at is None
            return replace(
                state,
                **step,
                technician_id=technician_id,
                first_accepted_at=time if first else state.first_accepted_at,
                promised_arrival=(
                    time + timedelta(minutes=eta) if first else state.promised_arrival
                ),
            )
        case events.Arrived():
            before_final = state.first_completed_at is None
            return replace(
                state,
                **step,
                first_arrived_at=_first(state.first_arrived_at, time),
                visits=state.visits + 1 if before_final else state.visits,
            )
        case events.Diagnosed():
            return replace(
                state,
                **step,
                first_diagnosed_at=_first(state.first_diagnosed_at, time),
            )
        case events.Priced(currency=currency, total=total, items=items):
            return replace(
                state,
                **step,
                current_quote=Quote(event.event_id, currency, total, items),
                quotes_count=state.quotes_count + 1,
            )
        case events.QuoteApproved(quote_event_id=quote_id) if names_current_quote(
            state, quote_id
        ):
            return replace(state, **step, approved_quote=state.current_quote)
        case events.QuoteRejected(quote_event_id=quote_id) if names_current_quote(
            state, quote_id
        ):
            return replace(state, **step, current_quote=None)
        case events.QuoteApproved() | events.QuoteRejected():
            return replace(state, **step)  # a stale quote decision decides nothing
        case events.Completed() as done:
            return _apply_completion(state, event, done, step)
        case events.Rated():
            return replace(state, **step, rated=True)
        case events.Cancelled():
            return replace(state, **step, cancelled_at=_first(state.cancelled_at, time))
        case events.Reopened():
            # Rework starts over: a new assignment, diagnosis and, if charged, quote.
            return replace(
                state,
                **step,
                technician_id=None,
                expired_for=frozenset(),
                current_quote=None,
                approved_quote=None,
                charged_total=0,
                reopen_count=state.reopen_count + 1,
                reopened_at=time,
            )
        case events.ComplaintFiled(complaint_id=complaint_id):
            return replace(
                state,
                **step,
                open_complaints=state.open_complaints | {complaint_id},
                all_complaints=state.all_complaints | {complaint_id},
            )
        case events.ComplaintResolved(complaint_id=complaint_id):
            return replace(
                state,
                **step,
                open_complaints=state.open_complaints - {complaint_id},
            )
        case _:
            assert_never(event.data)


def evolve(state: OrderState | None, event: OrderEvent) -> OrderState:
    """Apply one recorded fact. Never raises, on any sequence of events."""
    current = _begin(event) if state is None else state
    step = _Step(
        version=event.version,
        last_event_at=event.time,
        status=next_status(current.status, event.data),
    )
    return _apply(current, event, step)


def fold(events: Iterable[OrderEvent]) -> OrderState | None:
    """The state after all `events` (None for an empty stream)."""
    initial: OrderState | None = None
    return functools.reduce(evolve, events, initial)


# --- guards of the conditional edges ---------------------------------------------


def names_current_quote(state: OrderState, quote_event_id: UUID) -> bool:
    """A quote decision must name the quote awaiting it, not an older one."""
    quote = state.current_quote
    return quote is not None and quote.event_id == quote_event_id


def diagnosis_allowed(state: OrderState, diagnosed: events.Diagnosed) -> bool:
    """Without a visit (still ACCEPTED), only a remote diagnosis is possible."""
    return state.status is not _S.ACCEPTED or diagnosed.remote


def is_follow_up_visit(state: OrderState) -> bool:
    """On site again after completed(follow_up_required), under an approved quote.

    The customer already approved the work: the visit may complete it without a new
    diagnosis and quote (a new diagnosis still leads to a new quote).
    """
    return state.follow_ups > 0 and state.approved_quote is not None


def expires_current_assignment(
    state: OrderState, expired: events.AssignmentExpired
) -> bool:
    """An expiry ends the assignment it names, and only while it is the current one."""
    return (
        expired.assigned_event_id == state.assigned_event_id
        and expired.technician_id == state.technician_id
    )


def is_free_warranty_completion(state: OrderState, done: events.Completed) -> bool:
    """Completing right after diagnosis needs warranty work with nothing charged."""
    return state.under_warranty and done.final_total == 0


def reopen_window_open(state: OrderState, policy: Policy, now: datetime) -> bool:
    """Judged on the server's clock: `now` against the recorded first completion.

    A device's `time` cannot stretch the window: it only has to be after the
    previous event and within the offline-sync grace.
    """
    completed = state.first_completed_recorded_at
    return completed is not None and policy.within_warranty_window(completed, now)


def may_post(actor: Actor, event_type: str) -> bool:
    """Whether the actor's role may post this event type at all."""
    if actor.role is Role.SYSTEM:
        return event_type in POSTABLE_BY_SYSTEM.get(actor.id, frozenset())
    return event_type in POSTABLE_BY_ROLE.get(actor.role, frozenset())


# --- decide: check one write ------------------------------------------------------


def _check_actor(actor: Actor, data: OrderPayload) -> None:
    if not may_post(actor, data.TYPE):
        raise errors.ActorNotAllowed(f"{actor.role} may not post {data.TYPE} events")
    if (
        isinstance(data, events.Created)
        and actor.role is Role.CUSTOMER
        and data.customer_id != actor.id
    ):
        raise errors.ActorNotAllowed("a customer creates orders only for themselves")


def check_access(state: OrderState | None, proposed: ProposedEvent) -> None:
    """Whether the actor may post this to this order at all, before anything else.

    Checked first so that a stranger learns nothing about the order (not even its
    version): they get the same answer as for an order that does not exist. Someone
    who took part (a technician who was assigned, then declined) already knows the
    order, so a stale write of theirs is a version conflict, not a 404.
    """
    _check_actor(proposed.actor, proposed.data)
    if state is not None:
        _check_participant(state, proposed.actor, ever=True)


def _check_participant(state: OrderState, actor: Actor, *, ever: bool = False) -> None:
    # Only the role's own kind of participant is checked: the role table already
    # limits customers to customer events and technicians to technician events.
    match actor.role:
        case Role.CUSTOMER:
            is_participant = actor.id == state.customer_id
        case Role.TECHNICIAN:
            is_participant = actor.id == state.technician_id or (
                ever and actor.id in state.declined_by | state.expired_for
            )
        case _:
            is_participant = True
    if not is_participant:
        # Says nothing about the order: it is answered as if it did not exist.
        raise errors.NotOrderParticipant(f"order {state.order_id} not found")


def _check_time(
    state: OrderState | None, time: datetime, *, policy: Policy, now: datetime
) -> None:
    if time > policy.latest_acceptable_time(now):
        raise errors.EventTimeInFuture(
            f"event time {time.isoformat()} is later than the server's clock "
            f"{now.isoformat()} plus {policy.max_clock_skew}"
        )
    if time < policy.earliest_acceptable_time(now):
        raise errors.EventTimeTooOld(
            f"event time {time.isoformat()} is earlier than the server's clock "
            f"{now.isoformat()} minus {policy.max_event_age} (the offline-sync grace)"
        )
    if state is not None and time < state.last_event_at:
        raise errors.EventTimeBeforePrevious(
            f"event time {time.isoformat()} is before the order's previous event "
            f"at {state.last_event_at.isoformat()}"
        )


def _check_within_approved_quote(
    state: OrderState, done: events.Completed, policy: Policy
) -> None:
    quote = state.approved_quote
    if done.final_total == 0:
        return  # nothing charged never exceeds a quote, in any currency
    charged = state.charged_total + done.final_total
    if quote is None:
        raise errors.PriceExceedsApprovedQuote(
            f"final_total {done.final_total} {done.currency} is charged without an "
            "approved quote; post a priced event and have it approved first"
        )
    if done.currency != quote.currency:
        raise errors.CurrencyMismatch(
            f"completion is in {done.currency}, the approved quote in {quote.currency}"
        )
    if not policy.within_price_tolerance(charged, quote.total):
        already = (
            f" (with {state.charged_total} charged on earlier visits)"
            if state.charged_total
            else ""
        )
        raise errors.PriceExceedsApprovedQuote(
            f"final_total {done.final_total} {done.currency}{already} exceeds the "
            f"approved quote's total {quote.total} by more than "
            f"{policy.price_tolerance * 100}%; post a revised priced event and have "
            "it approved first"
        )


def _check_completion(
    state: OrderState, done: events.Completed, policy: Policy
) -> None:
    match state.status:
        case _S.DIAGNOSED if not is_free_warranty_completion(state, done):
            raise errors.TransitionNotAllowed(
                "completed straight after diagnosed needs a warranty order with "
                "final_total 0; otherwise post priced and have it approved"
            )
        case _S.ON_SITE if not is_follow_up_visit(state):
            raise errors.TransitionNotAllowed(
                "completed on site needs a follow-up visit under an approved quote; "
                "otherwise post diagnosed, priced and have the quote approved"
            )
        case _S.APPROVED | _S.ON_SITE:
            _check_within_approved_quote(state, done, policy)
        case _:
            pass


def _check_rules(
    state: OrderState, proposed: ProposedEvent, *, policy: Policy, now: datetime
) -> None:
    data = proposed.data
    if (state.status, data.TYPE) not in TRANSITIONS:
        raise errors.TransitionNotAllowed(
            f"{data.TYPE} is not allowed while the order is {state.status}"
        )
    match data:
        case events.Assigned(technician_id=technician_id) if (
            technician_id in state.declined_by
        ):
            raise errors.TechnicianDeclinedOrder(
                f"technician {technician_id} already declined this order"
            )
        case (
            events.Accepted(technician_id=technician_id)
            | events.Declined(technician_id=technician_id)
            | events.Arrived(technician_id=technician_id)
        ) if technician_id != state.technician_id:
            raise errors.NotOrderParticipant(
                f"technician_id {technician_id} is not the technician assigned to "
                "this order"
            )
        case events.AssignmentExpired() as expired if not expires_current_assignment(
            state, expired
        ):
            raise errors.TransitionNotAllowed(
                f"assignment {expired.assigned_event_id} of technician "
                f"{expired.technician_id} is not the order's current assignment"
            )
        case events.Diagnosed() as diagnosed if not diagnosis_allowed(state, diagnosed):
            raise errors.TransitionNotAllowed(
                "diagnosed before arrived must be a remote diagnosis (remote=true)"
            )
        case (
            events.QuoteApproved(quote_event_id=quote_id)
            | events.QuoteRejected(quote_event_id=quote_id)
        ) if not names_current_quote(state, quote_id):
            raise errors.QuoteNotCurrent(
                f"{quote_id} is not the quote awaiting a decision"
            )
        case events.Completed() as done:
            _check_completion(state, done, policy)
        case events.Rated() if state.rated:
            raise errors.AlreadyRated("this order was already rated")
        case events.Reopened() if not reopen_window_open(state, policy, now):
            raise errors.WarrantyWindowExpired(
                f"the order can be reopened within {policy.warranty_window} after "
                "its first final completion"
            )
        case events.ComplaintFiled(complaint_id=complaint_id) if (
            complaint_id in state.all_complaints
        ):
            raise errors.DuplicateComplaint(
                f"complaint {complaint_id} was already filed"
            )
        case events.ComplaintResolved(complaint_id=complaint_id) if (
            complaint_id not in state.open_complaints
        ):
            raise errors.ComplaintNotOpen(f"complaint {complaint_id} is not open")
        case _:
            pass


def _record(
    proposed: ProposedEvent, *, order_id: UUID, version: int, now: datetime
) -> OrderEvent:
    return OrderEvent(
        event_id=proposed.event_id,
        order_id=order_id,
        version=version,
        time=proposed.time,
        recorded_at=now,
        actor=proposed.actor,
        data=proposed.data,
        correlation_id=proposed.correlation_id,
        causation_id=proposed.causation_id,
        device_id=proposed.device_id,
        device_sequence=proposed.device_sequence,
        written_as=proposed.written_as,
    )


def decide(
    state: OrderState | None,
    proposed: ProposedEvent,
    *,
    policy: Policy,
    now: datetime,
    order_id: UUID | None = None,
) -> OrderEvent:
    """Check one write against the order's state and return the event to append.

    Args:
        state: the order folded from its stream; None when it has no events yet.
        proposed: the write.
        policy: the configurable limits.
        now: the server's clock; becomes the event's `recorded_at`.
        order_id: the id of a new order; used only for `created`.

    Raises:
        errors.ActorNotAllowed: the actor's role may not post this type at all.
        errors.OrderNotFound: a non-`created` event for an order without events.
        errors.NotOrderParticipant: not this order's customer or assigned technician.
        errors.OrderEventLimitReached: the order holds `max_events_per_order`.
        errors.EventTimeInFuture: `time` is more than the clock skew past `now`.
        errors.EventTimeTooOld: `time` is more than `max_event_age` before `now`.
        errors.EventTimeBeforePrevious: `time` is before the previous event's.
        errors.TransitionNotAllowed: the lifecycle has no such edge here.
        errors.DomainError: one of the guards' refusals (quote, price, rating,
            reopen window, declined technician, complaint).
    """
    _require_aware(now, "now")
    data = proposed.data
    _check_actor(proposed.actor, data)
    if state is None:
        if not isinstance(data, events.Created):
            raise errors.OrderNotFound(f"{data.TYPE} for an order that does not exist")
        if order_id is None:
            raise ValueError("decide needs order_id to record a created event")
        _check_time(None, proposed.time, policy=policy, now=now)
        return _record(proposed, order_id=order_id, version=1, now=now)
    if order_id is not None and order_id != state.order_id:
        raise ValueError(f"order_id {order_id} is not the state's {state.order_id}")
    if isinstance(data, events.Created):
        raise errors.TransitionNotAllowed(
            f"created is not allowed while the order is {state.status}: "
            f"order {state.order_id} already exists"
        )
    _check_participant(state, proposed.actor)
    if not policy.holds_another_event(state.version):
        raise errors.OrderEventLimitReached(
            f"order {state.order_id} holds {state.version} events, the most one "
            "order may hold"
        )
    _check_time(state, proposed.time, policy=policy, now=now)
    _check_rules(state, proposed, policy=policy, now=now)
    return _record(
        proposed, order_id=state.order_id, version=state.version + 1, now=now
    )
