"""The order lifecycle: every edge of events.md, the write rules, and the fold."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from typing import TypeAlias
from uuid import uuid4

import pytest

from shared.domain import errors
from shared.domain.actors import Actor, Role
from shared.domain.events import PAYLOAD_TYPES, AssignmentMethod, OrderPayload, Outcome
from shared.domain.lifecycle import (
    AUTO_DISPATCH,
    BEFORE_COMPLETED,
    TRANSITIONS,
    OrderStatus,
    ProposedEvent,
    decide,
    evolve,
    fold,
    next_status,
)
from shared.domain.rules import Policy
from tests.builders import (
    STEP,
    T0,
    Story,
    happy_path_history,
    make_accepted,
    make_admin,
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
    make_technician,
    story_at,
)

S = OrderStatus
Move: TypeAlias = Callable[[Story], object]
Sample: TypeAlias = Callable[[Story], OrderPayload]


def _quote_id_or_new(story: Story) -> events_uuid:
    quote = story.current.current_quote
    return quote.event_id if quote else uuid4()


events_uuid: TypeAlias = "UUID"
