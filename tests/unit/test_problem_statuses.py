"""Every domain refusal has an HTTP status of its own (never the 422 fallback by accident)."""

from __future__ import annotations

import shared.db.keyset  # noqa: F401 - defines InvalidCursor
from shared.domain.errors import DomainError
from shared.http.problems import STATUS_BY_CODE


def all_error_codes() -> set[str]:
    pending, codes = [DomainError], set()
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls is not DomainError:
            codes.add(cls.code)
    return codes


def test_every_domain_error_code_maps_to_a_4xx_status() -> None:
    missing = all_error_codes() - set(STATUS_BY_CODE)
    assert not missing, f"codes without a status: {sorted(missing)}"
    assert all(400 <= status < 500 for status in STATUS_BY_CODE.values())
