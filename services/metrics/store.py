"""Metrics tables: one facts row per order, ratings, complaints, alerts, tracking.

Per-order working state lives here, not in RAM, so memory does not grow with the
number of orders. Indicators are SQL aggregates over these rows for any window and
slice: exact nearest-rank percentiles (`percentile_disc`), and a late correction
(a reopen) changes the past window's value by updating one row.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)

from shared.db.base import METRICS_SCHEMA, metadata
from shared.db.outbox import outbox_table
from shared.db.tracking import tracking_tables

# The fold's state per order (what `apply_event` continues from), kept apart from
# the indicator columns: every indicator query scans order_fact, and with the ~1 KB
# document inline that scan read 3.4 KB per order instead of ~0.3 KB. Stored as
# JSON text: nothing queries inside it, and JSONB's conversion cost every write.
order_state: Final = Table(
    "order_state",
    metadata,
    Column("order_id", Uuid, primary_key=True),
    Column("facts", Text, nullable=False),
    schema=METRICS_SCHEMA,
)

order_fact: Final = Table(
    "order_fact",
    metadata,
    Column("order_id", Uuid, primary_key=True),
    Column("last_version", Integer, nullable=False),
    Column("region", Text, nullable=False),
    Column("category", Text, nullable=False),
    Column("urgency", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("cancelled_at", DateTime(timezone=True)),
    Column("first_accepted_at", DateTime(timezone=True)),
    Column("response_time_s", Float),
    Column("accepted_technician_id", Text),
    Column("first_arrived_at", DateTime(timezone=True)),
    Column("arrival_time_s", Float),
    Column("arrived_technician_id", Text),
    Column("first_diagnosed_at", DateTime(timezone=True)),
    Column("diagnosis_time_s", Float),
    Column("first_final_at", DateTime(timezone=True)),
    Column("resolution_time_s", Float),
    Column("first_final_technician_id", Text),
    Column("first_time_fix", Boolean),
    Column("resolved", Boolean),
    Column("reopened", Boolean, nullable=False),
    Column("complaint_filed", Boolean, nullable=False),
    Column("approved_total", BigInteger),
    Column("price_deviation", Float),
    Column("overrun", Boolean),
    Column("requoted", Boolean),
    Column("quoted_before_work", Boolean),
    Column("free_warranty_completion", Boolean),
    Column("open", Boolean, nullable=False),
    # The `created` event's channel (NULL for facts stored before it was kept).
    Column("channel", Text),
    # Who held the order when, up to its first arrival, as JSON
    # [[technician_id, since, until or null], ...]: a censored SLA breach belongs to
    # the technician holding the order at its target's instant (catalog).
    Column("assignments", Text, nullable=False, server_default="[]"),
    # first_arrived_at - promised arrival (indicators.md v2, "ETA"; migration 0014).
    Column("eta_error_s", Float),
    # The accept and arrive clocks' deadlines under the recorded policy's business
    # calendars (`rollup_policy.sla`; migration 0019): the censored SLA rates and
    # the overdue count compare with them. Null: not due (no target, or an open
    # wait on the customer holds the clock).
    Column("accept_due_at", DateTime(timezone=True)),
    Column("arrive_due_at", DateTime(timezone=True)),
    Index("ix_order_fact_created_at", "created_at"),
    Index("ix_order_fact_accept_due_at", "accept_due_at"),
    Index("ix_order_fact_arrive_due_at", "arrive_due_at"),
    # orders_unaccepted_overdue reads the open orders nobody accepted yet.
    Index(
        "ix_order_fact_unaccepted",
        "created_at",
        postgresql_where=text("open AND first_accepted_at IS NULL"),
    ),
    Index("ix_order_fact_first_accepted_at", "first_accepted_at"),
    Index("ix_order_fact_first_arrived_at", "first_arrived_at"),
    Index("ix_order_fact_first_diagnosed_at", "first_diagnosed_at"),
    Index("ix_order_fact_first_final_at", "first_final_at"),
    # The exact stage of a rolled-up percentile reads one bucket's values.
    Index(
        "ix_order_fact_response_time_s",
        "response_time_s",
        postgresql_include=["first_accepted_at"],
    ),
    Index(
        "ix_order_fact_arrival_time_s",
        "arrival_time_s",
        postgresql_include=["first_arrived_at"],
    ),
    Index(
        "ix_order_fact_diagnosis_time_s",
        "diagnosis_time_s",
        postgresql_include=["first_diagnosed_at"],
    ),
    Index(
        "ix_order_fact_resolution_time_s",
        "resolution_time_s",
        postgresql_include=["first_final_at"],
    ),
    Index(
        "ix_order_fact_eta_error_s",
        "eta_error_s",
        postgresql_include=["first_arrived_at"],
    ),
    schema=METRICS_SCHEMA,
)

# orders_open is a count "now", not over a window: kept per slice by +1/-1 as orders
# open and close, so reading it costs the number of slices, not of orders (counting
# the open rows scanned the whole table: 20 ms of a 47 ms query at 100,000 orders).
# technician_id is the order's first accepter, '' before one (a key cannot be null).
open_order_count: Final = Table(
    "open_order_count",
    metadata,
    Column("region", Text, primary_key=True),
    Column("category", Text, primary_key=True),
    Column("urgency", Text, primary_key=True),
    Column("technician_id", Text, primary_key=True),
    # '' for facts stored before the channel was kept.
    Column("channel", Text, primary_key=True, server_default=""),
    Column("orders", BigInteger, nullable=False),
    schema=METRICS_SCHEMA,
)

rating: Final = Table(
    "rating",
    metadata,
    Column("event_id", Uuid, primary_key=True),
    Column("order_id", Uuid, nullable=False),
    Column("rated_at", DateTime(timezone=True), nullable=False),
    Column("score", SmallInteger, nullable=False),
    Column("nps", SmallInteger),
    Column("attitude", SmallInteger),
    Column("professionalism", SmallInteger),
    Column("communication", SmallInteger),
    Column("punctuality", SmallInteger),
    Column("price_fairness", SmallInteger),
    Column("technician_id", Text),
    Column("region", Text, nullable=False),
    Column("category", Text, nullable=False),
    Column("urgency", Text, nullable=False),
    Column("channel", Text),
    Index("ix_rating_rated_at", "rated_at"),
    schema=METRICS_SCHEMA,
)

complaint: Final = Table(
    "complaint",
    metadata,
    Column("order_id", Uuid, primary_key=True),
    Column("complaint_id", Text, primary_key=True),
    Column("filed_at", DateTime(timezone=True), nullable=False),
    Column("resolved_at", DateTime(timezone=True)),
    Column("resolution_s", Float),
    Column("technician_id", Text),
    Column("region", Text, nullable=False),
    Column("category", Text, nullable=False),
    Column("urgency", Text, nullable=False),
    Column("channel", Text),
    Index("ix_complaint_resolved_at", "resolved_at"),
    Index(
        "ix_complaint_resolution_s", "resolution_s", postgresql_include=["resolved_at"]
    ),
    schema=METRICS_SCHEMA,
)

# Assignments a technician did not take, declined or left to expire (indicators.md
# v2 counts an expiry against them like a decline): `assignments_declined` and
# `assignments_expired` per technician at `at`, rolled up like the other facts.
# One row per event; only added.
unaccepted_assignment: Final = Table(
    "unaccepted_assignment",
    metadata,
    Column("event_id", Uuid, primary_key=True),
    Column("order_id", Uuid, nullable=False),
    Column("technician_id", Text, nullable=False),
    Column("kind", Text, nullable=False),  # "declined" or "expired"
    Column("at", DateTime(timezone=True), nullable=False),
    Column("region", Text, nullable=False),
    Column("category", Text, nullable=False),
    Column("urgency", Text, nullable=False),
    Column("channel", Text),
    Index("ix_unaccepted_assignment_at", "at"),
    Index("ix_unaccepted_assignment_technician_at", "technician_id", "at"),
    schema=METRICS_SCHEMA,
)

alert: Final = Table(
    "alert",
    metadata,
    Column("alert_id", Uuid, primary_key=True),
    Column("rule", Text, nullable=False),
    Column("scope", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("value", Float, nullable=False),
    Column("threshold", Float, nullable=False),
    Column("samples", Integer, nullable=False),
    Column("raised_at", DateTime(timezone=True), nullable=False),
    Column("cleared_at", DateTime(timezone=True)),
    # At most one open alert per rule and scope: no duplicates while it stays open.
    Index(
        "ix_alert_open_rule_scope",
        "rule",
        "scope",
        unique=True,
        postgresql_where=text("state = 'open'"),
    ),
    schema=METRICS_SCHEMA,
)

# The case of an alert (acknowledged, owned, acted on, closed): its steps, append-only,
# numbered per alert (the key refuses a second writer of the same version). The case
# is their fold (shared.domain.alert_case); `alert_case` below only projects it.
alert_case_event: Final = Table(
    "alert_case_event",
    metadata,
    Column("event_id", Uuid, primary_key=True),
    Column("alert_id", Uuid, nullable=False),
    Column("version", Integer, nullable=False),
    Column("type", Text, nullable=False),
    Column("actor", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("data", Text, nullable=False),  # the step's JSON
    UniqueConstraint("alert_id", "version"),
    schema=METRICS_SCHEMA,
)

# The fold of each case's events, written with each step (and rebuilt from the events
# by `servicetrail metrics rebuild`): the alert list's case columns and the
# alert_ack_time_s / alert_close_time_s indicators read it. `region` and
# `technician_id` come from the alert's scope (the only slices those indicators have).
alert_case: Final = Table(
    "alert_case",
    metadata,
    Column("alert_id", Uuid, primary_key=True),
    Column("version", Integer, nullable=False),
    Column("state", Text, nullable=False),
    Column("owner", Text),
    Column("actions", Integer, nullable=False),
    Column("open_actions", Integer, nullable=False),
    Column("acknowledged_at", DateTime(timezone=True)),
    Column("closed_at", DateTime(timezone=True)),
    Column("ack_time_s", Float),
    Column("close_time_s", Float),
    Column("region", Text),
    Column("technician_id", Text),
    Index("ix_alert_case_acknowledged_at", "acknowledged_at"),
    Index("ix_alert_case_closed_at", "closed_at"),
    schema=METRICS_SCHEMA,
)

# Alerts leave through their own outbox, written with the alert in one transaction.
metrics_outbox: Final = outbox_table(METRICS_SCHEMA)

# The provenance of every answer: the recordedtime of the last applied event.
applied_watermark: Final = Table(
    "applied_watermark",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("last_recorded_at", DateTime(timezone=True), nullable=True),
    CheckConstraint("id = 1", name="single_row"),
    schema=METRICS_SCHEMA,
)

# --- rollups (indicators.md queries that do not grow with history) ---------------------
# One row per (slice, UTC week, day or hour, indicator, histogram bucket), kept by deltas
# between an order's old and new facts in the consumer's transaction. A slice is one
# dimension and its value: ('', '') for all orders, ('region', r), ('category', c),
# ('urgency', u), ('channel', c), ('technician_id', t) with the technician column of
# the indicator.
# Distributions keep one row per bucket (domain.bucket_of): counts merge exactly, and
# the exact nearest-rank value is picked among the per-order values of the one bucket
# holding its rank. A window reads whole weeks from the weekly rows, whole days around
# them from the daily rows, whole hours at its
# edges from the hourly ones, and at most an hour at either end from the facts (a
# 24-hour window is 23 whole hours and two partial ones; with days only, all facts);
# window=all reads the all-time rows.
KEY_COLUMNS: Final = ("dimension", "dimension_value")


def _slice_and_period(periods: list[Column[object]]) -> list[Column[object]]:
    """A rollup's leading key columns: the slice, then the period if it has one."""
    return [
        Column("dimension", Text, nullable=False),
        Column("dimension_value", Text, nullable=False),
        *periods,
    ]


def _indicator_rollup(name: str, period: Column[object] | None) -> Table:
    periods = [] if period is None else [period]
    return Table(
        name,
        metadata,
        *_slice_and_period(periods),
        Column("indicator", Text, nullable=False),
        Column("bucket", Integer, nullable=False),
        Column("n", BigInteger, nullable=False),  # denominator / count
        Column("hits", BigInteger, nullable=False),  # numerator of a rate
        Column("total", Float, nullable=False),  # sum of the values
        # The counters ride in the indexes: a window's rows are read index-only, in
        # key order, instead of from heap pages scattered by the updates.
        PrimaryKeyConstraint(
            *KEY_COLUMNS,
            *(p.name for p in periods),
            "indicator",
            "bucket",
            postgresql_include=["n", "hits", "total"],
        ),
        # The scores read a few indicators of every technician.
        Index(
            f"ix_{name}_indicator",
            "dimension",
            "indicator",
            *(p.name for p in periods),
            postgresql_include=["dimension_value", "n", "hits"],
        ),
        schema=METRICS_SCHEMA,
    )


RATING_LEVEL_COLUMNS: Final = tuple(
    f"{dimension}_{level}"
    for dimension in (
        "attitude",
        "professionalism",
        "communication",
        "punctuality",
        "price_fairness",
    )
    for level in (5, 4, 3, 2, 1)
)
# What the technician scores read of the ratings.
SCORE_COUNTER_COLUMNS: Final = (
    "ratings",
    "satisfied",
    "attitude_sum",
    *RATING_LEVEL_COLUMNS,
)
RATING_COUNTER_COLUMNS: Final = (
    "ratings",
    "satisfied",
    "score_sum",
    "attitude_sum",
    "nps_count",
    "promoters",
    "detractors",
    *RATING_LEVEL_COLUMNS,
)


def _rating_rollup(name: str, period: Column[object] | None) -> Table:
    """Ratings per (slice, period of rated_at): what the rating indicators and the
    technician scores read. Ratings are only ever added."""
    periods = [] if period is None else [period]
    return Table(
        name,
        metadata,
        *_slice_and_period(periods),
        *(Column(c, BigInteger, nullable=False) for c in RATING_COUNTER_COLUMNS),
        PrimaryKeyConstraint(
            *KEY_COLUMNS,
            *(p.name for p in periods),
            # What the scores read of every technician (an index has 32 columns at
            # most).
            postgresql_include=list(SCORE_COUNTER_COLUMNS),
        ),
        # The scores read every technician over a range of periods: without this,
        # the hourly table was scanned whole (100 ms at 1,000,000 events).
        *(
            []
            if period is None
            else [
                Index(
                    f"ix_{name}_scores",
                    "dimension",
                    period.name,
                    postgresql_include=["dimension_value", *SCORE_COUNTER_COLUMNS],
                )
            ]
        ),
        schema=METRICS_SCHEMA,
    )


indicator_day: Final = _indicator_rollup(
    "indicator_day", Column("day", Date, nullable=False)
)
rating_day: Final = _rating_rollup("rating_day", Column("day", Date, nullable=False))
# Monday-aligned UTC weeks (`domain.week_of`): a 30-day window reads four weeks and
# the days around them, not 29 days of rows.
indicator_week: Final = _indicator_rollup(
    "indicator_week", Column("week", Date, nullable=False)
)
rating_week: Final = _rating_rollup("rating_week", Column("week", Date, nullable=False))
indicator_hour: Final = _indicator_rollup(
    "indicator_hour", Column("hour", DateTime(timezone=True), nullable=False)
)
rating_hour: Final = _rating_rollup(
    "rating_hour", Column("hour", DateTime(timezone=True), nullable=False)
)
# All time, per slice: window=all reads a few rows per indicator, not one per day.
indicator_total: Final = _indicator_rollup("indicator_total", None)
rating_total: Final = _rating_rollup("rating_total", None)

# The SLA targets the rollups' SLA hits were counted with (JSON); a policy with other
# targets answers the SLA rates from the facts until a rebuild recounts them. Not
# `complete` after an upgrade of a database that held facts before the rollups
# existed: the queries scan the facts until a rebuild.
rollup_policy: Final = Table(
    "rollup_policy",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("sla", Text, nullable=False),
    Column("complete", Boolean, nullable=False),
    CheckConstraint("id = 1", name="single_rollup_policy"),
    schema=METRICS_SCHEMA,
)

tracking: Final = tracking_tables(METRICS_SCHEMA)
