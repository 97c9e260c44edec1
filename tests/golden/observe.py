"""What the golden stream must replay to: order states, indicators, technician scores.

Read the way an operator reads them (the ledger's replay query, the metrics API's
queries), at the fixed instant `AT`, from a database whose ledger holds the stream
and whose indicators were rebuilt from it. `make_golden.py` saved this for today's
code as `expected.json`; the test asks every later release for the same.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Final
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.ledger.queries import state_as_of
from services.metrics.policy import IndicatorPolicy
from services.metrics.queries import get_indicators, resolve_slice
from services.metrics.schemas import Window
from services.metrics.scores import get_scores

# The history runs from 2026-10-05 for 30 days; everything is read a week after.
START: Final = datetime(2026, 10, 5, tzinfo=UTC)
AT: Final = datetime(2026, 11, 10, tzinfo=UTC)
# Floats are compared to 9 decimal places: a later release may sum in another order.
PLACES: Final = 9
# What an order's state must keep meaning; other fields may come and go.
STATE_FIELDS: Final = (
    "status",
    "version",
    "customer_id",
    "technician_id",
    "region",
    "urgency",
    "rated",
)


def rounded(value: Any) -> Any:
    """`value` with every float rounded to PLACES (nested dicts and lists too)."""
    if isinstance(value, float):
        return round(value, PLACES)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


async def order_states(conn: AsyncConnection) -> dict[str, dict[str, Any]]:
    """Each order's state folded from the ledger (`servicetrail replay`'s query)."""
    order_ids = (
        await conn.execute(
            text("SELECT DISTINCT order_id FROM ledger.ledger_entry ORDER BY order_id")
        )
    ).scalars()
    states: dict[str, dict[str, Any]] = {}
    for order_id in list(order_ids):
        folded = await state_as_of(conn, UUID(str(order_id)), AT)
        assert folded.state is not None
        states[str(order_id)] = {name: folded.state[name] for name in STATE_FIELDS}
    return states


async def observe(engine: AsyncEngine) -> dict[str, Any]:
    """States, their digest, every indicator (window=all) and the technician scores."""
    async with engine.connect() as conn:
        states = await order_states(conn)
    policy = IndicatorPolicy()
    slice_ = resolve_slice(Window.ALL, start=None, end=None, now=AT)
    async with engine.connect() as conn:
        indicators = await get_indicators(conn, slice_, policy=policy, now=AT)
    async with engine.connect() as conn:
        scores = await get_scores(conn, slice_, policy=policy, now=AT)
    digest = hashlib.sha256(
        json.dumps(states, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    observed: dict[str, Any] = rounded(
        {
            "at": AT.isoformat(),
            "orders": len(states),
            "states_digest": digest,
            "statuses": _count(s["status"] for s in states.values()),
            "states": states,
            "indicators": indicators.indicators.model_dump(mode="json"),
            "technician_scores": [
                item.model_dump(mode="json") for item in scores.items
            ],
        }
    )
    return observed


def _count(values: Any) -> dict[str, int]:
    counted: dict[str, int] = {}
    for value in values:
        counted[value] = counted.get(value, 0) + 1
    return dict(sorted(counted.items()))
