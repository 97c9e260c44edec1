# mypy: disable-error-code="prop-decorator"
# (pydantic's `@computed_field` is stacked on `@property`, its documented idiom, which
# mypy flags as an unsupported decorator; nothing else in this module needs it.)
"""Per-order facts that every indicator of indicators.md is computed from.

The metrics service keeps one `OrderFacts` record per order (JSONB in PostgreSQL)
and applies each new event to it with `apply_event`; the indicators are then SQL
aggregates over those records and over the per-event `RatingFact` and
`ComplaintFact` records. Replaying the ledger from the start (`derive_facts`) gives
the same records, so the same numbers.

The measurements of indicators.md are computed fields: they are part of the
model's JSON (`model_dump_json`), so SQL reads exactly the values defined here and
never re-implements a definition. Reloading that JSON with `model_validate_json`
ignores them and gives back an equal record.

Conventions:
- Durations are seconds (float) between event `time`s.
- A measurement that is None is outside its indicator's population (no final
  completion yet, no approved quote above zero, ...): aggregate over non-null values.
- Each measurement's docstring names the time that attributes it to a window
  ("at" in indicators.md).

Pure domain: imports only the stdlib and pydantic, never an I/O framework, and reads
no clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Literal, TypedDict, assert_never, overload
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, computed_field

from shared.domain import events
from shared.domain.actors import Actor, Role
from shared.domain.events import Channel, Outcome, Stars, Urgency
from shared.domain.lifecycle import OrderEvent

# Frozen: a record changes only by applying an event, which makes a new one.
# extra="ignore": stored JSON also holds the computed measurements, which are
# recomputed on load rather than trusted.
_RECORD = ConfigDict(frozen=True, extra="ignore")


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return (end - start).total_seconds()


# --- SLA targets -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SlaTarget:
    """How soon an order of one urgency must be accepted and visited, in minutes."""

    accept_minutes: int
    arrive_minutes: int

    def __post_init__(self) -> None:
        if self.accept_minutes < 0 or self.arrive_minutes < 0:
            raise ValueError("SLA targets must not be negative")


@dataclass(frozen=True, slots=True)
class SlaPolicy:
    """SLA targets per urgency; the defaults are the ones indicators.md states."""

    emergency: SlaTarget = field(default_factory=lambda: SlaTarget(15, 120))
    urgent: SlaTarget = field(default_factory=lambda: SlaTarget(60, 480))
    normal: SlaTarget = field(default_factory=lambda: SlaTarget(240, 2880))
    # Named in every indicator response's provenance: a number is only comparable
    # with numbers computed under the same targets.
    version: str = "sla-1"

    def target(self, urgency: Urgency) -> SlaTarget:
        """The targets for orders of this urgency."""
        match urgency:
            case Urgency.EMERGENCY:
                return self.emergency
            case Urgency.URGENT:
                return self.urgent
            case Urgency.NORMAL:
                return self.normal

    def accept_within(self, urgency: Urgency) -> timedelta:
        """The longest response time that still meets the SLA."""
        return timedelta(minutes=self.target(urgency).accept_minutes)

    def arrive_within(self, urgency: Urgency) -> timedelta:
        """The longest arrival time that still meets the SLA."""
        return timedelta(minutes=self.target(urgency).arrive_minutes)


# --- the per-order facts -----------------------------------------------------------


class QuoteFact(BaseModel):
    """A `priced` event, as far as the price indicators need it."""

    model_config = _RECORD

    event_id: UUID
    currency: str
    total: int


class ComplaintTimes(BaseModel):
    """When one complaint of the order was filed and, once it is, resolved."""

    model_config = _RECORD

    complaint_id: str
    filed_at: datetime
    resolved_at: datetime | None = None


class AssignmentSpan(BaseModel):
    """One technician holding the order, from `since` to `until` (None: still)."""

    model_config = _RECORD

    technician_id: str
    since: datetime
    until: datetime | None = None


class QuoteWait(BaseModel):
    """The order waiting on the customer: a quote issued and not yet approved,
    rejected or dropped (by a cancel or a reopen), from `since` to `until` (None:
    still). An SLA clock may pause over it (indicators.md v2, "Business calendars")."""

    model_config = _RECORD

    since: datetime
    until: datetime | None = None


class OrderFacts(BaseModel):
    """One order's facts, folded from its events; see the module docstring.

    Exists from the order's `created` event on, so its attributes are always known.
    """

    model_config = _RECORD

    order_id: UUID
    customer_id: str
    region: str
    category: str
    urgency: Urgency
    warranty: bool
    created_at: datetime
    # The `created` event's channel (None in facts stored before it was kept).
    channel: Channel | None = None
    # Who held the order when, up to its first arrival: a censored SLA breach (an
    # order left unanswered past its target) belongs to the technician holding it
    # at the target's instant, and the targets are policy, so the reader looks the
    # instant up (indicators.md, "Censoring of unanswered orders").
    assignments: tuple[AssignmentSpan, ...] = ()
    # The waits on the customer (`quoted` until approved or rejected) that began
    # before the first arrival: the accept and arrive clocks stop by then, so later
    # ones cannot pause them (and are not kept).
    quote_waits: tuple[QuoteWait, ...] = ()
    # The orderversion of the last applied event: a redelivered event (at or below
    # it) changes nothing.
    last_version: int
    # The technician currently assigned (None while the order waits for one).
    assignee_id: str | None = None
    first_accepted_at: datetime | None = None
    accepted_technician_id: str | None = None
    # The first `accepted`'s time + its eta_minutes: the arrival the customer was
    # promised (indicators.md v2, "ETA").
    promised_arrival: datetime | None = None
    first_arrived_at: datetime | None = None
    arrived_technician_id: str | None = None
    first_diagnosed_at: datetime | None = None
    diagnosed_technician_id: str | None = None
    # Whether the first diagnosis followed an arrival; a remote diagnosis before any
    # visit has no diagnosis time (indicators.md: "orders with a visit").
    diagnosed_after_arrival: bool = False
    # `arrived` events before the first final completion.
    visits: int = 0
    # `priced` events before the first final completion: requote_rate is measured
    # there, and the new quote of a reopened order's rework is not a revision.
    priced_count: int = 0
    # The latest quote, until rejected or the order is reopened (as the lifecycle).
    current_quote: QuoteFact | None = None
    # The approved quote in force (cleared by a reopen: rework is quoted afresh).
    approved_quote: QuoteFact | None = None
    # The first final completion (outcome fixed or not_fixed), and who posted it.
    first_final_at: datetime | None = None
    first_final_outcome: Outcome | None = None
    first_final_technician_id: str | None = None
    # The sum of final_total over the completions up to and including the first
    # final one (indicators.md v2, "Multi-visit charges").
    final_total_at_first_final: int | None = None
    # Currency of final_total_at_first_final: the one currency of its nonzero
    # charges (the final completion's when nothing was charged), None when the
    # visits charged in several (not comparable with any quote).
    currency: str | None = None
    # What the follow-up visits charged before the first final completion, and the
    # currencies of their nonzero charges.
    charged_before_final: int = 0
    charged_currencies: tuple[str, ...] = ()
    # The approved quote in force at the first final completion, if any.
    approved_total_at_final: int | None = None
    approved_currency_at_final: str | None = None
    # A warranty order completed with nothing charged: no quote is expected, so it is
    # left out of quoted_before_work_rate.
    free_warranty_completion: bool = False
    reopened: bool = False
    # Waiting for a final completion: true from created, false after a final
    # completion, true again after a reopen. `is_open` adds "not cancelled".
    awaiting_completion: bool = True
    cancelled_at: datetime | None = None
    # The orderversion of the order's (only) rating: tells `rating_fact` which
    # `rated` event counts if a damaged stream holds two.
    rated_version: int | None = None
    complaints: tuple[ComplaintTimes, ...] = ()

    # -- timeliness --

    @computed_field
    @property
    def response_time_s(self) -> float | None:
        """first_accepted_at - created_at; at first_accepted_at."""
        return _seconds(self.created_at, self.first_accepted_at)

    @computed_field
    @property
    def arrival_time_s(self) -> float | None:
        """first_arrived_at - created_at; at first_arrived_at."""
        return _seconds(self.created_at, self.first_arrived_at)

    @computed_field
    @property
    def diagnosis_time_s(self) -> float | None:
        """first_diagnosed_at - first_arrived_at, for a diagnosis after a visit."""
        if not self.diagnosed_after_arrival:
            return None
        return _seconds(self.first_arrived_at, self.first_diagnosed_at)

    @computed_field
    @property
    def resolution_time_s(self) -> float | None:
        """first_final_at - created_at; at first_final_at."""
        return _seconds(self.created_at, self.first_final_at)

    @computed_field
    @property
    def eta_error_s(self) -> float | None:
        """first_arrived_at - promised_arrival (negative: early); at first_arrived_at."""
        return _seconds(self.promised_arrival, self.first_arrived_at)

    def eta_kept(self, tolerance_s: float) -> bool | None:
        """eta_error_s <= the tolerance (eta_kept_rate); at first_arrived_at."""
        error = self.eta_error_s
        return None if error is None else error <= tolerance_s

    # -- outcomes (at first_final_at; None without a final completion) --

    @computed_field
    @property
    def first_time_fix(self) -> bool | None:
        """First final outcome fixed, at most one visit, and never reopened."""
        if self.first_final_outcome is None:
            return None
        return (
            self.first_final_outcome is Outcome.FIXED
            and self.visits <= 1
            and not self.reopened
        )

    @computed_field
    @property
    def resolved(self) -> bool | None:
        """First final outcome fixed."""
        if self.first_final_outcome is None:
            return None
        return self.first_final_outcome is Outcome.FIXED

    @computed_field
    @property
    def complaint_filed(self) -> bool:
        """At least one complaint was ever filed (complaint_rate's numerator)."""
        return bool(self.complaints)

    @computed_field
    @property
    def is_open(self) -> bool:
        """Counted by orders_open: not cancelled, and no final completion since
        created or the latest reopen."""
        return self.cancelled_at is None and self.awaiting_completion

    # -- price transparency (at first_final_at) --

    def _priced_totals(self) -> tuple[int, int] | None:
        """(approved, final) totals when the order is in the price population."""
        approved, final = self.approved_total_at_final, self.final_total_at_first_final
        if approved is None or final is None or approved <= 0:
            return None
        # Totals in two currencies are not comparable; nothing charged (0) is 0 in
        # any currency, as the lifecycle's price rule also holds.
        if final != 0 and self.currency != self.approved_currency_at_final:
            return None
        return approved, final

    @computed_field
    @property
    def price_deviation(self) -> float | None:
        """(final_total - approved total) / approved total; approved total > 0."""
        totals = self._priced_totals()
        if totals is None:
            return None
        approved, final = totals
        return (final - approved) / approved

    @computed_field
    @property
    def overrun(self) -> bool | None:
        """final_total > approved total (at most by the lifecycle's tolerance)."""
        totals = self._priced_totals()
        if totals is None:
            return None
        approved, final = totals
        return final > approved

    @computed_field
    @property
    def requoted(self) -> bool | None:
        """More than one `priced` event before the first final completion."""
        if self._priced_totals() is None:
            return None
        return self.priced_count > 1

    @computed_field
    @property
    def quoted_before_work(self) -> bool | None:
        """An approved quote existed at the first final completion.

        None without a final completion and for free warranty completions, which
        quoted_before_work_rate leaves out.
        """
        if self.first_final_at is None or self.free_warranty_completion:
            return None
        return self.approved_total_at_final is not None

    # -- SLA (depends on the configurable policy, so not stored) --

    def sla_accept_met(self, policy: SlaPolicy) -> bool | None:
        """response time <= the urgency's accept target; at first_accepted_at."""
        if self.first_accepted_at is None:
            return None
        return self.first_accepted_at - self.created_at <= policy.accept_within(
            self.urgency
        )

    def sla_arrival_met(self, policy: SlaPolicy) -> bool | None:
        """arrival time <= the urgency's arrival target; at first_arrived_at."""
        if self.first_arrived_at is None:
            return None
        return self.first_arrived_at - self.created_at <= policy.arrive_within(
            self.urgency
        )

    # -- attribution --

    def complaint(self, complaint_id: str) -> ComplaintTimes | None:
        """The complaint of that id, if it was filed."""
        return next(
            (c for c in self.complaints if c.complaint_id == complaint_id), None
        )


# --- folding events into facts -----------------------------------------------------


class _Changes(TypedDict, total=False):
    """The fields one event may change (checked by mypy, unlike a plain dict)."""

    last_version: int
    assignee_id: str | None
    first_accepted_at: datetime
    accepted_technician_id: str
    promised_arrival: datetime
    first_arrived_at: datetime
    arrived_technician_id: str
    first_diagnosed_at: datetime
    diagnosed_technician_id: str | None
    diagnosed_after_arrival: bool
    visits: int
    priced_count: int
    current_quote: QuoteFact | None
    approved_quote: QuoteFact | None
    first_final_at: datetime
    first_final_outcome: Outcome
    first_final_technician_id: str | None
    final_total_at_first_final: int
    currency: str | None
    charged_before_final: int
    charged_currencies: tuple[str, ...]
    approved_total_at_final: int | None
    approved_currency_at_final: str | None
    free_warranty_completion: bool
    reopened: bool
    awaiting_completion: bool
    cancelled_at: datetime
    rated_version: int
    complaints: tuple[ComplaintTimes, ...]
    assignments: tuple[AssignmentSpan, ...]


def _performer(facts: OrderFacts, actor: Actor) -> str | None:
    # Technician events are posted by the assigned technician (decide enforces it);
    # when an admin posts one on their behalf, the work is still the assignee's.
    return actor.id if actor.role is Role.TECHNICIAN else facts.assignee_id


def _start(event: OrderEvent, created: events.Created) -> OrderFacts:
    return OrderFacts(
        order_id=event.order_id,
        customer_id=created.customer_id,
        region=created.region,
        category=created.category,
        urgency=created.urgency,
        warranty=created.warranty,
        created_at=event.time,
        channel=created.channel,
        last_version=event.version,
    )


def _held(facts: OrderFacts, time: datetime, technician_id: str | None) -> _Changes:
    """The assignment spans after the holder changes to `technician_id` at `time`
    (None: nobody holds it). Kept only up to the first arrival: no censored
    breach can fall later (see OrderFacts.assignments)."""
    if facts.first_arrived_at is not None:
        return _Changes()
    spans = tuple(
        s.model_copy(update={"until": time}) if s.until is None else s
        for s in facts.assignments
    )
    if technician_id is not None:
        spans += (AssignmentSpan(technician_id=technician_id, since=time),)
    return _Changes(assignments=spans)


def _final_completion(
    facts: OrderFacts, event: OrderEvent, done: events.Completed
) -> _Changes:
    if facts.first_final_at is not None:
        return _Changes(awaiting_completion=False)  # rework after a reopen
    approved = facts.approved_quote
    charged = facts.charged_before_final + done.final_total
    currencies = _charged_in(facts.charged_currencies, done)
    return _Changes(
        awaiting_completion=False,
        first_final_at=event.time,
        first_final_outcome=done.outcome,
        first_final_technician_id=_performer(facts, event.actor),
        final_total_at_first_final=charged,
        currency=_one_currency(currencies, done),
        approved_total_at_final=None if approved is None else approved.total,
        approved_currency_at_final=None if approved is None else approved.currency,
        # A reopen needs a final completion first, so at the first one "under
        # warranty" is just the order's warranty flag; nothing charged over all
        # the visits.
        free_warranty_completion=facts.warranty and charged == 0,
    )


def _charged_in(currencies: tuple[str, ...], done: events.Completed) -> tuple[str, ...]:
    """The currencies of the nonzero charges, with this completion's."""
    if done.final_total == 0 or done.currency in currencies:
        return currencies
    return (*currencies, done.currency)


def _one_currency(currencies: tuple[str, ...], done: events.Completed) -> str | None:
    """The charges' currency: the final completion's when nothing was charged,
    None when they were charged in several."""
    if not currencies:
        return done.currency
    return currencies[0] if len(currencies) == 1 else None


def _follow_up_completion(facts: OrderFacts, done: events.Completed) -> _Changes:
    if facts.first_final_at is not None:
        return _Changes()  # rework after a reopen: charges of the first round only
    return _Changes(
        charged_before_final=facts.charged_before_final + done.final_total,
        charged_currencies=_charged_in(facts.charged_currencies, done),
    )


def _changes(facts: OrderFacts, event: OrderEvent) -> _Changes:
    """What one fact changes; never refuses (a fact happened).

    "first" facts are matched with a guard while still unknown; the unguarded case
    after it handles every later occurrence.
    """
    time = event.time
    # Visits and re-quotes are counted up to the first final completion only.
    before_final = int(facts.first_final_at is None)
    match event.data:
        case events.Created():
            return _Changes()  # a repeated created adds nothing
        case events.Assigned(technician_id=technician_id):
            return _Changes(
                assignee_id=technician_id, **_held(facts, time, technician_id)
            )
        case events.Declined() | events.AssignmentExpired():
            return _Changes(assignee_id=None, **_held(facts, time, None))
        case events.Accepted(technician_id=technician_id, eta_minutes=eta) if (
            facts.first_accepted_at is None
        ):
            return _Changes(
                assignee_id=technician_id,
                first_accepted_at=time,
                accepted_technician_id=technician_id,
                promised_arrival=time + timedelta(minutes=eta),
            )
        case events.Accepted(technician_id=technician_id):
            return _Changes(assignee_id=technician_id)
        case events.Arrived(technician_id=technician_id) if (
            facts.first_arrived_at is None
        ):
            return _Changes(
                visits=facts.visits + before_final,
                first_arrived_at=time,
                arrived_technician_id=technician_id,
            )
        case events.Arrived():
            return _Changes(visits=facts.visits + before_final)
        case events.Diagnosed() if facts.first_diagnosed_at is None:
            return _Changes(
                first_diagnosed_at=time,
                diagnosed_technician_id=_performer(facts, event.actor),
                diagnosed_after_arrival=facts.first_arrived_at is not None,
            )
        case events.Diagnosed():
            return _Changes()
        case events.Priced(currency=currency, total=total):
            return _Changes(
                current_quote=QuoteFact(
                    event_id=event.event_id, currency=currency, total=total
                ),
                priced_count=facts.priced_count + before_final,
            )
        case events.QuoteApproved(quote_event_id=quote_id) if _is_current_quote(
            facts, quote_id
        ):
            return _Changes(approved_quote=facts.current_quote)
        case events.QuoteRejected(quote_event_id=quote_id) if _is_current_quote(
            facts, quote_id
        ):
            return _Changes(current_quote=None)
        case events.QuoteApproved() | events.QuoteRejected():
            return _Changes()  # a stale quote decision decides nothing
        case events.Completed() as done if done.outcome.is_final:
            return _final_completion(facts, event, done)
        case events.Completed() as done:
            # follow-up: the next arrival counts as another visit, its charge
            # adds to the order's final_total
            return _follow_up_completion(facts, done)
        case events.Rated() if facts.rated_version is None:
            return _Changes(rated_version=event.version)
        case events.Rated():
            return _Changes()  # an order is rated once; the first one counts
        case events.Cancelled() if facts.cancelled_at is None:
            return _Changes(cancelled_at=time, **_held(facts, time, None))
        case events.Cancelled():
            return _Changes()
        case events.Reopened():
            # Rework starts over: a new assignment and, if charged, a new quote.
            return _Changes(
                reopened=True,
                awaiting_completion=True,
                assignee_id=None,
                current_quote=None,
                approved_quote=None,
                **_held(facts, time, None),
            )
        case events.ComplaintFiled(complaint_id=complaint_id) if (
            facts.complaint(complaint_id) is None
        ):
            filed = ComplaintTimes(complaint_id=complaint_id, filed_at=time)
            return _Changes(complaints=(*facts.complaints, filed))
        case events.ComplaintFiled():
            return _Changes()  # the first filing counts
        case events.ComplaintResolved(complaint_id=complaint_id):
            return _Changes(complaints=_resolve(facts.complaints, complaint_id, time))
        case _:
            assert_never(event.data)


def _resolve(
    complaints: tuple[ComplaintTimes, ...], complaint_id: str, time: datetime
) -> tuple[ComplaintTimes, ...]:
    # The first resolution counts; resolving an unknown complaint changes nothing.
    return tuple(
        c.model_copy(update={"resolved_at": time})
        if c.complaint_id == complaint_id and c.resolved_at is None
        else c
        for c in complaints
    )


def _is_current_quote(facts: OrderFacts, quote_event_id: UUID) -> bool:
    quote = facts.current_quote
    return quote is not None and quote.event_id == quote_event_id


@overload
def apply_event(facts: OrderFacts, event: OrderEvent) -> OrderFacts: ...
@overload
def apply_event(facts: OrderFacts | None, event: OrderEvent) -> OrderFacts | None: ...
def apply_event(facts: OrderFacts | None, event: OrderEvent) -> OrderFacts | None:
    """Apply one event to an order's facts. Never raises, on any sequence of events.

    `created` starts the record. An event that cannot add to it is ignored (the
    input is returned unchanged): one before `created` (None stays None), one of
    another order, and one at or below `last_version` (a redelivery).
    """
    if facts is None:
        match event.data:
            case events.Created() as created:
                return _start(event, created)
            case _:
                return None
    if event.order_id != facts.order_id or event.version <= facts.last_version:
        return facts
    changes = _changes(facts, event)
    changes["last_version"] = event.version
    return _track_quote_wait(facts, facts.model_copy(update=changes), event.time)


def _waits_on_customer(facts: OrderFacts) -> bool:
    """A quote is out and neither approved nor dropped (the order is `quoted`)."""
    quote, approved = facts.current_quote, facts.approved_quote
    return (
        quote is not None
        and facts.cancelled_at is None
        and (approved is None or approved.event_id != quote.event_id)
    )


def _track_quote_wait(
    before: OrderFacts, after: OrderFacts, time: datetime
) -> OrderFacts:
    """Opens a wait when the order starts waiting on the customer (before its first
    arrival), closes the open one when it stops."""
    was, now = _waits_on_customer(before), _waits_on_customer(after)
    waits = after.quote_waits
    if now and not was and after.first_arrived_at is None:
        waits = (*waits, QuoteWait(since=time))
    elif was and not now and waits and waits[-1].until is None:
        waits = (*waits[:-1], waits[-1].model_copy(update={"until": time}))
    else:
        return after
    return after.model_copy(update={"quote_waits": waits})


def derive_facts(order_events: Iterable[OrderEvent]) -> OrderFacts | None:
    """The facts after all of an order's events (None before its `created`)."""
    facts: OrderFacts | None = None
    for event in order_events:
        facts = apply_event(facts, event)
    return facts


# --- per-event records: ratings and complaints ------------------------------------


class RatingFact(BaseModel):
    """One order's rating, attributed to the technician who did the work.

    At rated_at. One per order: keyed by order_id (event_id names the `rated`).
    """

    model_config = _RECORD

    order_id: UUID
    event_id: UUID
    rated_at: datetime
    score: Stars
    nps: Annotated[int, Field(ge=0, le=10)] | None = None
    attitude: Stars | None = None
    professionalism: Stars | None = None
    communication: Stars | None = None
    punctuality: Stars | None = None
    price_fairness: Stars | None = None
    technician_id: str | None
    region: str
    category: str
    urgency: Urgency
    channel: Channel | None = None

    @computed_field
    @property
    def attitude_value(self) -> int:
        """The attitude sub-score's input: `dimensions.attitude`, else `score`."""
        return self.score if self.attitude is None else self.attitude


class ComplaintFact(BaseModel):
    """One complaint, keyed by (order_id, complaint_id); upserted as it changes.

    technician_id is the technician of the order's first final completion
    (indicators.md: complaints belong to that technician), so it is None until then
    and every complaint of the order is re-attributed when that completion arrives,
    even one settled while another technician held the order.
    """

    model_config = _RECORD

    order_id: UUID
    complaint_id: str
    filed_at: datetime
    resolved_at: datetime | None = None
    technician_id: str | None
    region: str
    category: str
    urgency: Urgency
    channel: Channel | None = None

    @computed_field
    @property
    def resolution_s(self) -> float | None:
        """complaint_resolution_s: resolved_at - filed_at; at resolved_at."""
        return _seconds(self.filed_at, self.resolved_at)


def rating_fact(facts: OrderFacts, event: OrderEvent) -> RatingFact | None:
    """The rating record of a `rated` event, or None for any other event.

    `facts` are the order's facts after `event` was applied. A second `rated` (only
    in a damaged stream) gives None: an order is rated once, the first counts.
    """
    match event.data:
        case events.Rated(score=score, nps=nps, dimensions=dimensions) if (
            event.order_id == facts.order_id
            and facts.rated_version
            in (
                None,
                event.version,
            )
        ):
            given = dimensions or events.Dimensions()
            return RatingFact(
                order_id=facts.order_id,
                event_id=event.event_id,
                rated_at=event.time,
                score=score,
                nps=nps,
                attitude=given.attitude,
                professionalism=given.professionalism,
                communication=given.communication,
                punctuality=given.punctuality,
                price_fairness=given.price_fairness,
                # Rated only after a final completion: its technician did the work.
                technician_id=facts.first_final_technician_id,
                region=facts.region,
                category=facts.category,
                urgency=facts.urgency,
                channel=facts.channel,
            )
        case _:
            return None


def complaint_facts(
    before: OrderFacts | None, after: OrderFacts, event: OrderEvent
) -> tuple[ComplaintFact, ...]:
    """The complaint records `event` changes, as they stand after it.

    `before`/`after` are the order's facts around `event`. A complaint event changes
    the complaint it names (nothing for a resolution of a complaint never filed); the
    first final completion changes whom every complaint of the order belongs to.
    """
    match event.data:
        case (
            events.ComplaintFiled(complaint_id=complaint_id)
            | events.ComplaintResolved(complaint_id=complaint_id)
        ) if event.order_id == after.order_id:
            named = after.complaint(complaint_id)
            changed: tuple[ComplaintTimes, ...] = () if named is None else (named,)
        case _ if before is not None and (
            before.first_final_technician_id != after.first_final_technician_id
        ):
            changed = after.complaints
        case _:
            changed = ()
    return tuple(
        ComplaintFact(
            order_id=after.order_id,
            complaint_id=times.complaint_id,
            filed_at=times.filed_at,
            resolved_at=times.resolved_at,
            technician_id=after.first_final_technician_id,
            region=after.region,
            category=after.category,
            urgency=after.urgency,
            channel=after.channel,
        )
        for times in changed
    )


class UnacceptedFact(BaseModel):
    """An assignment its technician did not take: declined, or left unanswered
    until dispatch expired it (indicators.md v2 counts an expiry against that
    technician like a decline). One per event; counted per technician at `at`
    (`assignments_declined`, `assignments_expired`)."""

    model_config = _RECORD

    event_id: UUID
    order_id: UUID
    technician_id: str
    kind: Literal["declined", "expired"]
    at: datetime
    region: str
    category: str
    urgency: Urgency
    channel: Channel | None = None


def unaccepted_fact(facts: OrderFacts, event: OrderEvent) -> UnacceptedFact | None:
    """The record of a decline or an expiry, None for any other event."""
    match event.data:
        case events.Declined(technician_id=technician_id):
            kind: Literal["declined", "expired"] = "declined"
        case events.AssignmentExpired(technician_id=technician_id):
            kind = "expired"
        case _:
            return None
    return UnacceptedFact(
        event_id=event.event_id,
        order_id=facts.order_id,
        technician_id=technician_id,
        kind=kind,
        at=event.time,
        region=facts.region,
        category=facts.category,
        urgency=facts.urgency,
        channel=facts.channel,
    )
