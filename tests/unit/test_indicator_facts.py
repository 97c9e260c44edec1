"""Per-order facts (shared.domain.indicators) on hand-computed histories.

`Story` posts each step 7 minutes after the previous one, starting from
T0 = 2026-03-02 09:00 UTC, so the usual history is: created 09:07, assigned 09:14,
accepted 09:21, arrived 09:28, diagnosed 09:35, priced 09:42, approved 09:49,
completed 09:56, rated 10:03. Each test writes the times it relies on next to it.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.domain import events
from shared.domain.actors import Actor, Role
from shared.domain.events import Channel, Outcome, Urgency
from shared.domain.indicators import (
    ComplaintFact,
    OrderFacts,
    SlaPolicy,
    SlaTarget,
    apply_event,
    complaint_facts,
    derive_facts,
    rating_fact,
)
from shared.domain.lifecycle import OrderEvent, OrderStatus, fold
from tests.builders import (
    T0,
    Story,
    happy_path_history,
    make_accepted,
    make_admin,
    make_arrived,
    make_complaint_filed,
    make_complaint_resolved,
    make_completed,
    make_created,
    make_technician,
    story_at,
)
from tests.unit.test_lifecycle_properties import (
    CUSTOMERS,
    ORDER_IDS,
    PROPERTY_SETTINGS,
    any_events,
    pick,
    steps,
    valid_moves,
)


def minutes(n: float) -> datetime:
    """T0 + n minutes."""
    return T0 + timedelta(minutes=n)


def facts_of(story: Story) -> OrderFacts:
    facts = derive_facts(story.history)
    assert facts is not None
    return facts


def completed_story(*, warranty: bool = False) -> Story:
    """created 09:07 .. completed (fixed, 12 000 of an approved 12 000) 09:56."""
    return story_at(OrderStatus.COMPLETED, warranty=warranty)


class TestFirstTimeFix:
    def test_one_visit_fixed_and_never_reopened_is_a_first_time_fix(self) -> None:
        story = completed_story()
        facts = facts_of(story)
        tech = story.technician.id

        # accepted 09:21 - created 09:07 = 14 min = 840 s
        assert facts.response_time_s == 840.0
        # arrived 09:28 - created 09:07 = 21 min = 1260 s
        assert facts.arrival_time_s == 1260.0
        # diagnosed 09:35 - arrived 09:28 = 7 min = 420 s
        assert facts.diagnosis_time_s == 420.0
        # completed 09:56 - created 09:07 = 49 min = 2940 s
        assert facts.resolution_time_s == 2940.0
        assert facts.first_final_at == minutes(56)
        assert facts.visits == 1
        assert facts.first_time_fix is True
        assert facts.resolved is True
        assert facts.reopened is False
        assert facts.complaint_filed is False
        assert facts.is_open is False
        assert facts.cancelled_at is None
        # approved 12 000, final 12 000: (12 000 - 12 000) / 12 000 = 0
        assert facts.approved_total_at_final == 12_000
        assert facts.final_total_at_first_final == 12_000
        assert facts.currency == "CNY"
        assert facts.price_deviation == 0.0
        assert facts.overrun is False
        assert facts.priced_count == 1
        assert facts.requoted is False
        assert facts.quoted_before_work is True
        assert facts.free_warranty_completion is False
        assert facts.accepted_technician_id == tech
        assert facts.arrived_technician_id == tech
        assert facts.diagnosed_technician_id == tech
        assert facts.first_final_technician_id == tech
        assert facts.last_version == 8

    def test_a_follow_up_visit_makes_it_no_first_time_fix(self) -> None:
        story = story_at(OrderStatus.APPROVED)  # arrived 09:28, approved 09:49
        story.complete(0, outcome=Outcome.FOLLOW_UP_REQUIRED)  # 09:56 -> accepted
        story.arrive()  # 10:03: the second visit
        story.diagnose()  # 10:10
        story.price(12_000)  # 10:17: a follow-up must be priced and approved again
        story.approve()  # 10:24
        story.complete(12_000)  # 10:31, fixed
        facts = facts_of(story)

        assert facts.visits == 2
        assert facts.first_time_fix is False  # fixed, never reopened, but 2 visits
        assert facts.resolved is True
        # 10:31 - 09:07 = 84 min = 5040 s
        assert facts.resolution_time_s == 5040.0
        # the FIRST diagnosis: 09:35 - first arrival 09:28 = 420 s
        assert facts.diagnosis_time_s == 420.0
        assert facts.first_final_at == minutes(91)
        # two priced events before the first final completion: a re-quote
        assert facts.priced_count == 2
        assert facts.requoted is True

    def test_a_reopen_later_turns_a_first_time_fix_into_rework(self) -> None:
        story = completed_story()  # completed 09:56
        assert facts_of(story).first_time_fix is True
        story.reopen()  # 10:03
        reopened = facts_of(story)

        assert reopened.reopened is True
        assert reopened.first_time_fix is False
        assert reopened.resolved is True  # the first outcome was fixed
        assert reopened.is_open is True
        assert reopened.first_final_at == minutes(56)  # the measurement time stays

        # Rework under warranty, free of charge: assigned, accepted, arrived,
        # diagnosed, completed 10:10 .. 10:38.
        story.assign()
        story.accept()
        story.arrive()
        story.diagnose()
        story.complete(0)
        reworked = facts_of(story)

        assert reworked.is_open is False
        assert reworked.visits == 1  # arrivals after the first final don't count
        assert reworked.first_final_at == minutes(56)
        assert reworked.final_total_at_first_final == 12_000
        assert reworked.free_warranty_completion is False
        assert reworked.first_time_fix is False

    def test_a_remote_diagnosis_has_no_visit_and_no_diagnosis_time(self) -> None:
        story = Story()
        story.create()  # 09:07
        story.assign()  # 09:14
        story.accept()  # 09:21
        story.diagnose(remote=True)  # 09:28, no arrival
        story.price()  # 09:35
        story.approve()  # 09:42
        story.complete()  # 09:49
        facts = facts_of(story)

        assert facts.visits == 0
        assert facts.first_arrived_at is None
        assert facts.arrival_time_s is None
        assert facts.first_diagnosed_at == minutes(28)
        assert facts.diagnosis_time_s is None
        assert facts.sla_arrival_met(SlaPolicy()) is None
        # 09:49 - 09:07 = 42 min = 2520 s
        assert facts.resolution_time_s == 2520.0
        assert facts.first_time_fix is True  # 0 visits <= 1

    def test_a_not_fixed_outcome_is_final_but_neither_resolved_nor_fixed(
        self,
    ) -> None:
        story = story_at(OrderStatus.APPROVED)
        story.complete(outcome=Outcome.NOT_FIXED)  # 09:56
        facts = facts_of(story)

        assert facts.first_final_outcome is Outcome.NOT_FIXED
        assert facts.resolution_time_s == 2940.0
        assert facts.resolved is False
        assert facts.first_time_fix is False
        assert facts.is_open is False

    def test_outcome_measurements_are_none_before_a_final_completion(self) -> None:
        facts = facts_of(story_at(OrderStatus.ON_SITE))

        assert facts.is_open is True
        assert facts.first_time_fix is None
        assert facts.resolved is None
        assert facts.resolution_time_s is None
        assert facts.quoted_before_work is None
        assert facts.price_deviation is None
        assert facts.overrun is None
        assert facts.requoted is None


class TestPriceTransparency:
    def test_a_rejected_and_revised_quote_is_a_requote(self) -> None:
        story = story_at(OrderStatus.DIAGNOSED)  # diagnosed 09:35
        story.price(10_000)  # 09:42
        story.reject()  # 09:49
        story.price(9_000)  # 09:56
        story.approve()  # 10:03
        story.complete(9_000)  # 10:10
        facts = facts_of(story)

        assert facts.priced_count == 2
        assert facts.requoted is True
        # the quote in force is the approved 9 000, not the rejected 10 000
        assert facts.approved_total_at_final == 9_000
        assert facts.price_deviation == 0.0  # (9 000 - 9 000) / 9 000
        assert facts.overrun is False

    def test_an_overrun_within_the_tolerance_is_an_overrun(self) -> None:
        story = story_at(OrderStatus.DIAGNOSED)
        story.price(10_000)
        story.approve()
        # 10 500 is exactly the 5% the lifecycle allows: 10 500 x 100 <= 10 000 x 105
        story.complete(10_500)
        facts = facts_of(story)

        # (10 500 - 10 000) / 10 000 = 0.05
        assert facts.price_deviation == pytest.approx(0.05)
        assert facts.overrun is True
        assert facts.requoted is False
        assert facts.quoted_before_work is True

    def test_charging_less_than_the_quote_is_a_negative_deviation(self) -> None:
        story = story_at(OrderStatus.DIAGNOSED)
        story.price(10_000)
        story.approve()
        story.complete(9_000)
        facts = facts_of(story)

        # (9 000 - 10 000) / 10 000 = -0.1
        assert facts.price_deviation == pytest.approx(-0.1)
        assert facts.overrun is False

    def test_a_free_warranty_completion_is_left_out_of_price_indicators(
        self,
    ) -> None:
        story = story_at(OrderStatus.DIAGNOSED, warranty=True)  # diagnosed 09:35
        story.complete(0)  # 09:42, straight after diagnosis: warranty, no charge
        facts = facts_of(story)

        assert facts.free_warranty_completion is True
        assert facts.quoted_before_work is None  # excluded from that rate
        assert facts.approved_total_at_final is None
        assert facts.price_deviation is None  # no approved quote > 0
        assert facts.overrun is None
        assert facts.requoted is None
        assert facts.priced_count == 0
        assert facts.first_time_fix is True

    def test_a_charged_warranty_order_counts_in_quoted_before_work(self) -> None:
        facts = facts_of(completed_story(warranty=True))  # priced and approved

        assert facts.free_warranty_completion is False
        assert facts.quoted_before_work is True

    def test_an_approved_quote_of_zero_is_quoted_but_not_priced(self) -> None:
        story = story_at(OrderStatus.DIAGNOSED)
        story.price(0)
        story.approve()
        story.complete(0)
        facts = facts_of(story)

        assert facts.quoted_before_work is True
        assert facts.approved_total_at_final == 0
        assert facts.price_deviation is None  # the population is approved total > 0


class TestMultiVisitCharges:
    """indicators.md v2: final_total sums the completions up to the first final one,
    against the last quote approved before it."""

    def test_the_visits_charges_add_up_to_the_approved_quote(self) -> None:
        story = story_at(OrderStatus.APPROVED)  # an approved 12 000 at 09:49
        story.complete(4_000, outcome=Outcome.FOLLOW_UP_REQUIRED)  # 09:56
        story.arrive()  # 10:03, the follow-up visit completes under that quote
        story.complete(8_000)  # 10:10, fixed
        facts = facts_of(story)

        # 4 000 + 8 000 = 12 000 against 12 000: (12 000 - 12 000) / 12 000 = 0
        assert facts.final_total_at_first_final == 12_000
        assert facts.price_deviation == 0.0
        assert facts.overrun is False
        assert facts.visits == 2

    def test_the_visits_together_may_overrun_the_quote(self) -> None:
        story = story_at(OrderStatus.APPROVED)  # approved 12 000
        story.complete(6_000, outcome=Outcome.FOLLOW_UP_REQUIRED)
        story.arrive()
        story.complete(6_600)  # 12 600 = 12 000 x 1.05, the most allowed
        facts = facts_of(story)

        # (12 600 - 12 000) / 12 000 = 0.05
        assert facts.final_total_at_first_final == 12_600
        assert facts.price_deviation == pytest.approx(0.05)
        assert facts.overrun is True

    def test_a_re_quote_on_the_follow_up_visit_is_the_quote_compared_with(
        self,
    ) -> None:
        story = story_at(OrderStatus.APPROVED)  # approved 12 000
        story.complete(3_000, outcome=Outcome.FOLLOW_UP_REQUIRED)
        story.arrive()
        story.diagnose()
        story.price(9_000)
        story.approve()  # the last approved quote before the final completion
        story.complete(6_000)
        facts = facts_of(story)

        # 3 000 + 6 000 = 9 000 against 9 000
        assert facts.approved_total_at_final == 9_000
        assert facts.final_total_at_first_final == 9_000
        assert facts.price_deviation == 0.0
        assert facts.requoted is True

    def test_charges_after_the_first_final_completion_do_not_count(self) -> None:
        story = story_at(OrderStatus.APPROVED)  # approved 12 000
        story.complete(12_000)
        story.reopen()
        story.assign()
        story.accept()
        story.arrive()
        story.diagnose()
        story.price(5_000)
        story.approve()
        story.complete(2_000, outcome=Outcome.FOLLOW_UP_REQUIRED)
        story.arrive()
        story.complete(3_000)
        facts = facts_of(story)

        assert facts.final_total_at_first_final == 12_000
        assert facts.charged_before_final == 0
        assert facts.price_deviation == 0.0

    def test_a_warranty_order_charged_on_one_visit_is_not_free(self) -> None:
        story = story_at(OrderStatus.APPROVED, warranty=True)  # approved 12 000
        story.complete(5_000, outcome=Outcome.FOLLOW_UP_REQUIRED)
        story.arrive()
        story.complete(0)  # nothing on the last visit, 5 000 on the first
        facts = facts_of(story)

        assert facts.free_warranty_completion is False
        assert facts.quoted_before_work is True
        # (5 000 - 12 000) / 12 000
        assert facts.price_deviation == pytest.approx(-7 / 12)

    def test_charges_in_two_currencies_are_not_compared_with_the_quote(
        self,
    ) -> None:
        story = story_at(OrderStatus.APPROVED)  # approved 12 000 CNY
        story.complete(4_000, outcome=Outcome.FOLLOW_UP_REQUIRED)
        story.arrive()
        story.diagnose()
        story.price(8_000, currency="USD")
        story.approve()
        story.complete(4_000, currency="USD")
        facts = facts_of(story)

        assert facts.currency is None
        assert facts.price_deviation is None
        assert facts.overrun is None


class TestEta:
    """indicators.md v2: promised arrival = first accept + its eta_minutes."""

    def story(self, eta_minutes: int, arrive_after: int) -> Story:
        story = Story()
        story.create()  # 09:07
        story.assign()  # 09:14
        tech = story.technician
        story.post(tech, make_accepted(tech.id, eta_minutes=eta_minutes))  # 09:21
        story.post(tech, make_arrived(tech.id), at=minutes(21 + arrive_after))
        return story

    def test_an_early_arrival_has_a_negative_eta_error(self) -> None:
        facts = facts_of(self.story(eta_minutes=30, arrive_after=20))

        assert facts.promised_arrival == minutes(51)  # 09:21 + 30 min
        # arrived 09:41 - promised 09:51 = -600 s
        assert facts.eta_error_s == -600.0
        assert facts.eta_kept(900) is True

    def test_exactly_the_tolerance_late_keeps_the_eta_and_a_second_more_not(
        self,
    ) -> None:
        on_the_edge = facts_of(self.story(eta_minutes=30, arrive_after=45))

        assert on_the_edge.eta_error_s == 900.0  # 15 min late
        assert on_the_edge.eta_kept(900) is True
        assert on_the_edge.eta_kept(899.5) is False

    def test_only_the_first_accept_promises(self) -> None:
        story = self.story(eta_minutes=10, arrive_after=10)  # arrived 09:31
        story.diagnose()
        story.price()
        story.approve()
        story.complete()
        story.reopen()
        story.assign()
        story.post(story.technician, make_accepted(story.technician.id, eta_minutes=0))
        facts = facts_of(story)

        assert facts.promised_arrival == minutes(31)
        assert facts.eta_error_s == 0.0

    def test_no_arrival_or_no_accept_is_not_measured(self) -> None:
        story = Story()
        story.create()
        assert facts_of(story).eta_error_s is None
        assert facts_of(story).eta_kept(900) is None
        story.assign()
        story.accept()
        assert facts_of(story).promised_arrival is not None
        assert facts_of(story).eta_error_s is None


class TestCancellation:
    def test_a_cancelled_order_is_neither_open_nor_measured_as_completed(
        self,
    ) -> None:
        story = Story()
        story.create()  # 09:07
        story.assign()  # 09:14
        story.cancel()  # 09:21
        facts = facts_of(story)

        assert facts.cancelled_at == minutes(21)
        assert facts.is_open is False
        assert facts.first_final_at is None
        assert facts.first_time_fix is None
        assert facts.response_time_s is None

    def test_a_new_order_is_open(self) -> None:
        story = Story()
        story.create()

        assert facts_of(story).is_open is True


# (urgency, accept target, arrival target) in minutes, indicators.md's defaults.
SLA_TARGETS = [
    (Urgency.EMERGENCY, 15, 120),
    (Urgency.URGENT, 60, 480),
    (Urgency.NORMAL, 240, 2880),
]


def sla_story(
    urgency: Urgency, *, accept_after: timedelta, arrive_after: timedelta
) -> Story:
    """created at T0 exactly, accepted and arrived the given times later."""
    story = Story()
    created = make_created(customer_id=story.customer.id, urgency=urgency)
    story.post(story.customer, created, at=T0)
    story.assign()
    tech = story.technician
    story.post(tech, make_accepted(tech.id), at=T0 + accept_after)
    story.post(tech, make_arrived(tech.id), at=T0 + arrive_after)
    return story


class TestSla:
    @pytest.mark.parametrize(("urgency", "accept", "arrive"), SLA_TARGETS)
    def test_exactly_the_target_meets_the_sla(
        self, urgency: Urgency, accept: int, arrive: int
    ) -> None:
        facts = facts_of(
            sla_story(
                urgency,
                accept_after=timedelta(minutes=accept),
                arrive_after=timedelta(minutes=arrive),
            )
        )

        assert facts.response_time_s == accept * 60
        assert facts.arrival_time_s == arrive * 60
        assert facts.sla_accept_met(SlaPolicy()) is True
        assert facts.sla_arrival_met(SlaPolicy()) is True

    @pytest.mark.parametrize(("urgency", "accept", "arrive"), SLA_TARGETS)
    def test_a_second_past_the_target_misses_the_sla(
        self, urgency: Urgency, accept: int, arrive: int
    ) -> None:
        second = timedelta(seconds=1)
        facts = facts_of(
            sla_story(
                urgency,
                accept_after=timedelta(minutes=accept) + second,
                arrive_after=timedelta(minutes=arrive) + second,
            )
        )

        assert facts.response_time_s == accept * 60 + 1
        assert facts.sla_accept_met(SlaPolicy()) is False
        assert facts.sla_arrival_met(SlaPolicy()) is False

    def test_targets_are_configurable(self) -> None:
        # accepted after 30 min, arrived after 90 min, a normal order
        facts = facts_of(
            sla_story(
                Urgency.NORMAL,
                accept_after=timedelta(minutes=30),
                arrive_after=timedelta(minutes=90),
            )
        )
        strict = SlaPolicy(normal=SlaTarget(accept_minutes=20, arrive_minutes=90))

        assert facts.sla_accept_met(SlaPolicy()) is True  # 30 <= 240
        assert facts.sla_accept_met(strict) is False  # 30 > 20
        assert facts.sla_arrival_met(strict) is True  # 90 <= 90

    def test_no_accept_yet_is_not_measured(self) -> None:
        facts = facts_of(story_at(OrderStatus.ASSIGNED))

        assert facts.sla_accept_met(SlaPolicy()) is None
        assert facts.sla_arrival_met(SlaPolicy()) is None


class TestAttribution:
    def test_a_completion_posted_by_an_admin_belongs_to_the_assignee(self) -> None:
        story = story_at(OrderStatus.APPROVED)
        story.post(make_admin(), make_completed(12_000))

        assert facts_of(story).first_final_technician_id == story.technician.id

    def test_rework_by_another_technician_keeps_the_first_measurements(
        self,
    ) -> None:
        story = completed_story()  # accepted 09:21 and completed 09:56 by the first
        first = story.technician.id
        story.reopen()  # 10:03
        story.assign(make_technician())  # 10:10, someone else does the rework
        story.accept()  # 10:17
        facts = facts_of(story)

        assert facts.accepted_technician_id == first
        assert facts.first_accepted_at == minutes(21)
        assert facts.first_final_technician_id == first
        assert facts.assignee_id == story.technician.id != first


class TestRatingFact:
    def test_a_rating_belongs_to_the_technician_of_the_first_final_completion(
        self,
    ) -> None:
        story = completed_story()
        rated = story.rate(4)  # 10:03, nps 9, attitude 5, punctuality 4
        facts = facts_of(story)
        rating = rating_fact(facts, rated)

        assert rating is not None
        assert rating.order_id == story.order_id
        assert rating.event_id == rated.event_id
        assert rating.rated_at == minutes(63)
        assert rating.score == 4
        assert rating.nps == 9
        assert rating.attitude == 5
        assert rating.punctuality == 4
        assert rating.professionalism is None
        assert rating.attitude_value == 5  # the attitude dimension, not the score
        assert rating.technician_id == story.technician.id
        assert (rating.region, rating.category, rating.urgency) == (
            "shanghai-pudong",
            "washing_machine",
            Urgency.NORMAL,
        )

    def test_without_an_attitude_dimension_the_score_stands_in(self) -> None:
        story = completed_story()
        rated = story.post(story.customer, events.Rated(score=3))
        rating = rating_fact(facts_of(story), rated)

        assert rating is not None
        assert rating.attitude is None
        assert rating.attitude_value == 3

    def test_only_the_first_rating_of_a_damaged_stream_counts(self) -> None:
        story = completed_story()
        first = story.rate(5)
        second = replace(first, version=first.version + 1, data=events.Rated(score=1))
        facts = apply_event(facts_of(story), second)

        assert rating_fact(facts, first) is not None
        assert rating_fact(facts, second) is None

    def test_other_events_have_no_rating(self) -> None:
        story = completed_story()

        assert rating_fact(facts_of(story), story.history[-1]) is None


class TestComplaintFacts:
    def test_a_complaint_resolution_time_is_measured_from_its_filing(self) -> None:
        story = story_at(OrderStatus.ACCEPTED)  # accepted 09:21
        before_filing = facts_of(story)
        filed = story.post(story.customer, make_complaint_filed("cmp-1"))  # 09:28
        (filed_fact,) = complaint_facts(before_filing, facts_of(story), filed)
        story.arrive()  # 09:35
        before_resolution = facts_of(story)
        resolved = story.post(
            story.dispatcher, make_complaint_resolved("cmp-1")
        )  # 09:42
        facts = facts_of(story)
        (resolved_fact,) = complaint_facts(before_resolution, facts, resolved)

        assert facts.complaint_filed is True
        assert filed_fact == ComplaintFact(
            order_id=story.order_id,
            complaint_id="cmp-1",
            filed_at=minutes(28),
            resolved_at=None,
            # no final completion yet: the complaint belongs to no technician
            technician_id=None,
            region="shanghai-pudong",
            category="washing_machine",
            urgency=Urgency.NORMAL,
            channel=Channel.APP,
        )
        assert filed_fact.resolution_s is None
        assert resolved_fact.resolved_at == minutes(42)
        # 09:42 - 09:28 = 14 min = 840 s
        assert resolved_fact.resolution_s == 840.0

    def test_the_first_final_completion_claims_every_complaint_of_the_order(
        self,
    ) -> None:
        story = story_at(OrderStatus.APPROVED)
        story.post(story.customer, make_complaint_filed("cmp-1"))
        story.post(story.dispatcher, make_complaint_resolved("cmp-1"))
        story.post(story.customer, make_complaint_filed("cmp-2"))
        before = facts_of(story)
        completion = story.complete()
        after = facts_of(story)

        claimed = complaint_facts(before, after, completion)

        assert [c.complaint_id for c in claimed] == ["cmp-1", "cmp-2"]
        assert {c.technician_id for c in claimed} == {story.technician.id}
        assert claimed[0].resolution_s is not None
        assert claimed[1].resolved_at is None

    def test_other_events_change_no_complaint(self) -> None:
        story = story_at(OrderStatus.ON_SITE)
        story.post(story.customer, make_complaint_filed("cmp-1"))
        before = facts_of(story)
        diagnosis = story.diagnose()

        assert complaint_facts(before, facts_of(story), diagnosis) == ()

    def test_a_complaint_after_completion_counts_for_the_complaint_rate(
        self,
    ) -> None:
        story = completed_story()
        before = facts_of(story)
        filed = story.post(story.customer, make_complaint_filed())
        after = facts_of(story)

        assert after.complaint_filed is True
        (fact,) = complaint_facts(before, after, filed)
        assert fact.technician_id == after.first_final_technician_id is not None

    def test_resolving_an_unknown_complaint_records_nothing(self) -> None:
        story = story_at(OrderStatus.CREATED)
        filed = story.post(story.customer, make_complaint_filed("cmp-1"))
        ghost = replace(
            filed,
            version=filed.version + 1,
            data=make_complaint_resolved("cmp-never-filed"),
        )
        before = facts_of(story)
        facts = apply_event(before, ghost)

        assert complaint_facts(before, facts, ghost) == ()
        assert facts.complaints == before.complaints


class TestApplyEvent:
    def test_a_redelivered_event_changes_nothing(self) -> None:
        history = happy_path_history()
        facts = derive_facts(history)
        assert facts is not None

        for event in history:
            assert apply_event(facts, event) is facts

    def test_events_before_created_are_ignored(self) -> None:
        created, assigned, *_ = happy_path_history()

        assert apply_event(None, assigned) is None
        assert derive_facts([assigned, created]) == derive_facts([created])
        assert derive_facts([]) is None

    def test_events_of_another_order_are_ignored(self) -> None:
        mine = happy_path_history()
        theirs = happy_path_history()
        facts = derive_facts(mine[:3])
        assert facts is not None

        assert apply_event(facts, theirs[3]) is facts

    def test_the_stored_json_carries_the_measurements_and_reloads_equal(
        self,
    ) -> None:
        story = completed_story()
        story.rate()
        story.post(story.customer, make_complaint_filed())
        facts = facts_of(story)
        stored = facts.model_dump(mode="json")

        assert stored["response_time_s"] == 840.0
        assert stored["first_time_fix"] is True
        assert stored["is_open"] is False
        assert stored["complaint_filed"] is True
        assert OrderFacts.model_validate_json(facts.model_dump_json()) == facts
        # JSONB comes back from the driver as a dict of JSON values
        assert OrderFacts.model_validate(stored) == facts


# --- properties --------------------------------------------------------------------


# Fewer examples than the lifecycle's properties: those already exercise the same
# generators, and the unit layer must stay under 5 s.
FACTS_SETTINGS = settings(PROPERTY_SETTINGS, max_examples=50)


@FACTS_SETTINGS
@given(st.lists(any_events, max_size=25))
def test_apply_event_never_raises_on_any_sequence_of_events(
    history: list[OrderEvent],
) -> None:
    # As generated (mixed orders, versions out of order: mostly ignored), and as one
    # order's gapless stream of the same payloads in any order (all applied).
    one_order = [
        replace(event, order_id=ORDER_IDS[0], version=n)
        for n, event in enumerate(history, start=1)
    ]
    for stream in (history, one_order):
        facts = derive_facts(stream)
        if facts is None:
            assert not any(isinstance(e.data, events.Created) for e in stream)
            continue
        assert facts.visits >= 0
        assert facts.last_version <= max(e.version for e in stream)
        assert reloaded(facts) == facts


def reloaded(facts: OrderFacts | None) -> OrderFacts | None:
    """The facts as the metrics service stores and loads them (JSONB)."""
    if facts is None:
        return None
    return OrderFacts.model_validate_json(facts.model_dump_json())


@FACTS_SETTINGS
@given(warranty=st.booleans(), walk=steps)
def test_stepwise_application_through_storage_equals_derive_facts(
    warranty: bool, walk: list[tuple[int, int]]
) -> None:
    story = Story(customer=Actor(Role.CUSTOMER, CUSTOMERS[0]))
    story.create(warranty=warranty)
    stored: OrderFacts | None = None
    for choice, gap in walk:
        actor, payload = pick(valid_moves(story), choice)
        story.post(actor, payload, at=story.clock + timedelta(seconds=gap))
    for event in story.history:
        stored = reloaded(apply_event(stored, event))

    facts = derive_facts(story.history)
    assert stored == facts
    assert facts is not None
    # The facts agree with the lifecycle's own fold wherever both keep a fact.
    state = fold(story.history)
    assert state is not None
    assert facts.last_version == state.version
    assert facts.visits == state.visits
    assert facts.first_final_at == state.first_completed_at
    assert facts.first_final_outcome == state.first_outcome
    assert facts.first_final_technician_id == state.first_completed_by
    assert facts.cancelled_at == state.cancelled_at
    assert facts.reopened == (state.reopen_count > 0)
    assert facts.priced_count <= state.quotes_count
    assert {c.complaint_id for c in facts.complaints} == state.all_complaints
    assert {
        c.complaint_id for c in facts.complaints if c.resolved_at is None
    } == state.open_complaints
    assert facts.is_open == (
        state.status not in (OrderStatus.COMPLETED, OrderStatus.CANCELLED)
    )


class TestAssignmentsAndChannel:
    """Who held the order when (a censored SLA breach is charged by it) and the
    `created` event's channel."""

    def test_each_assignment_is_held_until_declined_expired_or_replaced(
        self,
    ) -> None:
        story = Story()
        story.post(
            story.customer,
            make_created(customer_id=story.customer.id, channel=Channel.WEB),
        )  # 09:07
        first = story.technician.id
        story.assign()  # 09:14
        story.decline()  # 09:21
        second = make_technician()
        story.assign(second)  # 09:28
        story.expire()  # 09:35
        story.assign(second)  # 09:42
        story.accept()  # 09:49
        facts = facts_of(story)

        assert facts.channel is Channel.WEB
        assert [(s.technician_id, s.since, s.until) for s in facts.assignments] == [
            (first, minutes(14), minutes(21)),
            (second.id, minutes(28), minutes(35)),
            # accepted: still held
            (second.id, minutes(42), None),
        ]

    def test_the_spans_stop_at_the_first_arrival_and_close_on_cancel(self) -> None:
        arrived = story_at(OrderStatus.ON_SITE)  # assigned 09:14, arrived 09:28
        held = facts_of(arrived).assignments
        arrived.cancel()  # no censored breach can fall after the first arrival
        assert facts_of(arrived).assignments == held
        assert [(s.since, s.until) for s in held] == [(minutes(14), None)]

        assigned = story_at(OrderStatus.ASSIGNED)  # assigned 09:14
        assigned.cancel()  # 09:21
        assert [(s.since, s.until) for s in facts_of(assigned).assignments] == [
            (minutes(14), minutes(21))
        ]
