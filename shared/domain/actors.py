"""Who acts on an order: the role and id carried in every event's `actor` extension.

Must not import any I/O framework.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Self


class Role(StrEnum):
    CUSTOMER = "customer"
    TECHNICIAN = "technician"
    DISPATCHER = "dispatcher"
    AUDITOR = "auditor"
    ADMIN = "admin"
    SERVICE = "service"
    SYSTEM = "system"


# The roles a token may carry; `system` is only for events a service emits on its
# own (`system:dispatch`), so no caller can pass for one.
PRODUCT_ROLES: Final = frozenset(Role) - {Role.SYSTEM}

# Ids in events (`customer_id`, `technician_id`, the actor's id) are at most this long.
MAX_ID_LENGTH: Final = 200
# The longest `role:id` an event's `actor` extension carries.
MAX_ACTOR_LENGTH: Final = max(len(role) for role in Role) + 1 + MAX_ID_LENGTH
# Token subjects become those ids, so they must fit them; a narrow charset keeps them
# safe in URLs, logs, CSV and the `role:id` form (api.md v2).
MAX_SUBJECT_LENGTH: Final = 128
SUBJECT_CHARSET: Final = "A-Za-z0-9._:@-"
SUBJECT_PATTERN: Final = re.compile(rf"[{SUBJECT_CHARSET}]{{1,{MAX_SUBJECT_LENGTH}}}")


def check_subject(subject: str) -> str:
    """The subject if it is a valid token subject; raises ValueError otherwise."""
    # fullmatch, not match with `$`: `$` would also accept a trailing newline.
    if not SUBJECT_PATTERN.fullmatch(subject):
        raise ValueError(
            f"a subject is 1-{MAX_SUBJECT_LENGTH} characters of [{SUBJECT_CHARSET}]"
        )
    return subject


@dataclass(frozen=True, slots=True)
class Actor:
    """An authenticated caller, or a service acting on its own (`system:<service>`)."""

    role: Role
    id: str

    def __str__(self) -> str:
        return f"{self.role}:{self.id}"

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse the `role:id` form used in the CloudEvents `actor` extension."""
        role, _, actor_id = text.partition(":")
        if not actor_id:
            raise ValueError(f"actor must look like role:id, got {text!r}")
        return cls(Role(role), actor_id)
