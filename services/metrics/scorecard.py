"""A technician's scorecard (api.md v2): the figures of /v1/technicians/scores for
one technician, their ETA accuracy and counts, and the orders behind each figure.

Nothing is defined twice: the scores come from `scores.technician_numbers` and the
scoring domain, the ETA and counts from the indicator catalog (sliced by the
technician), and the orders behind a figure are the rows its indicator counts
(`catalog.conditions`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import ColumnElement, Table, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.metrics.catalog import Indicator, SliceFilter, conditions
from services.metrics.policy import IndicatorPolicy
from services.metrics.queries import compute_indicators, provenance
from services.metrics.schemas import (
    Distribution,
    EtaAccuracy,
    OrderIds,
    Rate,
    Scorecard,
    ScorecardCounts,
    ScorecardWindow,
)
from services.metrics.scores import technician_numbers

ORDER_IDS_MAX: Final = 200
# Each figure and an indicator that counts exactly its orders; figures resting on
# the same orders name the same one, read once (the attitude, satisfaction and
# fuzzy figures: the technician's ratings; quality and completed: their first final
# completions; response and accepted, efficiency and arrived likewise).
FIGURES: Final = {
    "quality": "first_time_fix_rate",
    "attitude": "csat",
    "response": "sla_accept_rate",
    "efficiency": "sla_arrival_rate",
    "satisfaction": "csat",
    "fuzzy": "csat",
    "eta": "eta_kept_rate",
    "accepted": "sla_accept_rate",
    "arrived": "sla_arrival_rate",
    "completed": "first_time_fix_rate",
    "declined": "assignments_declined",
    "expired": "assignments_expired",
}


def window_length(window: ScorecardWindow) -> timedelta:
    """The days a window names ("7d", "30d", "90d")."""
    return timedelta(days=int(window.value.removesuffix("d")))


async def _listed(
    conn: AsyncConnection,
    table: Table,
    at: Any,
    matching: list[ColumnElement[bool]],
) -> OrderIds:
    """The order ids of `table`'s rows `matching`, newest `at` first."""
    rows = await conn.execute(
        select(table.c.order_id)
        .where(*matching)
        .order_by(at.desc(), table.c.order_id)
        .limit(ORDER_IDS_MAX + 1)
    )
    found = list(rows.scalars())
    return OrderIds(
        order_ids=found[:ORDER_IDS_MAX], truncated=len(found) > ORDER_IDS_MAX
    )


async def _order_ids(
    conn: AsyncConnection, indicator: Indicator, where: SliceFilter
) -> OrderIds:
    """The orders an indicator counts for a slice, newest measurement first."""
    table = indicator.table
    return await _listed(
        conn, table, indicator.at_column(), conditions(indicator, where)
    )


async def get_scorecard(
    conn: AsyncConnection,
    technician_id: str,
    window: ScorecardWindow,
    *,
    now: datetime,
    policy: IndicatorPolicy,
) -> Scorecard:
    """The technician's scorecard over the window ending now, one snapshot."""
    start, end = now - window_length(window), now
    mine = SliceFilter(start=start, end=end, technician_id=technician_id)
    catalog = policy.catalog
    async with conn.begin():
        await conn.exec_driver_sql(
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"
        )
        as_of = await provenance(conn, policy_version=policy.version)
        # Ranked among everyone, as the listing of scores ranks them.
        numbers = await technician_numbers(
            conn, SliceFilter(start=start, end=end), policy
        )
        values = await compute_indicators(conn, mine, catalog, sla=policy.sla)
        behind = {
            name: await _order_ids(conn, catalog[name], mine)
            for name in dict.fromkeys(FIGURES.values())
        }
    listing = numbers.listing(policy.scoring, also=(technician_id,))
    score = next(item for item in listing if item.technician_id == technician_id)
    return Scorecard(
        technician_id=technician_id,
        window=window,
        start=start,
        end=end,
        as_of=as_of,
        score=score,
        eta=EtaAccuracy(
            eta_kept_rate=Rate.model_validate(values["eta_kept_rate"]),
            eta_error_s=Distribution.model_validate(values["eta_error_s"]),
        ),
        counts=ScorecardCounts(
            orders_accepted=values["response_time_s"]["count"],
            orders_arrived=values["arrival_time_s"]["count"],
            orders_completed=values["orders_completed"]["value"],
            ratings=values["ratings_count"]["value"],
            assignments_declined=values["assignments_declined"]["value"],
            assignments_expired=values["assignments_expired"]["value"],
        ),
        orders={figure: behind[name] for figure, name in FIGURES.items()},
    )
