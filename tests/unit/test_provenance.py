"""The verdict on a consumed record: the stored event, or why it is not."""

from __future__ import annotations

from typing import Final
from uuid import uuid4

import pytest

from shared.events.provenance import (
    ALTERED,
    FORGED,
    OTHER_ORDER,
    OTHER_VERSION,
    StoredMatch,
    rejection,
)

ORDER: Final = uuid4()
OTHER: Final = uuid4()


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        (StoredMatch(ORDER, 4, same_envelope=True), None),
        (None, FORGED),
        (StoredMatch(OTHER, 4, same_envelope=True), OTHER_ORDER),
        (StoredMatch(ORDER, 3, same_envelope=True), OTHER_VERSION),
        (StoredMatch(ORDER, 4, same_envelope=False), ALTERED),
        # The first difference names the reason: the order before the version.
        (StoredMatch(OTHER, 3, same_envelope=False), OTHER_ORDER),
    ],
)
def test_a_record_is_genuine_only_as_the_store_holds_it(
    stored: StoredMatch | None, expected: str | None
) -> None:
    assert rejection(order_id=ORDER, version=4, stored=stored) == expected


def test_every_reason_says_forged_or_altered_first() -> None:
    reasons = [FORGED, OTHER_ORDER, OTHER_VERSION, ALTERED]
    assert [r.split(":")[0] for r in reasons] == ["forged", *["altered"] * 3]
