"""The one SQLAlchemy MetaData, with a naming convention so Alembic diffs stay stable."""

from __future__ import annotations

from typing import Final

from sqlalchemy import MetaData

NAMING_CONVENTION: Final = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata: Final = MetaData(naming_convention=NAMING_CONVENTION)

# One PostgreSQL schema per owner: the shared event store, then each service's own.
EVENT_STORE_SCHEMA: Final = "event_store"
INTAKE_SCHEMA: Final = "intake"
DISPATCH_SCHEMA: Final = "dispatch"
LEDGER_SCHEMA: Final = "ledger"
METRICS_SCHEMA: Final = "metrics"
ALL_SCHEMAS: Final = (
    EVENT_STORE_SCHEMA,
    INTAKE_SCHEMA,
    DISPATCH_SCHEMA,
    LEDGER_SCHEMA,
    METRICS_SCHEMA,
)
