"""The order state codec: exact round trips, and a total decoder.

Writes decide from the state stored beside each order, so `decode(encode(s))` must
be `s` for every state `fold` can produce, also after the JSON text round trip the
database makes; anything else must be a `StateFormatError` (the store rebuilds).
"""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.domain.events import Outcome
from shared.domain.lifecycle import OrderState, fold
from shared.domain.state_codec import (
    FIELD_CODECS,
    FORMAT_KEY,
    STATE_FORMAT,
    StateFormatError,
    decode_state,
    encode_state,
)
from tests.builders import Story, make_complaint_filed, make_complaint_resolved
from tests.unit.test_lifecycle_properties import PROPERTY_SETTINGS, any_events


def through_json(state: OrderState) -> OrderState:
    """As the store does it: JSON text in, JSON text out."""
    return decode_state(json.loads(json.dumps(encode_state(state))))


def rich_story() -> Story:
    """One order whose state sets every kind of field (each is non-default)."""
    story = Story()
    story.create(warranty=True)
    story.assign()
    story.decline()  # declined_by
    story.assign(Story().technician)
    story.expire()  # expired_for
    story.assign(Story().technician)  # assigned_event_id, assigned_at
    story.accept()  # promised_arrival
    story.arrive()
    story.diagnose()
    story.price()
    story.reject()
    story.price(9_000)
    story.approve()  # approved_quote with items
    story.complete(9_000, outcome=Outcome.FOLLOW_UP_REQUIRED)  # follow_ups
    story.arrive()
    story.diagnose()
    story.price(18_000)  # a revised quote covers both visits
    story.approve()
    story.complete(9_000)  # first_outcome, final_* fields, charged_total
    story.rate()
    filed = make_complaint_filed()
    story.post(story.customer, filed)
    story.post(story.customer, make_complaint_filed())  # one stays open
    story.post(story.dispatcher, make_complaint_resolved(filed.complaint_id))
    story.reopen()  # reopen_count, reopened_at
    story.assign()
    story.expire()  # expired_for, again after the reopen
    story.assign(Story().technician)
    story.accept()
    story.arrive()
    story.diagnose()
    story.price()
    story.approve()  # an approved quote again
    story.complete(3_000, outcome=Outcome.FOLLOW_UP_REQUIRED)  # charged_total
    story.arrive()
    story.diagnose()
    story.price(12_500)  # and a revised quote awaiting a decision
    return story


class TestEncodeState:
    def test_every_field_of_the_state_has_a_codec(self) -> None:
        assert set(FIELD_CODECS) == {f.name for f in fields(OrderState)}

    def test_a_state_with_every_kind_of_field_set_round_trips(self) -> None:
        state = rich_story().current
        unset = [
            f.name
            for f in fields(state)
            if getattr(state, f.name) in (None, False, 0, frozenset())
        ]
        # Only this is unset by a story that reopens (and never cancels).
        assert unset == ["cancelled_at"]
        assert through_json(state) == state

    def test_a_cancelled_order_round_trips(self) -> None:
        story = Story()
        story.create()
        story.cancel()
        assert through_json(story.current) == story.current

    def test_the_state_is_tagged_with_its_format(self) -> None:
        story = Story()
        story.create()
        assert encode_state(story.current)[FORMAT_KEY] == STATE_FORMAT

    @PROPERTY_SETTINGS
    @given(st.lists(any_events, min_size=1, max_size=25))
    def test_every_folded_state_round_trips(self, history: list[Any]) -> None:
        state = fold(history)
        assert state is not None
        assert through_json(state) == state


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


class TestDecodeState:
    def encoded(self) -> dict[str, Any]:
        encoded: dict[str, Any] = json.loads(
            json.dumps(encode_state(rich_story().current))
        )
        return encoded

    def test_another_format_version_is_not_read(self) -> None:
        encoded = {**self.encoded(), FORMAT_KEY: STATE_FORMAT + 1}
        with pytest.raises(StateFormatError):
            decode_state(encoded)

    def test_a_missing_field_is_not_read(self) -> None:
        encoded = self.encoded()
        del encoded["visits"]
        with pytest.raises(StateFormatError):
            decode_state(encoded)

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("version", "7"),
            ("version", True),
            ("warranty", 1),
            ("status", "lost"),
            ("order_id", "not-a-uuid"),
            ("created_at", "2026-03-02T09:00:00"),  # no offset
            ("declined_by", "tech-a"),
            ("current_quote", {"event_id": "x"}),
            ("final_outcome", "fixed-ish"),
        ],
    )
    def test_a_field_of_the_wrong_type_is_not_read(
        self, name: str, value: object
    ) -> None:
        with pytest.raises(StateFormatError):
            decode_state({**self.encoded(), name: value})

    @PROPERTY_SETTINGS
    @given(json_values, st.sampled_from(sorted(FIELD_CODECS)))
    def test_decoding_any_json_gives_a_state_or_a_format_error(
        self, value: object, name: str
    ) -> None:
        for candidate in (value, {**self.encoded(), name: value}):
            try:
                decoded = decode_state(candidate)
            except StateFormatError:
                continue
            assert isinstance(decoded, OrderState)
