"""Every table of every schema, gathered for Alembic and the test fixtures.

Migrations are the only tool that owns the whole database; it may see every service's
tables (services themselves never import one another).
"""

from __future__ import annotations

import importlib
from typing import Final

from sqlalchemy import MetaData

from shared.db.base import metadata

_TABLE_MODULES: Final = (
    "shared.db.event_store",
    "shared.db.refusals",
    "shared.db.order_summary",
    "shared.db.reconcile",
    "services.intake.store",
    "services.dispatch.store",
    "services.ledger.store",
    "services.metrics.store",
    "services.metrics.score_feed",
)

for _module in _TABLE_MODULES:
    importlib.import_module(_module)

target_metadata: Final[MetaData] = metadata
