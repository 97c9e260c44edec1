"""The order lifecycle: every edge of events.md, the write rules, and the fold."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from typing import TypeAlias
from uuid import UUID, uuid4

import pytest

from shared.domain import errors
from shared.domain.actors import Actor, Role
from shared.domain.events import PAYLOAD_TYPES, AssignmentMethod, OrderPayload, Outcome
from shared.domain.lifecycle import (
    AUTO_DISPATCH,
    BEFORE_COMPLETED,
    TRANSITIONS,
    OrderEvent,
    OrderStatus,
    ProposedEvent,
    check_access,
    decide,
    evolve,
    fold,
    next_status,
)
from shared.domain.rules import Policy
from tests.builders import (
    T0,
    Story,
    happy_path_history,
    make_accepted,
    make_admin,
    make_arrived,
    make_assigned,
    make_assignment_expired,
    make_cancelled,
    make_complaint_filed,
    make_complaint_resolved,
    make_completed,
    make_created,
    make_customer,
    make_declined,
    make_diagnosed,
    make_priced,
    make_quote_approved,
    make_quote_rejected,
    make_rated,
    make_reopened,
    make_technician,
    story_at,
)

S = OrderStatus
Move: TypeAlias = Callable[[Story], object]
Sample: TypeAlias = Callable[[Story], OrderPayload]


def replace_version(event: OrderEvent, version: int) -> OrderEvent:
    """The same fact at another place in the stream (to build damaged histories)."""
    return replace(event, version=version)


def quote_id_or_new(story: Story) -> UUID:
    quote = story.current.current_quote
    return quote.event_id if quote else uuid4()


def file_then_resolve(story: Story) -> None:
    complaint = make_complaint_filed()
    story.post(story.customer, complaint)
    story.post(story.dispatcher, make_complaint_resolved(complaint.complaint_id))


def complete_on_a_follow_up_visit(story: Story) -> None:
    """Two visits under one approved quote: no new diagnosis, no new quote."""
    story.complete(4_000, outcome=Outcome.FOLLOW_UP_REQUIRED)
    story.arrive()
    story.complete(8_000)


def assign_manually(story: Story) -> None:
    manual = make_assigned(story.technician.id, method=AssignmentMethod.MANUAL)
    story.post(story.dispatcher, manual)


# Every edge of the lifecycle diagram in events.md, posted by its usual actor:
# (status before, the write, status after, warranty order?).
ALLOWED_EDGES: list[tuple[OrderStatus, Move, OrderStatus, bool]] = [
    (S.CREATED, Story.assign, S.ASSIGNED, False),
    (S.CREATED, assign_manually, S.ASSIGNED, False),
    (S.ASSIGNED, Story.accept, S.ACCEPTED, False),
    (S.ASSIGNED, Story.decline, S.CREATED, False),
    (S.ASSIGNED, Story.expire, S.CREATED, False),
    (S.ACCEPTED, Story.arrive, S.ON_SITE, False),
    (S.ACCEPTED, lambda s: s.diagnose(remote=True), S.DIAGNOSED, False),
    (S.ON_SITE, Story.diagnose, S.DIAGNOSED, False),
    (S.DIAGNOSED, Story.price, S.QUOTED, False),
    (S.DIAGNOSED, lambda s: s.complete(0), S.COMPLETED, True),
    (S.QUOTED, Story.approve, S.APPROVED, False),
    (S.QUOTED, Story.reject, S.DIAGNOSED, False),
    (S.APPROVED, lambda s: s.price(15_000), S.QUOTED, False),
    (S.APPROVED, Story.complete, S.COMPLETED, False),
    (
        S.APPROVED,
        lambda s: s.complete(3000, outcome=Outcome.NOT_FIXED),
        S.COMPLETED,
        False,
    ),
    (
        S.APPROVED,
        lambda s: s.complete(3000, outcome=Outcome.FOLLOW_UP_REQUIRED),
        S.ACCEPTED,
        False,
    ),
    (S.APPROVED, complete_on_a_follow_up_visit, S.COMPLETED, False),
    (S.COMPLETED, Story.rate, S.COMPLETED, False),
    (S.COMPLETED, Story.reopen, S.CREATED, False),
    *[
        (status, Story.cancel, S.CANCELLED, False)
        for status in sorted(BEFORE_COMPLETED)
    ],
    *[
        (status, lambda s: s.post(s.dispatcher, make_cancelled()), S.CANCELLED, False)
        for status in sorted(BEFORE_COMPLETED)
    ],
    *[
        (status, lambda s: s.post(s.customer, make_complaint_filed()), status, False)
        for status in OrderStatus
    ],
    *[(status, file_then_resolve, status, False) for status in OrderStatus],
]

# A payload of each type that passes every guard, so that only the edge can refuse.
SAMPLES: dict[str, Sample] = {
    "created": lambda s: make_created(customer_id=s.customer.id),
    "assigned": lambda s: make_assigned(make_technician().id),
    "declined": lambda s: make_declined(s.technician.id),
    "assignment_expired": lambda s: make_assignment_expired(
        s.technician.id, s.current.assigned_event_id or uuid4()
    ),
    "accepted": lambda s: make_accepted(s.technician.id),
    "arrived": lambda s: make_arrived(s.technician.id),
    "diagnosed": lambda s: make_diagnosed(remote=True),
    "priced": lambda s: make_priced(),
    "quote_approved": lambda s: make_quote_approved(quote_id_or_new(s)),
    "quote_rejected": lambda s: make_quote_rejected(quote_id_or_new(s)),
    "completed": lambda s: make_completed(),
    "rated": lambda s: make_rated(),
    "cancelled": lambda s: make_cancelled(),
    "reopened": lambda s: make_reopened(),
    "complaint_filed": lambda s: make_complaint_filed(),
    "complaint_resolved": lambda s: make_complaint_resolved("cmp-unknown"),
}

REFUSED_EDGES = [
    (status, event_type)
    for status in OrderStatus
    for event_type in PAYLOAD_TYPES
    if (status, event_type) not in TRANSITIONS
]


def edge_id(edge: tuple[OrderStatus, Move, OrderStatus, bool]) -> str:
    return f"{edge[0]}->{edge[2]}"


class TestEdges:
    @pytest.mark.parametrize(
        ("start", "move", "end", "warranty"),
        ALLOWED_EDGES,
        ids=[edge_id(edge) for edge in ALLOWED_EDGES],
    )
    def test_allowed_edge_moves_the_order(
        self, start: OrderStatus, move: Move, end: OrderStatus, warranty: bool
    ) -> None:
        story = story_at(start, warranty=warranty)
        move(story)
        assert story.current.status is end
        assert fold(story.history) == story.state

    def test_every_edge_of_the_table_is_exercised(self) -> None:
        exercised = set()
        for start, move, _, warranty in ALLOWED_EDGES:
            story = story_at(start, warranty=warranty)
            before = len(story.history)
            move(story)
            # Each event from the status it met (a move may take several steps).
            for index in range(before, len(story.history)):
                met = fold(story.history[:index])
                assert met is not None
                exercised.add((met.status, story.history[index].data.TYPE))
        assert exercised == set(TRANSITIONS)

    @pytest.mark.parametrize(
        ("status", "event_type"),
        REFUSED_EDGES,
        ids=[f"{s}-{t}" for s, t in REFUSED_EDGES],
    )
    def test_edge_missing_from_the_table_is_refused(
        self, status: OrderStatus, event_type: str
    ) -> None:
        story = story_at(status)
        # An admin passes every role and participant check: only the edge refuses.
        with pytest.raises(errors.TransitionNotAllowed) as err:
            story.post(make_admin(), SAMPLES[event_type](story))
        assert err.value.code == "transition_not_allowed"
        assert str(status) in err.value.detail
        assert event_type in err.value.detail

    def test_created_on_an_existing_order_is_refused(self) -> None:
        story = story_at(S.CREATED)
        with pytest.raises(errors.TransitionNotAllowed, match="already exists"):
            story.post(story.customer, make_created(customer_id=story.customer.id))

    def test_event_for_an_order_without_events_is_not_found(self) -> None:
        story = Story()
        with pytest.raises(errors.OrderNotFound):
            story.post(make_admin(), make_cancelled())

    def test_cancelled_order_is_terminal(self) -> None:
        story = story_at(S.CANCELLED)
        for move in (Story.assign, Story.reopen, Story.cancel):
            with pytest.raises(errors.TransitionNotAllowed):
                move(story)
        assert story.current.status is S.CANCELLED

    def test_declined_order_waits_for_new_assignment(self) -> None:
        story = story_at(S.ASSIGNED)
        decliner = story.technician
        story.decline()
        state = story.current
        assert state.status is S.CREATED
        assert state.technician_id is None
        assert state.declined_by == {decliner.id}
        with pytest.raises(errors.NotOrderParticipant):
            story.post(decliner, make_accepted(decliner.id))
        story.assign(make_technician())
        story.accept()
        assert story.current.status is S.ACCEPTED

    def test_reassigning_to_the_technician_who_declined_is_refused(self) -> None:
        story = story_at(S.ASSIGNED)
        decliner = story.technician
        story.decline()
        with pytest.raises(errors.TechnicianDeclinedOrder) as err:
            story.post(story.dispatcher, make_assigned(decliner.id))
        assert err.value.code == "technician_declined_order"


class TestConditionalEdges:
    def test_diagnosis_before_arrival_must_be_remote(self) -> None:
        story = story_at(S.ACCEPTED)
        with pytest.raises(errors.TransitionNotAllowed, match="remote"):
            story.diagnose(remote=False)
        story.diagnose(remote=True)
        assert story.current.status is S.DIAGNOSED
        assert story.current.visits == 0

    def test_warranty_order_completes_after_diagnosis_when_nothing_is_charged(
        self,
    ) -> None:
        story = story_at(S.DIAGNOSED, warranty=True)
        story.complete(0)
        state = story.current
        assert state.status is S.COMPLETED
        assert state.final_total == 0
        assert state.approved_quote is None

    def test_warranty_order_must_quote_before_charging(self) -> None:
        story = story_at(S.DIAGNOSED, warranty=True)
        with pytest.raises(errors.TransitionNotAllowed, match="warranty"):
            story.complete(1)

    def test_order_without_warranty_must_quote_before_completing(self) -> None:
        story = story_at(S.DIAGNOSED, warranty=False)
        with pytest.raises(errors.TransitionNotAllowed, match="warranty"):
            story.complete(0)

    def test_rework_after_a_reopen_is_warranty_work(self) -> None:
        story = story_at(S.COMPLETED)
        story.reopen()
        assert story.current.under_warranty
        story.assign()
        story.accept()
        story.arrive()
        story.diagnose()
        story.complete(0)
        state = story.current
        assert state.status is S.COMPLETED
        assert state.reopen_count == 1
        assert state.first_completed_at is not None
        assert state.completed_at is not None
        assert state.first_completed_at < state.completed_at
        assert state.final_total == 0

    def test_follow_up_completion_needs_another_visit(self) -> None:
        story = story_at(S.APPROVED)
        story.complete(3000, outcome=Outcome.FOLLOW_UP_REQUIRED)
        state = story.current
        assert state.status is S.ACCEPTED
        assert state.first_completed_at is None
        assert state.final_outcome is None
        assert state.follow_ups == 1
        story.arrive()
        story.diagnose()
        story.price(8000)  # the revised quote covers the whole job
        story.approve()
        done = story.complete(5000)
        state = story.current
        assert state.status is S.COMPLETED
        assert state.visits == 2
        assert state.first_completed_at == done.time
        assert state.first_outcome is Outcome.FIXED
        assert state.quotes_count == 2
        assert state.charged_total == 8000

    def test_rejected_quote_can_be_priced_again(self) -> None:
        story = story_at(S.QUOTED)
        story.reject()
        assert story.current.status is S.DIAGNOSED
        assert story.current.current_quote is None
        second = story.price(9000)
        story.approve(second)
        assert story.current.approved_quote is not None
        assert story.current.approved_quote.event_id == second.event_id
        assert story.current.quotes_count == 2

    def test_revised_quote_after_approval_needs_a_new_approval(self) -> None:
        story = story_at(S.APPROVED)
        first = story.current.current_quote
        assert first is not None
        revised = story.price(20_000)
        assert story.current.status is S.QUOTED
        with pytest.raises(errors.TransitionNotAllowed):
            story.complete(20_000)
        with pytest.raises(errors.QuoteNotCurrent) as err:
            story.post(story.customer, make_quote_approved(first.event_id))
        assert err.value.code == "quote_not_current"
        story.approve(revised)
        story.complete(20_000)
        state = story.current  # a fresh name: mypy narrowed the earlier expression
        assert state.status is S.COMPLETED

    def test_quote_decision_must_name_the_current_quote(self) -> None:
        story = story_at(S.QUOTED)
        with pytest.raises(errors.QuoteNotCurrent):
            story.post(story.customer, make_quote_rejected(uuid4()))

    def test_order_is_rated_once(self) -> None:
        story = story_at(S.COMPLETED)
        story.rate(4)
        with pytest.raises(errors.AlreadyRated) as err:
            story.rate(5)
        assert err.value.code == "already_rated"
        assert story.current.rated

    def test_rating_again_after_rework_is_refused(self) -> None:
        story = story_at(S.COMPLETED)
        story.rate(2)
        story.reopen()
        story.to_diagnosed()
        story.complete(0)
        with pytest.raises(errors.AlreadyRated):
            story.rate(5)

    def test_reopen_is_allowed_until_the_warranty_window_closes(self) -> None:
        story = story_at(S.COMPLETED)
        completed_at = story.current.completed_at
        assert completed_at is not None
        story.reopen(at=completed_at + timedelta(days=30))
        assert story.current.status is S.CREATED
        assert story.current.reopen_count == 1

    def test_reopen_after_the_warranty_window_is_refused(self) -> None:
        story = story_at(S.COMPLETED)
        completed_at = story.current.completed_at
        assert completed_at is not None
        late = completed_at + timedelta(days=30, seconds=1)
        with pytest.raises(errors.WarrantyWindowExpired) as err:
            story.reopen(at=late)
        assert err.value.code == "warranty_window_expired"

    def test_warranty_window_runs_from_the_first_final_completion(self) -> None:
        # events.md (v2): 30 days after the first final completion, not the rework.
        story = story_at(S.COMPLETED)
        first = story.current.first_completed_recorded_at
        assert first is not None
        story.reopen()
        story.assign()
        story.accept()
        story.arrive()
        story.diagnose()
        story.complete(0)
        last_day = first + timedelta(days=30)
        story.decide(story.customer, make_reopened(), at=last_day)
        with pytest.raises(errors.WarrantyWindowExpired):
            story.decide(
                story.customer, make_reopened(), at=last_day + timedelta(seconds=1)
            )

    def test_reopen_starts_over_with_a_new_assignment(self) -> None:
        story = story_at(S.COMPLETED)
        story.reopen()
        state = story.current
        assert state.technician_id is None
        assert state.current_quote is None
        assert state.approved_quote is None
        assert state.final_total == 12_000  # the earlier completion stays on record
        with pytest.raises(errors.NotOrderParticipant):
            story.arrive()

    def test_reopen_window_follows_the_policy(self) -> None:
        story = Story(policy=Policy(warranty_window=timedelta(days=7)))
        story.create()
        story.to_approved()
        done = story.complete()
        with pytest.raises(errors.WarrantyWindowExpired):
            story.reopen(at=done.time + timedelta(days=8))


class TestComplaints:
    def test_complaint_can_be_filed_after_cancellation(self) -> None:
        story = story_at(S.CANCELLED)
        complaint = make_complaint_filed()
        story.post(story.customer, complaint)
        assert story.current.open_complaints == {complaint.complaint_id}

    def test_resolution_closes_its_complaint_only(self) -> None:
        story = story_at(S.ON_SITE)
        first, second = make_complaint_filed(), make_complaint_filed()
        story.post(story.customer, first)
        story.post(story.customer, second)
        story.post(story.dispatcher, make_complaint_resolved(first.complaint_id))
        state = story.current
        assert state.open_complaints == {second.complaint_id}
        assert state.all_complaints == {first.complaint_id, second.complaint_id}
        assert state.status is S.ON_SITE

    def test_resolving_an_unknown_complaint_is_refused(self) -> None:
        story = story_at(S.COMPLETED)
        with pytest.raises(errors.ComplaintNotOpen) as err:
            story.post(story.dispatcher, make_complaint_resolved("cmp-nope"))
        assert err.value.code == "complaint_not_open"

    def test_resolving_a_complaint_twice_is_refused(self) -> None:
        story = story_at(S.COMPLETED)
        complaint = make_complaint_filed()
        story.post(story.customer, complaint)
        resolved = make_complaint_resolved(complaint.complaint_id)
        story.post(story.dispatcher, resolved)
        with pytest.raises(errors.ComplaintNotOpen):
            story.post(story.dispatcher, resolved)

    def test_filing_the_same_complaint_id_twice_is_refused(self) -> None:
        story = story_at(S.COMPLETED)
        complaint = make_complaint_filed()
        story.post(story.customer, complaint)
        with pytest.raises(errors.DuplicateComplaint) as err:
            story.post(story.customer, complaint)
        assert err.value.code == "duplicate_complaint"


class TestPriceTolerance:
    @pytest.mark.parametrize(
        ("approved", "final", "allowed"),
        [
            (10_000, 10_000, True),
            (10_000, 10_500, True),  # exactly 5% over
            (10_000, 10_501, False),  # one fen past 5%
            (9_999, 10_498, True),  # 10498.95 allowed: rounding never helps
            (9_999, 10_499, False),
            (10_000, 0, True),
            (10_000, 9_000, True),
            (0, 0, True),
            (0, 1, False),
        ],
    )
    def test_final_total_may_exceed_the_approved_quote_by_5_percent(
        self, approved: int, final: int, allowed: bool
    ) -> None:
        story = Story()
        story.create()
        story.to_approved(approved)
        if allowed:
            story.complete(final)
            assert story.current.final_total == final
        else:
            with pytest.raises(errors.PriceExceedsApprovedQuote) as err:
                story.complete(final)
            assert err.value.code == "price_exceeds_approved_quote"
            assert "revised priced" in err.value.detail
            assert story.current.status is S.APPROVED

    def test_tolerance_comes_from_the_policy(self) -> None:
        story = Story(policy=Policy(price_tolerance=Fraction(0)))
        story.create()
        story.to_approved(10_000)
        with pytest.raises(errors.PriceExceedsApprovedQuote):
            story.complete(10_001)
        story.complete(10_000)

    def test_follow_up_completion_is_held_to_the_approved_quote(self) -> None:
        story = story_at(S.APPROVED)
        with pytest.raises(errors.PriceExceedsApprovedQuote):
            story.complete(20_000, outcome=Outcome.FOLLOW_UP_REQUIRED)

    def test_higher_price_needs_a_revised_and_approved_quote(self) -> None:
        story = story_at(S.APPROVED)
        with pytest.raises(errors.PriceExceedsApprovedQuote):
            story.complete(18_000)
        story.price(18_000)
        story.approve()
        story.complete(18_000)
        assert story.current.final_total == 18_000
        assert story.current.quotes_count == 2

    def test_completion_in_another_currency_is_refused(self) -> None:
        story = story_at(S.APPROVED)
        with pytest.raises(errors.CurrencyMismatch) as err:
            story.complete(12_000, currency="USD")
        assert err.value.code == "currency_mismatch"


class TestFollowUpVisits:
    """events.md v2: a follow-up visit completes under the quote already approved."""

    def test_a_follow_up_visit_completes_without_a_new_quote(self) -> None:
        story = story_at(S.APPROVED)  # a quote of 12 000 approved
        story.complete(5_000, outcome=Outcome.FOLLOW_UP_REQUIRED)
        story.arrive()
        done = story.complete(7_000)
        state = story.current
        assert state.status is S.COMPLETED
        assert state.quotes_count == 1
        assert state.visits == 2
        assert state.charged_total == 12_000
        assert state.final_total == 7_000  # the last visit's bill
        assert state.first_completed_at == done.time

    def test_a_follow_up_visit_may_need_another_visit_still(self) -> None:
        story = story_at(S.APPROVED)
        story.complete(2_000, outcome=Outcome.FOLLOW_UP_REQUIRED)
        story.arrive()
        story.complete(2_000, outcome=Outcome.FOLLOW_UP_REQUIRED)
        assert story.current.status is S.ACCEPTED
        story.arrive()
        story.complete(8_000)
        assert story.current.charged_total == 12_000
        assert story.current.follow_ups == 2

    def test_the_visits_together_are_held_to_the_approved_quote(self) -> None:
        story = story_at(S.APPROVED)  # 12 000, 5% tolerance: at most 12 600
        story.complete(6_000, outcome=Outcome.FOLLOW_UP_REQUIRED)
        story.arrive()
        with pytest.raises(errors.PriceExceedsApprovedQuote) as err:
            story.complete(6_601)
        assert "6000 charged on earlier visits" in err.value.detail
        story.complete(6_600)  # exactly at the tolerance
        assert story.current.charged_total == 12_600

    def test_a_follow_up_completion_is_held_to_the_quote_too(self) -> None:
        story = story_at(S.APPROVED)
        with pytest.raises(errors.PriceExceedsApprovedQuote):
            story.complete(12_601, outcome=Outcome.FOLLOW_UP_REQUIRED)

    def test_completing_on_site_without_a_follow_up_is_refused(self) -> None:
        story = story_at(S.ON_SITE)
        with pytest.raises(errors.TransitionNotAllowed, match="follow-up visit"):
            story.complete(0)
        assert story.current.status is S.ON_SITE

    def test_a_new_diagnosis_on_the_follow_up_visit_leads_to_a_new_quote(
        self,
    ) -> None:
        story = story_at(S.APPROVED)
        story.complete(3_000, outcome=Outcome.FOLLOW_UP_REQUIRED)
        story.arrive()
        story.diagnose()
        assert story.current.status is S.DIAGNOSED
        with pytest.raises(errors.TransitionNotAllowed):
            story.complete(3_000)  # not a free warranty completion
        story.price(15_000)
        story.approve()
        story.complete(12_000)
        assert story.current.charged_total == 15_000

    def test_a_reopen_starts_the_charges_over(self) -> None:
        story = story_at(S.COMPLETED)
        assert story.current.charged_total == 12_000
        story.reopen()
        assert story.current.charged_total == 0
        assert story.current.approved_quote is None


class TestAssignmentExpiry:
    """events.md v2: dispatch ends an assignment left unanswered past the target."""

    def test_expiry_frees_the_order_and_remembers_the_technician(self) -> None:
        story = story_at(S.ASSIGNED)
        silent = story.technician.id
        story.expire()
        state = story.current
        assert state.status is S.CREATED
        assert state.technician_id is None
        assert state.expired_for == {silent}
        assert state.declined_by == frozenset()

    def test_only_the_current_assignment_expires(self) -> None:
        story = story_at(S.ASSIGNED)
        first = story.current.assigned_event_id
        assert first is not None
        story.expire()
        story.assign(Story().technician)
        stale = make_assignment_expired(story.technician.id, first)
        with pytest.raises(errors.TransitionNotAllowed, match="current assignment"):
            story.post(AUTO_DISPATCH, stale)
        other = make_assignment_expired(
            "someone-else", story.current.assigned_event_id or uuid4()
        )
        with pytest.raises(errors.TransitionNotAllowed, match="current assignment"):
            story.post(AUTO_DISPATCH, other)

    def test_an_accepted_order_does_not_expire(self) -> None:
        story = story_at(S.ACCEPTED)
        with pytest.raises(errors.TransitionNotAllowed):
            story.expire()

    @pytest.mark.parametrize("role", [Role.TECHNICIAN, Role.DISPATCHER, Role.CUSTOMER])
    def test_only_dispatch_itself_posts_an_expiry(self, role: Role) -> None:
        story = story_at(S.ASSIGNED)
        assigned = story.current.assigned_event_id
        assert assigned is not None
        expired = make_assignment_expired(story.technician.id, assigned)
        with pytest.raises(errors.ActorNotAllowed):
            story.post(Actor(role, story.technician.id), expired)

    def test_the_silent_technicians_late_accept_is_refused_as_a_participant(
        self,
    ) -> None:
        story = story_at(S.ASSIGNED)
        silent = story.technician
        story.expire()
        late = story.propose(silent, make_accepted(silent.id))
        # They knew the order: not a 404, but a refusal of the write itself.
        check_access(story.current, late)
        with pytest.raises(errors.NotOrderParticipant):
            story.post(silent, make_accepted(silent.id))

    def test_a_dispatcher_may_still_assign_the_silent_technician(self) -> None:
        story = story_at(S.ASSIGNED)
        silent = story.technician.id
        story.expire()
        story.post(story.dispatcher, make_assigned(silent))
        assert story.current.technician_id == silent

    def test_a_reopen_forgets_expired_offers(self) -> None:
        story = story_at(S.COMPLETED)
        story.reopen()
        story.assign(Story().technician)
        story.expire()
        assert story.current.expired_for
        story.assign(Story().technician)
        story.accept()
        story.arrive()
        story.diagnose()
        story.complete(0)  # rework is warranty work
        story.reopen()
        assert story.current.expired_for == frozenset()

    def test_the_promised_arrival_is_the_first_accept_plus_its_eta(self) -> None:
        story = story_at(S.ASSIGNED)
        accepted = story.accept()
        assert story.current.promised_arrival == accepted.time + timedelta(minutes=45)


class TestTime:
    def test_event_before_the_previous_event_is_refused(self) -> None:
        story = story_at(S.ASSIGNED)
        earlier = story.clock - timedelta(seconds=1)
        with pytest.raises(errors.EventTimeBeforePrevious) as err:
            story.post(story.technician, make_accepted(story.technician.id), at=earlier)
        assert err.value.code == "event_time_before_previous"

    def test_event_at_the_same_time_as_the_previous_is_accepted(self) -> None:
        story = story_at(S.ASSIGNED)
        story.post(story.technician, make_accepted(story.technician.id), at=story.clock)
        assert story.current.status is S.ACCEPTED

    def test_event_up_to_the_clock_skew_ahead_is_accepted(self) -> None:
        story = story_at(S.ASSIGNED)
        now = story.clock + timedelta(minutes=1)
        ahead = now + timedelta(minutes=5)
        story.post(
            story.technician, make_accepted(story.technician.id), at=ahead, now=now
        )
        assert story.current.last_event_at == ahead
        assert story.history[-1].recorded_at == now

    def test_event_further_ahead_than_the_clock_skew_is_refused(self) -> None:
        story = story_at(S.ASSIGNED)
        now = story.clock + timedelta(minutes=1)
        ahead = now + timedelta(minutes=5, microseconds=1)
        with pytest.raises(errors.EventTimeInFuture) as err:
            story.post(
                story.technician, make_accepted(story.technician.id), at=ahead, now=now
            )
        assert err.value.code == "event_time_in_future"

    def test_new_order_from_the_future_is_refused(self) -> None:
        story = Story()
        with pytest.raises(errors.EventTimeInFuture):
            story.post(
                story.customer,
                make_created(customer_id=story.customer.id),
                at=T0 + timedelta(hours=1),
                now=T0,
            )

    def test_times_in_other_offsets_compare_as_instants(self) -> None:
        story = story_at(S.ASSIGNED)
        beijing = timezone(timedelta(hours=8))
        same_instant = story.clock.astimezone(beijing)
        story.post(
            story.technician, make_accepted(story.technician.id), at=same_instant
        )
        assert story.current.status is S.ACCEPTED

    def test_naive_times_are_refused(self) -> None:
        with pytest.raises(ValueError, match="timezone-aware"):
            ProposedEvent(
                event_id=uuid4(),
                time=datetime(2026, 1, 1),  # noqa: DTZ001 - the point of the test
                actor=make_admin(),
                data=make_cancelled(),
            )
        story = story_at(S.CREATED)
        with pytest.raises(ValueError, match="timezone-aware"):
            decide(
                story.state,
                story.propose(story.customer, make_cancelled()),
                policy=Policy(),
                now=datetime(2026, 1, 1),  # noqa: DTZ001 - the point of the test
            )


class TestParticipants:
    def test_another_customer_cannot_post_on_the_order(self) -> None:
        story = story_at(S.COMPLETED)
        with pytest.raises(errors.NotOrderParticipant) as err:
            story.post(make_customer(), make_rated())
        # Answered like a missing order so that other people's orders stay hidden.
        assert err.value.code == "order_not_found"

    def test_another_technician_cannot_post_on_the_order(self) -> None:
        story = story_at(S.ASSIGNED)
        stranger = make_technician()
        with pytest.raises(errors.NotOrderParticipant):
            story.post(stranger, make_accepted(stranger.id))

    def test_technician_must_name_themself(self) -> None:
        story = story_at(S.ASSIGNED)
        with pytest.raises(errors.NotOrderParticipant, match="not the technician"):
            story.post(story.technician, make_accepted("tech-someone-else"))

    def test_admin_may_act_for_the_assigned_technician(self) -> None:
        story = story_at(S.ASSIGNED)
        story.post(make_admin(), make_accepted(story.technician.id))
        assert story.current.status is S.ACCEPTED
        with pytest.raises(errors.NotOrderParticipant):
            story.post(make_admin(), make_arrived("tech-someone-else"))

    @pytest.mark.parametrize(
        "sample", ["accepted", "declined", "arrived", "priced", "completed", "assigned"]
    )
    def test_customer_cannot_post_technician_or_dispatch_events(
        self, sample: str
    ) -> None:
        story = story_at(S.ASSIGNED)
        with pytest.raises(errors.ActorNotAllowed) as err:
            story.post(story.customer, SAMPLES[sample](story))
        assert err.value.code == "actor_not_allowed"

    @pytest.mark.parametrize(
        "sample", ["cancelled", "quote_approved", "rated", "reopened", "assigned"]
    )
    def test_technician_cannot_post_customer_or_dispatch_events(
        self, sample: str
    ) -> None:
        story = story_at(S.QUOTED)
        with pytest.raises(errors.ActorNotAllowed):
            story.post(story.technician, SAMPLES[sample](story))

    @pytest.mark.parametrize("sample", ["accepted", "priced", "rated"])
    def test_dispatcher_posts_only_phone_orders_assignments_cancellations_and_resolutions(
        self, sample: str
    ) -> None:
        story = story_at(S.ASSIGNED)
        with pytest.raises(errors.ActorNotAllowed):
            story.post(story.dispatcher, SAMPLES[sample](story))

    @pytest.mark.parametrize("role", [Role.AUDITOR, Role.SERVICE])
    def test_auditors_and_services_post_nothing(self, role: Role) -> None:
        story = story_at(S.CREATED)
        with pytest.raises(errors.ActorNotAllowed):
            story.post(Actor(role, "someone"), make_cancelled())

    def test_only_dispatch_assigns_as_a_system_actor(self) -> None:
        story = story_at(S.CREATED)
        with pytest.raises(errors.ActorNotAllowed):
            story.post(Actor(Role.SYSTEM, "metrics"), make_assigned("tech-1"))
        with pytest.raises(errors.ActorNotAllowed):
            story.post(AUTO_DISPATCH, make_cancelled())
        story.post(AUTO_DISPATCH, make_assigned("tech-1"))
        assert story.current.technician_id == "tech-1"

    def test_customer_creates_orders_only_for_themself(self) -> None:
        story = Story()
        with pytest.raises(errors.ActorNotAllowed, match="themselves"):
            story.post(story.customer, make_created(customer_id="cust-other"))

    def test_role_is_checked_before_the_order_is_looked_up(self) -> None:
        with pytest.raises(errors.ActorNotAllowed):
            Story().post(make_technician(), make_cancelled())


class TestDecideResult:
    def test_created_gets_version_1_and_the_given_order_id(self) -> None:
        story = Story()
        event = story.create()
        assert event.version == 1
        assert event.order_id == story.order_id
        assert event.recorded_at == event.time

    def test_versions_grow_by_one_per_event(self) -> None:
        history = happy_path_history()
        assert [e.version for e in history] == list(range(1, len(history) + 1))
        assert len({e.order_id for e in history}) == 1

    def test_proposal_details_are_kept(self) -> None:
        story = story_at(S.CREATED)
        proposed = ProposedEvent(
            event_id=uuid4(),
            time=story.clock,
            actor=AUTO_DISPATCH,
            data=make_assigned("tech-9"),
            correlation_id="req-1",
            causation_id=str(story.history[0].event_id),
            device_id="dev-1",
            device_sequence=17,
        )
        now = story.clock + timedelta(seconds=3)
        event = decide(story.state, proposed, policy=Policy(), now=now)
        assert event.event_id == proposed.event_id
        assert (event.correlation_id, event.causation_id) == (
            "req-1",
            str(story.history[0].event_id),
        )
        assert (event.device_id, event.device_sequence) == ("dev-1", 17)
        assert event.recorded_at == now
        assert event.version == 2

    def test_created_needs_an_order_id(self) -> None:
        story = Story()
        proposed = story.propose(
            story.customer, make_created(customer_id=story.customer.id)
        )
        with pytest.raises(ValueError, match="order_id"):
            decide(None, proposed, policy=Policy(), now=proposed.time)

    def test_order_id_must_match_the_state(self) -> None:
        story = story_at(S.CREATED)
        proposed = story.propose(story.customer, make_cancelled())
        with pytest.raises(ValueError, match="order_id"):
            decide(
                story.state,
                proposed,
                policy=Policy(),
                now=proposed.time,
                order_id=uuid4(),
            )

    def test_refused_write_changes_nothing(self) -> None:
        story = story_at(S.APPROVED)
        before = story.state
        with pytest.raises(errors.PriceExceedsApprovedQuote):
            story.complete(99_999)
        assert story.state == before


class TestEvolve:
    def test_happy_path_fold_records_every_stage(self) -> None:
        history = happy_path_history()
        state = fold(history)
        assert state is not None
        times = {event.data.TYPE: event.time for event in history}
        assert state.status is S.COMPLETED
        assert state.version == len(history)
        assert state.created_at == times["created"]
        assert state.first_assigned_at == times["assigned"]
        assert state.first_accepted_at == times["accepted"]
        assert state.first_arrived_at == times["arrived"]
        assert state.first_diagnosed_at == times["diagnosed"]
        assert state.first_completed_at == times["completed"]
        assert state.completed_at == times["completed"]
        assert state.last_event_at == times["rated"]
        assert state.first_completed_by == state.technician_id
        assert state.visits == 1
        assert state.quotes_count == 1
        assert state.approved_quote == state.current_quote
        assert state.final_total == 12_000
        assert state.final_currency == "CNY"
        assert state.rated

    def test_empty_stream_folds_to_nothing(self) -> None:
        assert fold([]) is None

    def test_stream_without_created_still_folds(self) -> None:
        history = happy_path_history()[1:]
        state = fold(history)
        assert state is not None
        assert state.status is S.COMPLETED
        assert state.customer_id is None
        assert state.created_at is None
        assert state.urgency is None

    def test_repeated_created_changes_no_attribute(self) -> None:
        history = happy_path_history()
        state = fold(history)
        assert state is not None
        again = replace_version(history[0], len(history) + 1)
        after = evolve(state, again)
        assert after.customer_id == state.customer_id
        assert after.status is S.COMPLETED
        assert after.version == len(history) + 1

    def test_replay_follows_a_fact_the_rules_would_refuse(self) -> None:
        history = happy_path_history()
        created, completed = history[0], history[7]
        assert completed.data.TYPE == "completed"
        state = fold([created, replace_version(completed, 2)])
        assert state is not None
        assert state.status is S.COMPLETED
        assert state.first_completed_at == completed.time

    def test_visits_count_arrivals_before_the_first_final_completion(self) -> None:
        story = story_at(S.COMPLETED)
        story.reopen()
        story.assign()
        story.accept()
        story.arrive()
        assert story.current.visits == 1
        assert story.current.first_arrived_at == story.history[3].time

    @pytest.mark.parametrize(("status", "event_type"), sorted(TRANSITIONS))
    def test_next_status_follows_the_table(
        self, status: OrderStatus, event_type: str
    ) -> None:
        payload = SAMPLES[event_type](story_at(S.QUOTED))
        assert next_status(status, payload) is TRANSITIONS[status, event_type]


class TestPolicy:
    def test_defaults_are_the_spec_values(self) -> None:
        policy = Policy()
        assert policy.price_tolerance == Fraction(1, 20)
        assert policy.max_clock_skew == timedelta(minutes=5)
        assert policy.warranty_window == timedelta(days=30)
        assert policy.max_event_age == timedelta(hours=72)
        assert policy.max_events_per_order == 1000

    def test_price_tolerance_uses_exact_arithmetic(self) -> None:
        policy = Policy(price_tolerance=Fraction(Decimal("0.05")))
        assert policy.within_price_tolerance(2_100, 2_000)
        assert not policy.within_price_tolerance(2_101, 2_000)
        huge = 10**15
        assert policy.within_price_tolerance(huge * 105 // 100, huge)
        assert not policy.within_price_tolerance(huge * 105 // 100 + 1, huge)

    @pytest.mark.parametrize(
        "policy_args",
        [
            {"price_tolerance": Fraction(-1, 100)},
            {"max_clock_skew": timedelta(seconds=-1)},
            {"warranty_window": timedelta(days=-1)},
            {"max_event_age": timedelta(seconds=-1)},
        ],
    )
    def test_negative_limits_are_refused(self, policy_args: dict[str, object]) -> None:
        with pytest.raises(ValueError, match="negative"):
            Policy(**policy_args)  # type: ignore[arg-type]  # values vary by key

    def test_window_and_skew_helpers(self) -> None:
        policy = Policy()
        assert policy.latest_acceptable_time(T0) == T0 + timedelta(minutes=5)
        assert policy.within_warranty_window(T0, T0 + timedelta(days=30))
        assert not policy.within_warranty_window(T0, T0 + timedelta(days=30, seconds=1))
