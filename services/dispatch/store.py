"""Dispatch tables: its consumer tracking (the technician registry joins later)."""

from __future__ import annotations

from typing import Final

from shared.db.base import DISPATCH_SCHEMA
from shared.db.tracking import tracking_tables

tracking: Final = tracking_tables(DISPATCH_SCHEMA)
