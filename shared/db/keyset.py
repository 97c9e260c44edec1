"""Opaque keyset cursors for listings ordered newest first by `(time, uuid)`.

A cursor is the base64 of the last row's key: the next page starts strictly after
it, so pages stay stable while rows are added (no OFFSET drift).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, TypeVar
from uuid import UUID

from sqlalchemy import ColumnElement, Select, and_, or_

from shared.domain.errors import DomainError

MAX_PAGE: Final = 1000
RowT = TypeVar("RowT")


class InvalidCursor(DomainError):
    code = "invalid_cursor"


@dataclass(frozen=True, slots=True)
class Key:
    """The position of a row in a newest-first listing."""

    time: datetime | None
    id: UUID

    def encode(self) -> str:
        """The opaque cursor of this position."""
        raw = json.dumps(
            [None if self.time is None else self.time.isoformat(), str(self.id)]
        )
        return base64.urlsafe_b64encode(raw.encode()).decode()

    @classmethod
    def decode(cls, cursor: str) -> Key:
        """Raises InvalidCursor for anything this module did not encode."""
        try:
            time, id_ = json.loads(base64.urlsafe_b64decode(cursor.encode()))
            return cls(datetime.fromisoformat(time), UUID(id_))
        except (ValueError, TypeError) as err:
            raise InvalidCursor("the cursor is not one this service issued") from err


def newest_first(
    query: Select[Any],
    time: ColumnElement[Any],
    id_: ColumnElement[Any],
    *,
    cursor: str | None,
    limit: int,
) -> Select[Any]:
    """`query` ordered newest first, after `cursor`, one row more than a page."""
    query = query.order_by(time.desc(), id_.desc())
    if cursor is not None:
        after = Key.decode(cursor)
        query = query.where(
            or_(time < after.time, and_(time == after.time, id_ < after.id))
        )
    return query.limit(page_size(limit) + 1)


def page_size(limit: int) -> int:
    """The rows a page holds: `limit`, at most MAX_PAGE."""
    return min(limit, MAX_PAGE)


def cut_page(
    rows: Sequence[RowT], *, limit: int, key: Callable[[RowT], Key]
) -> tuple[Sequence[RowT], str | None]:
    """The page of rows fetched by `newest_first`, and the next page's cursor."""
    size = page_size(limit)
    page = rows[:size]
    return page, key(page[-1]).encode() if len(rows) > size else None
