"""The timeline projection: what a customer sees of each event, and what it skips."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any
from uuid import uuid4

from services.intake.timeline import (
    DECLINED_NOTE,
    EXPIRED_NOTE,
    build_timeline,
    seen_events,
    technician_ids,
)
from shared.domain import events
from shared.domain.lifecycle import OrderEvent, OrderStatus
from shared.events.envelope import encode, format_time, to_cloudevent
from tests.builders import Story, story_at


def envelope_of(event: OrderEvent) -> dict[str, Any]:
    """The envelope as the store hands it back (JSON, not Python values)."""
    stored: dict[str, Any] = json.loads(
        encode(to_cloudevent(event, source="/servicetrail/dispatch"))
    )
    return stored


def later_envelope(story: Story, name: str, data: dict[str, Any]) -> dict[str, Any]:
    """An envelope of a type this release may not know, after the story's events."""
    envelope = envelope_of(story.history[-1])
    return envelope | {
        "id": str(uuid4()),
        "type": f"servicetrail.order.{name}",
        "time": format_time(story.clock + timedelta(minutes=1)),
        "orderversion": len(story.history) + 1,
        "data": data,
    }


def test_an_expired_assignment_shows_a_note_without_the_technician() -> None:
    story = story_at(OrderStatus.ASSIGNED)
    expired = later_envelope(
        story,
        "assignment_expired",
        {"technician_id": story.technician.id, "assigned_event_id": str(uuid4())},
    )

    seen = seen_events([*map(envelope_of, story.history), expired])
    timeline = build_timeline(story.current, seen, {})

    last = timeline.entries[-1]
    assert (last.type, last.note, last.technician) == (
        "assignment_expired",
        EXPIRED_NOTE,
        None,
    )
    assert story.technician.id not in last.model_dump_json()


def test_a_decline_shows_a_note_without_the_technician() -> None:
    story = story_at(OrderStatus.ASSIGNED)
    story.decline()

    seen = seen_events(map(envelope_of, story.history))
    timeline = build_timeline(story.current, seen, {})

    last = timeline.entries[-1]
    assert (last.type, last.note, last.technician) == ("declined", DECLINED_NOTE, None)
    assert timeline.technician is None


def test_event_types_it_does_not_know_are_skipped() -> None:
    story = story_at(OrderStatus.ACCEPTED)
    unknown = later_envelope(story, "teleported", {"to": "mars"})

    seen = seen_events([*map(envelope_of, story.history), unknown])

    assert [e.type for e in seen] == ["created", "assigned", "accepted"]


def test_the_eta_is_the_first_acceptance_plus_its_minutes() -> None:
    story = story_at(OrderStatus.ON_SITE)
    accepted = story.history[2]

    timeline = build_timeline(
        story.current, seen_events(map(envelope_of, story.history)), {}
    )

    assert timeline.eta == accepted.time + timedelta(minutes=45)
    assert timeline.entries[2].eta == timeline.eta


def test_names_come_from_the_registry_and_stay_null_when_unknown() -> None:
    story = story_at(OrderStatus.ACCEPTED)
    seen = seen_events(map(envelope_of, story.history))
    assert technician_ids(seen) == {story.technician.id}

    named = build_timeline(story.current, seen, {story.technician.id: "李师傅"})
    unnamed = build_timeline(story.current, seen, {})

    assert named.technician is not None
    assert named.technician.name == "李师傅"
    assert unnamed.technician is not None
    assert unnamed.technician.name is None


def test_the_created_entry_keeps_the_request_but_not_the_contact_reference() -> None:
    story = story_at(OrderStatus.CREATED)
    created = story.history[0].data
    assert isinstance(created, events.Created)

    timeline = build_timeline(
        story.current, seen_events(map(envelope_of, story.history)), {}
    )

    request = timeline.entries[0].request
    assert request is not None
    assert request.description.startswith("洗衣机")
    assert "contact_ref" not in timeline.model_dump_json()
    assert created.contact_ref not in timeline.model_dump_json()
