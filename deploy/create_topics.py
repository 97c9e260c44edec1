"""Create ServiceTrail's Kafka topics; topics that exist are left as they are.

Run after `servicetrail migrate` by the compose `migrate` service and the Kubernetes
migration Job (the image has it at /opt/servicetrail/create_topics.py). It reads the
services' own Kafka settings (KAFKA_BOOTSTRAP_SERVERS, KAFKA_SECURITY_PROTOCOL, the
SASL and TLS variables, KAFKA_TOPIC_PREFIX), so it reaches a secured cluster the way
the services do, plus:

    ORDER_EVENTS_PARTITIONS   partitions of servicetrail.order-events (default 6):
                              at least the largest consumer replica count
    TOPIC_REPLICATION_FACTOR  default 1 (one broker); 3 on a production cluster
    TOPIC_MIN_INSYNC_REPLICAS optional; 2 with a replication factor of 3, so that an
                              acks=all send survives the loss of one broker
    TOPIC_CREATE_TIMEOUT      seconds to keep retrying an unreachable broker (120)

Partitions of an existing topic are never changed: adding partitions moves keys to
other partitions and would break per-order ordering for orders in flight.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError, for_code

from shared.events.topics import DEFAULT_PARTITIONS, ORDER_EVENTS
from shared.kafka.producer import connection_options
from shared.settings import CommonSettings

logger = logging.getLogger("create_topics")


def wanted_topics(prefix: str) -> dict[str, int]:
    partitions = dict(DEFAULT_PARTITIONS)
    configured = os.environ.get("ORDER_EVENTS_PARTITIONS")
    if configured:
        partitions[ORDER_EVENTS] = int(configured)
    return {prefix + topic: count for topic, count in partitions.items()}


def new_topics(wanted: dict[str, int]) -> list[NewTopic]:
    replication = int(os.environ.get("TOPIC_REPLICATION_FACTOR", "1"))
    configs: dict[str, str] = {}
    min_isr = os.environ.get("TOPIC_MIN_INSYNC_REPLICAS")
    if min_isr:
        configs["min.insync.replicas"] = min_isr
    return [
        NewTopic(
            name,
            num_partitions=count,
            replication_factor=replication,
            topic_configs=configs,
        )
        for name, count in wanted.items()
    ]


async def create(settings: CommonSettings) -> None:
    wanted = wanted_topics(settings.kafka_topic_prefix)
    admin = AIOKafkaAdminClient(**connection_options(settings))
    await admin.start()
    try:
        response = await admin.create_topics(new_topics(wanted))
        # (name, code) in version 0 of the response, (name, code, message) later.
        failures = [
            (name, code, rest[0] if rest else "")
            for name, code, *rest in response.topic_errors
            if code not in (0, TopicAlreadyExistsError.errno)
        ]
        if failures:
            name, code, message = failures[0]
            raise for_code(code)(f"could not create topic {name!r}: {message}")
        for topic in await admin.describe_topics(list(wanted)):
            name, count = topic["topic"], len(topic["partitions"])
            if count < wanted[name]:
                logger.warning(
                    "%s has %d partitions, fewer than the %d wanted; left as is",
                    name,
                    count,
                    wanted[name],
                )
            logger.info("topic %s: %d partitions", name, count)
    finally:
        await admin.close()


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    settings = CommonSettings()
    deadline = time.monotonic() + float(os.environ.get("TOPIC_CREATE_TIMEOUT", "120"))
    while True:
        try:
            asyncio.run(create(settings))
        except KafkaConnectionError as err:
            if time.monotonic() > deadline:
                logger.error("Kafka unreachable: %s", err)
                return 1
            logger.info("Kafka not reachable yet (%s); retrying", err)
            time.sleep(2.0)
        else:
            return 0


if __name__ == "__main__":
    sys.exit(main())
