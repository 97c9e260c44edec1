"""Properties of the lifecycle over generated histories (Hypothesis).

- Replay never fails: `fold` accepts any sequence of events, however wrong.
- Writes compose: a random walk of accepted `decide` calls yields a gapless history
  whose fold is the state built step by step, also after a JSON round trip.
- `decide` is a gate: whatever it lets through is an edge of the lifecycle, and a
  refusal changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta, timezone
from functools import partial
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
    T0,
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
LazyMove: TypeAlias = tuple[Actor, Callable[[], OrderPayload]]

# deadline=None: a loaded CI machine must not turn a slow example into a failure.
PROPERTY_SETTINGS = settings(max_examples=200, deadline=None)

# Small pools, so that generated events often refer to one another (the same
# technician, the quote just priced, a filed complaint) and exercise real paths.
TECHNICIANS = ("tech-a", "tech-b", "tech-c", "tech-d")
CUSTOMERS = ("cust-1", "cust-2")
COMPLAINTS = ("cmp-1", "cmp-2", "cmp-3")
EVENT_IDS = tuple(UUID(int=n) for n in range(1, 5))
ORDER_IDS = (UUID(int=100), UUID(int=101))

# Payloads are drawn from a pool built once: one draw per payload keeps the
# properties fast, and the pool still holds every type and every variant the
# lifecycle branches on (warranty, remote, outcomes, zero and non-zero money,
# matching and stale quote ids, known and unknown complaints).
PAYLOAD_POOL: tuple[OrderPayload, ...] = (
    *(
        make_created(customer_id=customer, warranty=warranty, urgency=urgency)
        for customer in CUSTOMERS
        for warranty in (False, True)
        for urgency in (Urgency.NORMAL, Urgency.EMERGENCY)
    ),
    *(
        build(technician)
        for technician in TECHNICIANS
        for build in (make_assigned, make_declined, make_accepted, make_arrived)
    ),
    make_diagnosed(remote=False),
    make_diagnosed(remote=True),
    *(make_priced(total) for total in (0, 9_000, 12_000)),
    *(make_quote_approved(quote_id) for quote_id in EVENT_IDS),
    *(make_quote_rejected(quote_id) for quote_id in EVENT_IDS),
    *(
        make_completed(total, outcome=outcome)
        for total in (0, 9_000, 12_600, 50_000)
        for outcome in Outcome
    ),
    *(make_rated(score) for score in (1, 5)),
    make_cancelled(),
    make_reopened(),
    *(make_complaint_filed(complaint_id) for complaint_id in COMPLAINTS),
    *(make_complaint_resolved(complaint_id) for complaint_id in COMPLAINTS),
)
ACTOR_POOL: tuple[Actor, ...] = (
    Actor(Role.CUSTOMER, CUSTOMERS[0]),
    Actor(Role.CUSTOMER, CUSTOMERS[1]),
    *(Actor(Role.TECHNICIAN, technician) for technician in TECHNICIANS[:2]),
    Actor(Role.DISPATCHER, "ops-1"),
    Actor(Role.ADMIN, "root"),
    Actor(Role.AUDITOR, "audit-1"),
    AUTO_DISPATCH,
    Actor(Role.SYSTEM, "metrics"),
)
OFFSETS = tuple(timezone(timedelta(hours=hours)) for hours in (-8, 0, 5, 8, 14))
payloads = st.sampled_from(PAYLOAD_POOL)
actors = st.sampled_from(ACTOR_POOL)


def make_event(
    payload: OrderPayload, event_id: UUID, version: int, seconds: int
) -> OrderEvent:
    """An event as a damaged or foreign stream might hold it.

    Only the drawn parts steer `evolve`; the UTC offset and the actor are derived
    from them (evolve ignores actors, and offsets only change how a time is
    written), which keeps Hypothesis to four draws per event.
    """
    return OrderEvent(
        event_id=event_id,
        order_id=ORDER_IDS[version % len(ORDER_IDS)],
        version=version,
        time=(T0 + timedelta(seconds=seconds)).astimezone(
            OFFSETS[seconds % len(OFFSETS)]
        ),
        recorded_at=T0,
        actor=ACTOR_POOL[seconds % len(ACTOR_POOL)],
        data=payload,
    )


# Times anywhere within about four months of T0, in any order.
any_events = st.builds(
    make_event,
    payloads,
    st.sampled_from(EVENT_IDS),
    st.integers(-3, 60),
    st.integers(-(10**7), 10**7),
)


@PROPERTY_SETTINGS
@given(st.lists(any_events, max_size=25))
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


def valid_moves(story: Story) -> list[LazyMove]:
    """Writes the lifecycle allows next, by the actor who would post them.

    Payloads are built lazily: a walk step draws one move out of many.
    """
    state = story.current
    customer, dispatcher = story.customer, story.dispatcher
    moves: list[LazyMove] = [(customer, make_complaint_filed)]
    moves += [
        (dispatcher, partial(make_complaint_resolved, complaint_id))
        for complaint_id in sorted(state.open_complaints)
    ]
    if state.status in BEFORE_COMPLETED:
        moves += [(customer, make_cancelled), (dispatcher, make_cancelled)]
    tech = state.technician_id
    technician = Actor(Role.TECHNICIAN, tech) if tech else None
    quote, approved = state.current_quote, state.approved_quote
    match state.status:
        case OrderStatus.CREATED:
            moves += [
                (AUTO_DISPATCH, partial(make_assigned, candidate))
                for candidate in TECHNICIANS
                if candidate not in state.declined_by
            ]
        case OrderStatus.ASSIGNED if technician and tech:
            moves += [
                (technician, partial(make_accepted, tech)),
                (technician, partial(make_declined, tech)),
            ]
        case OrderStatus.ACCEPTED if technician and tech:
            moves += [
                (technician, partial(make_arrived, tech)),
                (technician, partial(make_diagnosed, remote=True)),
            ]
        case OrderStatus.ON_SITE if technician:
            moves.append((technician, make_diagnosed))
        case OrderStatus.DIAGNOSED if technician:
            moves.append((technician, partial(make_priced, 9_000)))
            if state.under_warranty:
                moves += [
                    (technician, partial(make_completed, 0, outcome=outcome))
                    for outcome in Outcome
                ]
        case OrderStatus.QUOTED if quote:
            moves += [
                (customer, partial(make_quote_approved, quote.event_id)),
                (customer, partial(make_quote_rejected, quote.event_id)),
            ]
        case OrderStatus.APPROVED if technician and approved:
            moves.append((technician, partial(make_priced, approved.total + 1_000)))
            moves += [
                (technician, partial(make_completed, total, outcome=outcome))
                for outcome in Outcome
                for total in (0, approved.total, approved.total * 105 // 100)
            ]
        case OrderStatus.COMPLETED:
            moves.append((customer, make_reopened))
            if not state.rated:
                moves.append((customer, make_rated))
        case _:
            pass
    return moves


# A walk step: which of the moves on offer (modulo their number), and how many
# seconds after the previous event. Drawn up front, in one list, to keep the
# Hypothesis engine's per-draw cost out of the loop.
steps = st.lists(st.tuples(st.integers(0, 255), st.integers(0, 3600)), max_size=30)


def pick(moves: list[LazyMove], choice: int) -> Move:
    actor, build = moves[choice % len(moves)]
    return actor, build()


@PROPERTY_SETTINGS
@given(warranty=st.booleans(), walk=steps)
def test_random_walk_of_valid_writes_folds_to_the_state_built_step_by_step(
    warranty: bool, walk: list[tuple[int, int]]
) -> None:
    story = Story(customer=Actor(Role.CUSTOMER, CUSTOMERS[0]))
    story.create(warranty=warranty)
    for choice, gap in walk:
        before = story.current
        actor, payload = pick(valid_moves(story), choice)
        event = story.post(actor, payload, at=story.clock + timedelta(seconds=gap))
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


@settings(PROPERTY_SETTINGS, max_examples=100)
@given(
    warranty=st.booleans(),
    attempts=st.lists(
        st.tuples(actors, payloads, st.integers(0, 255) | st.none()), max_size=20
    ),
)
def test_decide_lets_through_only_edges_of_the_lifecycle(
    warranty: bool, attempts: list[tuple[Actor, OrderPayload, int | None]]
) -> None:
    story = Story(customer=Actor(Role.CUSTOMER, CUSTOMERS[0]))
    story.create(warranty=warranty)
    for actor, payload, valid_choice in attempts:
        # Arbitrary writes, mixed with valid ones so that the order gets somewhere.
        if valid_choice is not None:
            actor, payload = pick(valid_moves(story), valid_choice)
        before = story.current
        try:
            story.post(actor, payload)
        except errors.DomainError:
            assert story.state == before
            continue
        assert (before.status, payload.TYPE) in TRANSITIONS
    assert fold(story.history) == story.state
