"""Migration 0019 (SLA calendars): facts stored before it get the deadlines the SQL
computed, created_at + the recorded target, so the numbers and the rollups stay."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.test_migrations import (  # noqa: F401  # fixtures
    db,
    downgrade,
    empty_database,
    upgrade,
)

pytestmark = pytest.mark.integration


async def test_stored_facts_get_created_at_plus_the_recorded_targets(
    empty_database: str,  # noqa: F811  # the fixture
    db: AsyncEngine,  # noqa: F811  # the fixture
) -> None:
    await upgrade(empty_database, "0018")
    async with db.begin() as conn:
        recorded = json.loads(
            await conn.scalar(text("SELECT sla FROM metrics.rollup_policy"))
        )
        recorded["accept"]["normal"] = 245.5  # recorded by a rebuild under 245.5
        await conn.execute(
            text("UPDATE metrics.rollup_policy SET sla = :sla"),
            {"sla": json.dumps(recorded)},
        )
        for urgency in ("normal", "emergency", "unknown"):
            await conn.execute(
                text(
                    "INSERT INTO metrics.order_fact (order_id, last_version, region, "
                    "category, urgency, created_at, reopened, complaint_filed, open) "
                    "VALUES (gen_random_uuid(), 1, 'r', 'c', :urgency, "
                    "'2026-10-01T10:00:00+00', false, false, true)"
                ),
                {"urgency": urgency},
            )
        complete = await conn.scalar(text("SELECT complete FROM metrics.rollup_policy"))

    await upgrade(empty_database)

    async with db.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT urgency, accept_due_at - created_at, "
                    "arrive_due_at - created_at FROM metrics.order_fact"
                )
            )
        ).all()
        still = await conn.scalar(text("SELECT complete FROM metrics.rollup_policy"))
    found = {
        urgency: (
            None if accept is None else accept.total_seconds() / 60,
            None if arrive is None else arrive.total_seconds() / 60,
        )
        for urgency, accept, arrive in rows
    }
    assert found == {
        "normal": (245.5, 2880.0),
        "emergency": (15.0, 120.0),
        "unknown": (None, None),  # no target: never due, as before
    }
    assert still == complete  # the same numbers: the rollups are as good as before

    await downgrade(empty_database, "0018")
    async with db.connect() as conn:
        columns = await conn.scalar(
            text(
                "SELECT count(*) FROM information_schema.columns WHERE table_schema "
                "= 'metrics' AND table_name = 'order_fact' AND column_name LIKE "
                "'%_due_at'"
            )
        )
    assert columns == 0
