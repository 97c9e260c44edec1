"""Instants as requests carry them: RFC 3339 with an offset, held in UTC.

Every request-side datetime (event `time`, query bounds such as `from`, `to`,
`as_of`) is an `Instant`, so no date arithmetic below the edge can raise: a value
whose UTC form lies outside `datetime`'s years 1-9999 (year 1 at +14:00,
9999-12-31 at -23:59) is a validation error here, never an OverflowError later.

Pure domain: imports only the stdlib and pydantic.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, TypeAlias

from pydantic import AfterValidator, AwareDatetime


def in_utc(value: datetime) -> datetime:
    """`value` in UTC; ValueError (a validation error) when UTC cannot hold it."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(
            "the instant is outside the years 1-9999 once converted to UTC"
        ) from None


Instant: TypeAlias = Annotated[AwareDatetime, AfterValidator(in_utc)]
