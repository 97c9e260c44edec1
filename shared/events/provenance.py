"""Whether a consumed record is an event the store holds: the verdict, without I/O.

Anyone who can produce to the order topic could otherwise have consumers apply a
made-up or altered event. The event store is the truth; a record is genuine only
if the store holds an event with the record's id, for the same order, at the same
version and with the same envelope. Pure: imports only the stdlib (the import
contract in pyproject holds it to that).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from uuid import UUID

FORGED: Final = "forged: no such event in the store"
OTHER_ORDER: Final = "altered: the store holds this event id for another order"
OTHER_VERSION: Final = "altered: the store holds this event id at another orderversion"
ALTERED: Final = "altered: envelope differs from the store"


@dataclass(frozen=True, slots=True)
class StoredMatch:
    """What the event store holds under a record's event id."""

    order_id: UUID
    version: int
    # The record's value is the stored envelope (its canonical bytes, or for events
    # stored before digests were kept its JSON value): see
    # `shared.db.event_store.match_stored`.
    same_envelope: bool
    # The record's RFC 8785 bytes, when the check established them.
    canonical: bytes | None = None


def rejection(
    *, order_id: UUID, version: int, stored: StoredMatch | None
) -> str | None:
    """Why a record (its subject and orderversion) is not the stored event, or None."""
    if stored is None:
        return FORGED
    if stored.order_id != order_id:
        return OTHER_ORDER
    if stored.version != version:
        return OTHER_VERSION
    if not stored.same_envelope:
        return ALTERED
    return None
