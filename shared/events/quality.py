"""`servicetrail.quality.technician_scored`: a technician's 30-day composite, as
metrics publishes it on the quality topic and dispatch reads it.

One contract for both sides: metrics builds the event from `TechnicianScored`, and
dispatch accepts a record only if it validates against it, strictly and bounded
(a record anyone could produce must not steer the assignment engine).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.domain.events import Identifier
from shared.events.envelope import QUALITY_TYPE_PREFIX, quality_alert_cloudevent

TECHNICIAN_SCORED: Final = "technician_scored"
TECHNICIAN_SCORED_TYPE: Final = QUALITY_TYPE_PREFIX + TECHNICIAN_SCORED
SCORE_WINDOW: Final = "30d"
# JSON numbers consumers can read exactly (RFC 8785 refuses more anyway).
MAX_SAMPLES: Final = 2**53 - 1

_STRICT: Final = ConfigDict(
    frozen=True, extra="forbid", strict=True, allow_inf_nan=False
)


class TechnicianScored(BaseModel):
    """The data of one technician's score event."""

    model_config = _STRICT

    technician_id: Identifier
    # 0..100; None while the composite cannot be computed (no data).
    composite: Annotated[float, Field(ge=0, le=100)] | None
    # Final completions in the window.
    samples: Annotated[int, Field(ge=0, le=MAX_SAMPLES)]
    window: Literal["30d"]
    policy_version: Annotated[str, Field(min_length=1, max_length=100)]
    as_of: AwareDatetime


class TechnicianScoredEvent(BaseModel):
    """The whole CloudEvent, as dispatch validates it (the literals are what
    `technician_scored_cloudevent` writes; the unit tests hold them in step)."""

    model_config = _STRICT

    specversion: Literal["1.0"]
    id: UUID
    source: Literal["/servicetrail/metrics"]
    type: Literal["servicetrail.quality.technician_scored"]
    subject: Annotated[str, Field(min_length=1, max_length=200)]
    time: AwareDatetime
    datacontenttype: Literal["application/json"]
    dataschema: Literal["urn:servicetrail:quality.technician_scored:1"]
    data: TechnicianScored


def technician_scored_cloudevent(
    score: TechnicianScored, *, event_id: UUID, time: datetime
) -> dict[str, object]:
    """The structured-mode JSON object metrics publishes for one score."""
    return quality_alert_cloudevent(
        TECHNICIAN_SCORED,
        subject=f"technician:{score.technician_id}",
        time=time,
        data=score.model_dump(mode="json"),
        event_id=event_id,
    )


def parse_technician_scored(value: bytes) -> TechnicianScoredEvent:
    """The validated event; pydantic's ValidationError when it is not one."""
    return TechnicianScoredEvent.model_validate_json(value)
