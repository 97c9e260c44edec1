"""An alert's case (plan-do-check-act): acknowledged, owned, acted on and closed.

The case is a fold over its step events, never a mutable record: `evolve` applies a
stored step and never refuses (replay cannot fail); `decide` checks a proposed step
against the case and raises `TransitionNotAllowed` (409) or `InvalidRequest` (422).
An action's measured effect compares the alert's indicator over the rule's window
length before the action opened with the same length after it closed (indicators.md
v2, "Alert cases"), with the tests of `quality_stats`.

Pure domain: imports only the stdlib and pydantic (no FastAPI, SQLAlchemy, Kafka).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, ClassVar, Final, TypeAlias
from uuid import UUID

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from shared.domain.actors import MAX_SUBJECT_LENGTH, SUBJECT_CHARSET
from shared.domain.errors import (
    DomainError,
    FieldError,
    InvalidRequest,
    TransitionNotAllowed,
)
from shared.domain.quality_stats import mann_whitney_u, two_proportion_z_test

MAX_TEXT_LENGTH: Final = 2000
# A due date is a plan, not a wish: at most this far ahead of the step's time.
MAX_DUE_AHEAD: Final = timedelta(days=366)
# A case is a handful of steps; these bound what one GET folds and measures (each
# closed action's effect is two queries) against a caller looping on POST.
MAX_CASE_STEPS: Final = 200
MAX_ACTIONS: Final = 20


class CaseFull(DomainError):
    """The case holds the most steps, or the most actions, a case may hold."""

    code = "alert_case_full"


def _storable_text(value: str) -> str:
    # PostgreSQL text holds neither U+0000 nor lone surrogates (not UTF-8): refused
    # here (422), not by the driver inside the transaction (a 500).
    if "\x00" in value:
        raise ValueError("must not contain the NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    if not value.strip():
        raise ValueError("must not be blank")
    return value


# Free text of a case: an action, its result, a resolution.
CaseText: TypeAlias = Annotated[
    str,
    Field(min_length=1, max_length=MAX_TEXT_LENGTH),
    AfterValidator(_storable_text),
]
# Who owns a case or an action: a token subject (api.md v2).
OwnerId: TypeAlias = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_SUBJECT_LENGTH,
        pattern=rf"^[{SUBJECT_CHARSET}]+$",
    ),
]

_FROZEN: Final = ConfigDict(frozen=True, extra="forbid")


class Acknowledged(BaseModel):
    """Someone has seen the alert and takes it on (the step's actor)."""

    model_config = _FROZEN
    TYPE: ClassVar[str] = "alert_acknowledged"


class Owned(BaseModel):
    """The case has an owner (again, when it changes hands)."""

    model_config = _FROZEN
    TYPE: ClassVar[str] = "alert_owned"
    owner: OwnerId


class ActionOpened(BaseModel):
    """A corrective action: what, by when, by whom."""

    model_config = _FROZEN
    TYPE: ClassVar[str] = "alert_action_opened"
    action_id: UUID
    text: CaseText
    due: AwareDatetime
    owner: OwnerId


class ActionClosed(BaseModel):
    """An action is done; its effect is measured from here."""

    model_config = _FROZEN
    TYPE: ClassVar[str] = "alert_action_closed"
    action_id: UUID
    result: CaseText


class Closed(BaseModel):
    """The case ends with a resolution."""

    model_config = _FROZEN
    TYPE: ClassVar[str] = "alert_closed"
    resolution: CaseText


CaseStep: TypeAlias = Acknowledged | Owned | ActionOpened | ActionClosed | Closed
STEP_TYPES: Final[Mapping[str, type[CaseStep]]] = {
    step.TYPE: step
    for step in (Acknowledged, Owned, ActionOpened, ActionClosed, Closed)
}


class CaseState(StrEnum):
    UNACKNOWLEDGED = "unacknowledged"
    ACKNOWLEDGED = "acknowledged"
    CLOSED = "closed"


_U, _A, _C = CaseState.UNACKNOWLEDGED, CaseState.ACKNOWLEDGED, CaseState.CLOSED
# Which step is allowed in which state, and where it leads. An owner may be named
# before anyone acknowledges; actions and the close need an acknowledged case (the
# acknowledgement is what alert_ack_time_s measures); nothing follows a close.
TRANSITIONS: Final[Mapping[tuple[CaseState, str], CaseState]] = {
    (_U, Acknowledged.TYPE): _A,
    (_U, Owned.TYPE): _U,
    (_A, Owned.TYPE): _A,
    (_A, ActionOpened.TYPE): _A,
    (_A, ActionClosed.TYPE): _A,
    (_A, Closed.TYPE): _C,
}


@dataclass(frozen=True, slots=True)
class CaseEvent:
    """One stored step: the `version`-th of its alert's case."""

    event_id: UUID
    alert_id: UUID
    version: int
    actor: str
    at: datetime
    step: CaseStep


@dataclass(frozen=True, slots=True)
class Action:
    action_id: UUID
    text: str
    due: datetime
    owner: str
    opened_at: datetime
    opened_by: str
    closed_at: datetime | None = None
    closed_by: str | None = None
    result: str | None = None


@dataclass(frozen=True, slots=True)
class AlertCase:
    """The case of one alert as its events leave it (`version` 0: no step yet)."""

    alert_id: UUID
    raised_at: datetime
    state: CaseState = CaseState.UNACKNOWLEDGED
    version: int = 0
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    owner: str | None = None
    actions: tuple[Action, ...] = ()
    closed_at: datetime | None = None
    closed_by: str | None = None
    resolution: str | None = None

    @property
    def ack_time_s(self) -> float | None:
        """alert_ack_time_s: raised -> acknowledged."""
        return _seconds(self.raised_at, self.acknowledged_at)

    @property
    def close_time_s(self) -> float | None:
        """alert_close_time_s: raised -> closed."""
        return _seconds(self.raised_at, self.closed_at)

    @property
    def open_actions(self) -> int:
        return sum(action.closed_at is None for action in self.actions)

    def find_action(self, action_id: UUID) -> Action | None:
        return next((a for a in self.actions if a.action_id == action_id), None)


def _seconds(start: datetime, end: datetime | None) -> float | None:
    return None if end is None else (end - start).total_seconds()


def _closing(action: Action, event: CaseEvent, result: str) -> Action:
    return replace(action, closed_at=event.at, closed_by=event.actor, result=result)


def evolve(case: AlertCase, event: CaseEvent) -> AlertCase:
    """The case after one stored step (never refuses: replay cannot fail)."""
    state = TRANSITIONS.get((case.state, event.step.TYPE), case.state)
    case = replace(case, state=state, version=event.version)
    match event.step:
        case Acknowledged():
            return replace(case, acknowledged_at=event.at, acknowledged_by=event.actor)
        case Owned(owner=owner):
            return replace(case, owner=owner)
        case ActionOpened(action_id=action_id, text=text, due=due, owner=owner):
            opened = Action(action_id, text, due, owner, event.at, event.actor)
            return replace(case, actions=(*case.actions, opened))
        case ActionClosed(action_id=action_id, result=result):
            actions = tuple(
                _closing(a, event, result) if a.action_id == action_id else a
                for a in case.actions
            )
            return replace(case, actions=actions)
        case Closed(resolution=resolution):
            return replace(
                case,
                closed_at=event.at,
                closed_by=event.actor,
                resolution=resolution,
            )


def fold(alert_id: UUID, raised_at: datetime, events: Iterable[CaseEvent]) -> AlertCase:
    """The case of an alert raised at `raised_at` after its events, in order."""
    return functools.reduce(evolve, events, AlertCase(alert_id, raised_at))


def _action_is_open(case: AlertCase, action_id: UUID) -> bool:
    action = case.find_action(action_id)
    return action is not None and action.closed_at is None


def decide(case: AlertCase, step: CaseStep, *, now: datetime) -> None:
    """Refuse `step` at `now` unless the case allows it.

    Raises:
        TransitionNotAllowed: the step does not fit the case's state (acknowledged
            twice, anything after the close, closing an unknown or closed action,
            closing the case while an action is open).
        InvalidRequest: an action's due date before `now` or beyond MAX_DUE_AHEAD.
        CaseFull: MAX_CASE_STEPS steps, or MAX_ACTIONS actions, are there already.
    """
    if (case.state, step.TYPE) not in TRANSITIONS:
        raise TransitionNotAllowed(
            f"{step.TYPE} is not allowed on a {case.state} alert case"
        )
    # The close stays possible on a full case: a case can always be ended.
    if case.version >= MAX_CASE_STEPS and not isinstance(step, Closed | ActionClosed):
        raise CaseFull(f"the case holds {MAX_CASE_STEPS} steps: close it")
    match step:
        case ActionOpened() if len(case.actions) >= MAX_ACTIONS:
            raise CaseFull(f"the case holds {MAX_ACTIONS} actions already")
        case ActionOpened(due=due) if not now <= due <= now + MAX_DUE_AHEAD:
            raise InvalidRequest(
                "due is not within the next year",
                errors=(FieldError("due", f"between now and {MAX_DUE_AHEAD} ahead"),),
            )
        case ActionOpened(action_id=action_id) if case.find_action(action_id):
            raise TransitionNotAllowed(f"action {action_id} exists already")
        case ActionClosed(action_id=action_id) if not _action_is_open(case, action_id):
            raise TransitionNotAllowed(f"action {action_id} is not an open action")
        case Closed() if case.open_actions:
            raise TransitionNotAllowed(
                f"{case.open_actions} action(s) still open: close them first"
            )
        case _:
            return


# --- the measured effect of an action ----------------------------------------------


class EffectTest(StrEnum):
    TWO_PROPORTION_Z = "two_proportion_z"
    MANN_WHITNEY_U = "mann_whitney_u"


@dataclass(frozen=True, slots=True)
class EffectWindows:
    """[before_start, opened_at) against [closed_at, after_end)."""

    before_start: datetime
    before_end: datetime
    after_start: datetime
    after_end: datetime


def effect_windows(action: Action, length: timedelta) -> EffectWindows | None:
    """The windows an action's effect compares (None while it is open)."""
    if action.closed_at is None:
        return None
    return EffectWindows(
        before_start=action.opened_at - length,
        before_end=action.opened_at,
        after_start=action.closed_at,
        after_end=action.closed_at + length,
    )


@dataclass(frozen=True, slots=True)
class Effect:
    """An action's effect: the indicator before and after, and the test's verdict.

    For a rate, `before`/`after` are the two rates (z-test); for durations the two
    medians (Mann-Whitney U compares locations). `difference` = after - before.
    `p_value` is None when no test is possible (`reason` says why).
    """

    test: EffectTest
    statistic: str  # "rate" or "median"
    before: float | None
    after: float | None
    difference: float | None
    p_value: float | None
    samples_before: int
    samples_after: int
    reason: str | None


def rate_effect(before: tuple[int, int], after: tuple[int, int]) -> Effect:
    """Two rates given as (successes, n), by the two-sided two-proportion z-test."""
    tested = two_proportion_z_test(*before, *after)
    return Effect(
        EffectTest.TWO_PROPORTION_Z,
        "rate",
        tested.rate_a,
        tested.rate_b,
        tested.difference,
        tested.p_value,
        before[1],
        after[1],
        tested.reason,
    )


def duration_effect(before: Sequence[float], after: Sequence[float]) -> Effect:
    """Two samples of values, by the two-sided Mann-Whitney U test."""
    tested = mann_whitney_u(before, after)
    return Effect(
        EffectTest.MANN_WHITNEY_U,
        "median",
        tested.median_a,
        tested.median_b,
        tested.median_difference,
        tested.p_value,
        len(before),
        len(after),
        tested.reason,
    )


def parse_scope(scope: str) -> tuple[str, str]:
    """An alert scope `dimension:value` (the value may itself hold ':')."""
    dimension, _, value = scope.partition(":")
    return dimension, value
