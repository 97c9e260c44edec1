"""Who acts on an order: the role and id carried in every event's `actor` extension.

Must not import any I/O framework.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Self


class Role(StrEnum):
    CUSTOMER = "customer"
    TECHNICIAN = "technician"
    DISPATCHER = "dispatcher"
    AUDITOR = "auditor"
    ADMIN = "admin"
    SERVICE = "service"
    SYSTEM = "system"


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
