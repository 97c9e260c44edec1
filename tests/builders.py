"""Builders of valid payloads, actors and whole order histories for any test layer.

Every call makes fresh ids (cosmicpython's `random_refs`), so tests sharing a
database or a topic never collide. Payloads are built in Python (strict mode wants
real enums, UUIDs and tuples there); `as_json` gives their wire form.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

from shared.domain import events
from shared.domain.actors import Actor, Role
from shared.domain.events import (
    AssignmentMethod,
    Channel,
    OrderPayload,
    Outcome,
    PriceItem,
    PriceItemKind,
    Urgency,
)
from shared.domain.lifecycle import (
    AUTO_DISPATCH,
    OrderEvent,
    OrderState,
    OrderStatus,
    ProposedEvent,
    decide,
    evolve,
)
from shared.domain.rules import Policy

# A fixed start for histories: tests pass `now` explicitly, they never read a clock.
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
STEP = timedelta(minutes=7)
CURRENCY = "CNY"


def random_ref(prefix: str) -> str:
    """A unique, readable id such as `cust-3f2a9c1d0b4e`."""
    return f"{prefix}-{uuid4().hex[:12]}"


def make_customer(customer_id: str | None = None) -> Actor:
    return Actor(Role.CUSTOMER, customer_id or random_ref("cust"))


def make_technician(technician_id: str | None = None) -> Actor:
    return Actor(Role.TECHNICIAN, technician_id or random_ref("tech"))


def make_dispatcher() -> Actor:
    return Actor(Role.DISPATCHER, random_ref("disp"))


def make_admin() -> Actor:
    return Actor(Role.ADMIN, random_ref("admin"))


def as_json(payload: OrderPayload) -> str:
    """The payload's wire form (JSON `data`)."""
    return payload.model_dump_json()


def make_created(
    *,
    customer_id: str | None = None,
    warranty: bool = False,
    urgency: Urgency = Urgency.NORMAL,
    category: str = "washing_machine",
    region: str = "shanghai-pudong",
    # Real Chinese text, full-width punctuation included.
    description: str = "洗衣机不脱水，有异响。Drum does not spin.",  # noqa: RUF001
    channel: Channel = Channel.APP,
) -> events.Created:
    return events.Created(
        customer_id=customer_id or random_ref("cust"),
        category=category,
        region=region,
        urgency=urgency,
        description=description,
        warranty=warranty,
        channel=channel,
        contact_ref=random_ref("vault"),
    )


def make_assigned(
    technician_id: str, *, method: AssignmentMethod = AssignmentMethod.AUTO
) -> events.Assigned:
    return events.Assigned(
        technician_id=technician_id, method=method, reason="skills and region match"
    )


def make_declined(technician_id: str) -> events.Declined:
    return events.Declined(technician_id=technician_id, reason="too far away today")


def make_assignment_expired(
    technician_id: str, assigned_event_id: UUID
) -> events.AssignmentExpired:
    return events.AssignmentExpired(
        technician_id=technician_id, assigned_event_id=assigned_event_id
    )


def make_accepted(technician_id: str, *, eta_minutes: int = 45) -> events.Accepted:
    return events.Accepted(technician_id=technician_id, eta_minutes=eta_minutes)


def make_arrived(technician_id: str) -> events.Arrived:
    return events.Arrived(
        technician_id=technician_id,
        location=events.Location(lat=31.2304, lon=121.4737),
    )


def make_diagnosed(*, remote: bool = False) -> events.Diagnosed:
    return events.Diagnosed(
        fault_code="E21-drain-pump",
        summary="排水泵堵塞 (drain pump clogged)",
        parts_needed=("drain pump",),
        remote=remote,
    )


def make_items(total: int) -> tuple[PriceItem, ...]:
    """Price items summing to `total`: a callout fee plus labor, or none for 0."""
    if total == 0:
        return ()
    callout = min(total, 3000)
    items = [
        PriceItem(
            kind=PriceItemKind.CALLOUT,
            description="上门费",
            quantity=1,
            unit_price=callout,
        )
    ]
    if total > callout:
        items.append(
            PriceItem(
                kind=PriceItemKind.LABOR,
                description="replace drain pump",
                quantity=1,
                unit_price=total - callout,
            )
        )
    return tuple(items)


def make_priced(total: int = 12_000, *, currency: str = CURRENCY) -> events.Priced:
    items = make_items(total) or (
        PriceItem(
            kind=PriceItemKind.OTHER, description="no charge", quantity=1, unit_price=0
        ),
    )
    return events.Priced(currency=currency, items=items, total=total)


def make_quote_approved(quote_event_id: UUID) -> events.QuoteApproved:
    return events.QuoteApproved(quote_event_id=quote_event_id)


def make_quote_rejected(quote_event_id: UUID) -> events.QuoteRejected:
    return events.QuoteRejected(quote_event_id=quote_event_id)


def make_completed(
    final_total: int = 12_000,
    *,
    outcome: Outcome = Outcome.FIXED,
    currency: str = CURRENCY,
) -> events.Completed:
    return events.Completed(
        outcome=outcome,
        currency=currency,
        final_items=make_items(final_total),
        final_total=final_total,
        parts_used=("drain pump",) if final_total else (),
        notes="已更换排水泵，试机正常。",  # noqa: RUF001 - real Chinese punctuation
        evidence=(f"s3://evidence/{uuid4()}.jpg",),
    )


def make_rated(score: int = 5) -> events.Rated:
    return events.Rated(
        score=score,
        nps=9,
        dimensions=events.Dimensions(attitude=5, punctuality=4),
        comment=events.RatingComment(text="师傅很专业", language="zh"),
    )


def make_cancelled() -> events.Cancelled:
    return events.Cancelled(reason="no longer needed")


def make_reopened() -> events.Reopened:
    return events.Reopened(reason="noise is back")


def make_complaint_filed(complaint_id: str | None = None) -> events.ComplaintFiled:
    return events.ComplaintFiled(
        complaint_id=complaint_id or random_ref("cmp"),
        category="attitude",
        text="技师迟到了两个小时",
    )


def make_complaint_resolved(complaint_id: str) -> events.ComplaintResolved:
    return events.ComplaintResolved(
        complaint_id=complaint_id, resolution="apologised, callout fee refunded"
    )


@dataclass
class Story:
    """One order driven through `decide` step by step, with a fake-free clock.

    `post` checks a write exactly as a service would (decide, then evolve) and
    keeps the history; a refused write raises and leaves the story unchanged.
    """

    customer: Actor = field(default_factory=make_customer)
    technician: Actor = field(default_factory=make_technician)
    dispatcher: Actor = field(default_factory=make_dispatcher)
    policy: Policy = field(default_factory=Policy)
    order_id: UUID = field(default_factory=uuid4)
    clock: datetime = T0
    history: list[OrderEvent] = field(default_factory=list)
    state: OrderState | None = None

    def propose(
        self, actor: Actor, data: OrderPayload, *, at: datetime | None = None
    ) -> ProposedEvent:
        return ProposedEvent(
            event_id=uuid4(), time=at or self.clock + STEP, actor=actor, data=data
        )

    def decide(
        self,
        actor: Actor,
        data: OrderPayload,
        *,
        at: datetime | None = None,
        now: datetime | None = None,
    ) -> OrderEvent:
        """Check a write without keeping it."""
        proposed = self.propose(actor, data, at=at)
        return decide(
            self.state,
            proposed,
            policy=self.policy,
            now=now or proposed.time,
            order_id=self.order_id,
        )

    def post(
        self,
        actor: Actor,
        data: OrderPayload,
        *,
        at: datetime | None = None,
        now: datetime | None = None,
    ) -> OrderEvent:
        """Check a write and keep it; `at` defaults to a few minutes later."""
        event = self.decide(actor, data, at=at, now=now)
        self.history.append(event)
        self.state = evolve(self.state, event)
        self.clock = event.time
        return event

    @property
    def current(self) -> OrderState:
        """The state, which must exist by now."""
        assert self.state is not None, "the order was not created yet"
        return self.state

    # Shortcuts for the usual actor of each step.
    def create(self, *, warranty: bool = False) -> OrderEvent:
        created = make_created(customer_id=self.customer.id, warranty=warranty)
        return self.post(self.customer, created)

    def assign(self, technician: Actor | None = None) -> OrderEvent:
        if technician is not None:
            self.technician = technician
        return self.post(AUTO_DISPATCH, make_assigned(self.technician.id))

    def accept(self) -> OrderEvent:
        return self.post(self.technician, make_accepted(self.technician.id))

    def decline(self) -> OrderEvent:
        return self.post(self.technician, make_declined(self.technician.id))

    def expire(self) -> OrderEvent:
        """Dispatch ends the current assignment, left unanswered."""
        assigned = self.current.assigned_event_id
        assert assigned is not None, "no assignment to expire"
        expired = make_assignment_expired(self.technician.id, assigned)
        return self.post(AUTO_DISPATCH, expired)

    def arrive(self) -> OrderEvent:
        return self.post(self.technician, make_arrived(self.technician.id))

    def diagnose(self, *, remote: bool = False) -> OrderEvent:
        return self.post(self.technician, make_diagnosed(remote=remote))

    def to_diagnosed(self) -> OrderEvent:
        """assigned -> accepted -> on_site -> diagnosed, after `create`."""
        for step in (Story.assign, Story.accept, Story.arrive):
            step(self)
        return self.diagnose()

    def to_approved(self, total: int = 12_000) -> OrderEvent:
        """On to an approved quote of `total`, after `create`."""
        self.to_diagnosed()
        self.price(total)
        return self.approve()

    def price(self, total: int = 12_000, *, currency: str = CURRENCY) -> OrderEvent:
        return self.post(self.technician, make_priced(total, currency=currency))

    def approve(self, quote: OrderEvent | None = None) -> OrderEvent:
        quote_id = quote.event_id if quote else self._current_quote_id()
        return self.post(self.customer, make_quote_approved(quote_id))

    def reject(self) -> OrderEvent:
        return self.post(self.customer, make_quote_rejected(self._current_quote_id()))

    def complete(
        self,
        final_total: int = 12_000,
        *,
        outcome: Outcome = Outcome.FIXED,
        currency: str = CURRENCY,
    ) -> OrderEvent:
        done = make_completed(final_total, outcome=outcome, currency=currency)
        return self.post(self.technician, done)

    def rate(self, score: int = 5) -> OrderEvent:
        return self.post(self.customer, make_rated(score))

    def cancel(self) -> OrderEvent:
        return self.post(self.customer, make_cancelled())

    def reopen(self, *, at: datetime | None = None) -> OrderEvent:
        return self.post(self.customer, make_reopened(), at=at)

    def _current_quote_id(self) -> UUID:
        quote = self.current.current_quote
        assert quote is not None, "no quote awaits a decision"
        return quote.event_id


def advance_to(story: Story, status: OrderStatus, *, warranty: bool = False) -> Story:
    """Create the order and post the shortest usual history that reaches `status`."""
    story.create(warranty=warranty)
    if status is OrderStatus.CANCELLED:
        story.cancel()
        return story
    happy_path: tuple[Callable[[], OrderEvent], ...] = (
        story.assign,
        story.accept,
        story.arrive,
        story.diagnose,
        story.price,
        story.approve,
        story.complete,
    )
    for step in happy_path:
        if story.current.status is status:
            break
        step()
    assert story.current.status is status, f"{status} is not on the happy path"
    return story


def story_at(status: OrderStatus, *, warranty: bool = False) -> Story:
    """A fresh order (new ids) in `status`."""
    return advance_to(Story(), status, warranty=warranty)


def happy_path_history(*, warranty: bool = False) -> list[OrderEvent]:
    """A complete valid history: created .. completed (fixed) .. rated."""
    story = story_at(OrderStatus.COMPLETED, warranty=warranty)
    story.rate()
    return story.history
