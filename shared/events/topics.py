"""Kafka topic names, consumer group names and CloudEvents constants, in one place."""

from __future__ import annotations

from typing import Final

ORDER_EVENTS: Final = "servicetrail.order-events"
QUALITY_ALERTS: Final = "servicetrail.quality-alerts"
DEAD_LETTER: Final = "servicetrail.dead-letter"

# Partitions per topic in the embedded stack; production sizes them for its consumers.
DEFAULT_PARTITIONS: Final = {ORDER_EVENTS: 6, QUALITY_ALERTS: 1, DEAD_LETTER: 1}

LEDGER_GROUP: Final = "servicetrail.ledger.append"
METRICS_GROUP: Final = "servicetrail.metrics.indicators"
DISPATCH_GROUP: Final = "servicetrail.dispatch.assignment"
DISPATCH_QUALITY_GROUP: Final = "servicetrail.dispatch.quality"

CLOUDEVENTS_CONTENT_TYPE: Final = "application/cloudevents+json"
SOURCE_INTAKE: Final = "/servicetrail/intake"
SOURCE_DISPATCH: Final = "/servicetrail/dispatch"
