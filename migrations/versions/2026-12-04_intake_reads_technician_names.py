"""Intake reads technicians' ids and names: the customer's timeline names them.

Only those two columns of dispatch's registry, read-only: intake still cannot see a
technician's skills, regions or certifications, nor write anything of dispatch's.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04 00:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here on purpose (a migration must not change when the code does).
INTAKE: Final = "servicetrail_intake"


def upgrade() -> None:
    op.execute(f"GRANT USAGE ON SCHEMA dispatch TO {INTAKE}")
    op.execute(f"GRANT SELECT (technician_id, name) ON dispatch.technician TO {INTAKE}")


def downgrade() -> None:
    op.execute(
        f"REVOKE SELECT (technician_id, name) ON dispatch.technician FROM {INTAKE}"
    )
    op.execute(f"REVOKE USAGE ON SCHEMA dispatch FROM {INTAKE}")
