"""Properties of the lifecycle over generated histories (Hypothesis).

- Replay never fails: `fold` accepts any sequence of events, however wrong.
- Writes compose: a random walk of accepted `decide` calls yields a gapless history
  whose fold is the state built step by step, also after a JSON round trip.
- `decide` is a gate: whatever it lets through is an edge of the lifecycle, and a
  refusal changes nothing.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import TypeAlias
from uuid import UUID

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.domain import errors
from shared.domain.actors import Actor, Role
from shared.domain.events import OrderPayload, Outcome, Urgency, parse_payload
from shared.domain.lifecycle import (
    AUTO_DISPATCH,
    BEFORE_COMPLETED,
    TRANSITIONS,
    OrderEvent,
    OrderStatus,
    fold,
    next_status,
)
from tests.builders import (
    Story,
    make_accepted,
    make_arrived,
    make_assigned,
    make_cancelled,
    make_complaint_filed,
    make_complaint_resolved,
    make_completed,
    make_created,
    make_declined,
    make_diagnosed,
    make_priced,
    make_quote_approved,
    make_quote_rejected,
    make_rated,
    make_reopened,
)

Move: TypeAlias = tuple[Actor, OrderPayload]

PROPERTY_SETTINGS = settings(max_examples=200, deadline=None)

# Small pools, so that generated events often refer to one another (the same
# technician, the quote just priced, a filed complaint) and exercise real paths.
TECHNICIANS = ("tech-a", "tech-b", "tech-c", "tech-d")
CUSTOMERS = ("cust-1", "cust-2")
COMPLAINTS = ("cmp-1", "cmp-2", "cmp-3")
EVENT_IDS = tuple(UUID(int=n) for n in range(1, 5))
ORDER_IDS = (UUID(int=100), UUID(int=101))

technicians = st.sampled_from(TECHNICIANS)
event_ids = st.sampled_from(EVENT_IDS) | st.uuids()
offsets = st.integers(-12, 14).map(lambda hours: timezone(timedelta(hours=hours)))
aware_times = st.datetimes(
    min_value=datetime(2025, 1, 1),  # noqa: DTZ001 - bounds; tz comes from `offsets`
    max_value=datetime(2027, 1, 1),  # noqa: DTZ001
    timezones=offsets,
)
amounts = st.integers(0, 50_000)

payloads: st.SearchStrategy[OrderPayload] = st.one_of(
    st.builds(
        make_created,
        customer_id=st.sampled_from(CUSTOMERS),
        warranty=st.booleans(),
        urgency=st.sampled_from(Urgency),
    ),
    st.builds(make_assigned, technicians),
    st.builds(make_declined, technicians),
    st.builds(make_accepted, technicians),
    st.builds(make_arrived, technicians),
    st.builds(make_diagnosed, remote=st.booleans()),
    st.builds(make_priced, amounts),
    st.builds(make_quote_approved, event_ids),
    st.builds(make_quote_rejected, event_ids),
    st.builds(make_completed, amounts, outcome=st.sampled_from(Outcome)),
    st.builds(make_rated, st.integers(1, 5)),
    st.builds(make_cancelled),
    st.builds(make_reopened),
    st.builds(make_complaint_filed, st.sampled_from(COMPLAINTS)),
    st.builds(make_complaint_resolved, st.sampled_from(COMPLAINTS)),
)
actors = st.builds(
    Actor,
    st.sampled_from(Role),
    st.sampled_from((*CUSTOMERS, *TECHNICIANS, "dispatch", "ops-1")),
)
any_events = st.builds(
    OrderEvent,
    event_id=event_ids,
    order_id=st.sampled_from(ORDER_IDS),
    version=st.integers(-3, 60),
    time=aware_times,
    recorded_at=aware_times,
    actor=actors,
    data=payloads,
)


@PROPERTY_SETTINGS
@given(st.lists(any_events, max_size=40))
def test_fold_never_raises_on_any_sequence_of_events(
    history: list[OrderEvent],
) -> None:
    state = fold(history)
    if not history:
        assert state is None
        return
    assert state is not None
    assert state.version == history[-1].version
    assert state.last_event_at == history[-1].time
    assert state.status in OrderStatus
    assert state.open_complaints <= state.all_complaints
    # Replay is deterministic: the same facts give the same state.
    assert fold(list(history)) == state


def valid_moves(story: Story) -> list[Move]:
    """Writes the lifecycle allows next, by the actor who would post them."""
    state = story.current
    customer, dispatcher = story.customer, story.dispatcher
    moves: list[Move] = [(customer, make_complaint_filed())]
    moves += [
        (dispatcher, make_complaint_resolved(complaint_id))
        for complaint_id in sorted(state.open_complaints)
    ]
    if state.status in BEFORE_COMPLETED:
        moves += [(customer, make_cancelled()), (dispatcher, make_cancelled())]
    tech = state.technician_id
    technician = Actor(Role.TECHNICIAN, tech) if tech else None
    quote, approved = state.current_quote, state.approved_quote
    match state.status:
        case OrderStatus.CREATED:
            moves += [
                (AUTO_DISPATCH, make_assigned(candidate))
                for candidate in TECHNICIANS
                if candidate not in state.declined_by
            ]
        case OrderStatus.ASSIGNED if technician and tech:
            moves += [
                (technician, make_accepted(tech)),
                (technician, make_declined(tech)),
            ]
        case OrderStatus.ACCEPTED if technician and tech:
            moves += [
                (technician, make_arrived(tech)),
                (technician, make_diagnosed(remote=True)),
            ]
        case OrderStatus.ON_SITE if technician:
            moves.append((technician, make_diagnosed()))
        case OrderStatus.DIAGNOSED if technician:
            moves.append((technician, make_priced(9_000)))
            if state.under_warranty:
                moves += [
                    (technician, make_completed(0, outcome=outcome))
                    for outcome in Outcome
                ]
        case OrderStatus.QUOTED if quote:
            moves += [
                (customer, make_quote_approved(quote.event_id)),
                (customer, make_quote_rejected(quote.event_id)),
            ]
        case OrderStatus.APPROVED if technician and approved:
            moves.append((technician, make_priced(approved.total + 1_000)))
            moves += [
                (technician, make_completed(total, outcome=outcome))
                for outcome in Outcome
                for total in (0, approved.total, approved.total * 105 // 100)
            ]
        case OrderStatus.COMPLETED:
            moves.append((customer, make_reopened()))
            if not state.rated:
                moves.append((customer, make_rated()))
        case _:
            pass
    return moves


@PROPERTY_SETTINGS
@given(st.data())
def test_random_walk_of_valid_writes_folds_to_the_state_built_step_by_step(
    data: st.DataObject,
) -> None:
    story = Story(customer=Actor(Role.CUSTOMER, "cust-1"))
    story.create(warranty=data.draw(st.booleans(), label="warranty"))
    for _ in range(data.draw(st.integers(0, 40), label="steps")):
        before = story.current
        actor, payload = data.draw(st.sampled_from(valid_moves(story)), label="move")
        gap = timedelta(seconds=data.draw(st.integers(0, 3600), label="gap"))
        event = story.post(actor, payload, at=story.clock + gap)
        assert event.version == before.version + 1
        assert story.current.status is next_status(before.status, payload)

    history = story.history
    assert [event.version for event in history] == list(range(1, len(history) + 1))
    assert fold(history) == story.state
    # The stored JSON form folds to the same state: payloads survive the wire.
    reparsed = [
        replace(
            event, data=parse_payload(event.data.TYPE, event.data.model_dump_json())
        )
        for event in history
    ]
    assert fold(reparsed) == story.state


@PROPERTY_SETTINGS
@given(
    st.data(),
    st.lists(st.tuples(actors, payloads), min_size=1, max_size=25),
)
def test_decide_lets_through_only_edges_of_the_lifecycle(
    data: st.DataObject, attempts: list[Move]
) -> None:
    story = Story(customer=Actor(Role.CUSTOMER, "cust-1"))
    story.create(warranty=data.draw(st.booleans(), label="warranty"))
    for actor, payload in attempts:
        # Mix arbitrary writes with valid ones so the walk gets somewhere.
        if data.draw(st.booleans(), label="valid instead"):
            actor, payload = data.draw(st.sampled_from(valid_moves(story)))
        before = story.current
        try:
            story.post(actor, payload)
        except errors.DomainError:
            assert story.state == before
            continue
        assert (before.status, payload.TYPE) in TRANSITIONS
    assert fold(story.history) == story.state
