"""The technicians' 30-day scores, published for dispatch's assignment engine.

Dispatch ranks technicians by their composite without calling metrics on its
assignment path: metrics publishes `servicetrail.quality.technician_scored` on the
quality topic, through its outbox, whenever a technician's composite or sample count
changed since the last publication (`technician_score_published` remembers it, in
the same transaction as the outbox row). A technician who drops out of the window
is published once more with no composite and no samples.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Final
from uuid import uuid4

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Table,
    Text,
    select,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from services.metrics.policy import IndicatorPolicy
from services.metrics.queries import resolve_slice
from services.metrics.schemas import Window
from services.metrics.scores import get_scores
from services.metrics.store import metrics_outbox
from shared.db.base import METRICS_SCHEMA, metadata
from shared.events.envelope import encode
from shared.events.quality import (
    SCORE_WINDOW,
    TechnicianScored,
    technician_scored_cloudevent,
)
from shared.events.topics import QUALITY_ALERTS

logger = logging.getLogger(__name__)

technician_score_published: Final = Table(
    "technician_score_published",
    metadata,
    Column("technician_id", Text, primary_key=True),
    Column("composite", Float, nullable=True),
    Column("samples", BigInteger, nullable=False),
    Column("published_at", DateTime(timezone=True), nullable=False),
    schema=METRICS_SCHEMA,
)

# Two decimals: a re-aggregation's rounding noise is not a change worth publishing.
COMPOSITE_DECIMALS: Final = 2
# Identifiers dispatch accepts (shared.domain.events.Identifier); longer ones are
# not published at all rather than refused downstream.
MAX_TECHNICIAN_ID: Final = 200

Published = tuple[float | None, int]


async def publish_changed_scores(
    engine: AsyncEngine, policy: IndicatorPolicy, now: datetime
) -> int:
    """Publish the 30-day score of every technician whose score changed; how many."""
    async with engine.connect() as conn:
        scores = await get_scores(
            conn,
            resolve_slice(Window.MONTH, start=None, end=None, now=now),
            policy=policy,
        )
    current: dict[str, Published] = {
        item.technician_id: (
            None
            if item.composite is None
            else round(item.composite, COMPOSITE_DECIMALS),
            item.final_completions,
        )
        for item in scores.items
        if len(item.technician_id) <= MAX_TECHNICIAN_ID
    }
    async with engine.begin() as conn:
        last: dict[str, Published] = {
            row.technician_id: (row.composite, row.samples)
            for row in await conn.execute(
                select(technician_score_published).with_for_update()
            )
        }
        gone: dict[str, Published] = dict.fromkeys(set(last) - set(current), (None, 0))
        changed = {
            technician: value
            for technician, value in {**current, **gone}.items()
            if last.get(technician) != value
        }
        for technician, (composite, samples) in sorted(changed.items()):
            scored = TechnicianScored(
                technician_id=technician,
                composite=composite,
                samples=samples,
                window=SCORE_WINDOW,
                policy_version=policy.version,
                as_of=now,
            )
            event = technician_scored_cloudevent(scored, event_id=uuid4(), time=now)
            await conn.execute(
                insert(metrics_outbox).values(
                    topic=QUALITY_ALERTS, key=str(event["subject"]), value=encode(event)
                )
            )
            statement = insert(technician_score_published).values(
                technician_id=technician,
                composite=composite,
                samples=samples,
                published_at=now,
            )
            await conn.execute(
                statement.on_conflict_do_update(
                    index_elements=["technician_id"],
                    set_={
                        "composite": statement.excluded.composite,
                        "samples": statement.excluded.samples,
                        "published_at": statement.excluded.published_at,
                    },
                )
            )
    if changed:
        logger.info("published %d changed technician scores", len(changed))
    return len(changed)
