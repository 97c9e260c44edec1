"""The embedded PostgreSQL and Tansu broker, and the session fixtures built on them."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections import defaultdict
from pathlib import Path

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # ships no stubs
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from services.stack.broker import EmbeddedBroker, create_topics
from services.stack.postgres import EmbeddedPostgres
from services.stack.servers import PortInUseError, free_port
from tests.fixtures.kafka import random_topic_name
from tests.fixtures.postgres import DatabaseFactory

pytestmark = pytest.mark.integration


async def fetch_value(url: str, query: str) -> object:
    connection = await asyncpg.connect(url)
    try:
        return await connection.fetchval(query)
    finally:
        await connection.close()


class TestPostgresFixtures:
    async def test_session_server_is_postgresql(self, postgres_server_url: str) -> None:
        version = await fetch_value(postgres_server_url, "select version()")

        assert isinstance(version, str)
        assert version.startswith("PostgreSQL ")

    async def test_fresh_databases_are_distinct_and_empty(
        self, fresh_database: DatabaseFactory
    ) -> None:
        first = await fresh_database("embedded")
        second = await fresh_database("embedded")
        connection = await asyncpg.connect(first)
        try:
            await connection.execute("create table marker (id int primary key)")
        finally:
            await connection.close()

        assert first != second
        assert await fetch_value(first, "select current_database()") != (
            await fetch_value(second, "select current_database()")
        )
        assert await fetch_value(second, "select to_regclass('marker')") is None

    async def test_fresh_database_copies_a_template(
        self, fresh_database: DatabaseFactory
    ) -> None:
        template_url = await fresh_database("template")
        connection = await asyncpg.connect(template_url)
        try:
            await connection.execute("create table seeded (id int primary key)")
            template = await connection.fetchval("select current_database()")
        finally:
            await connection.close()

        copy = await fresh_database("copy", template=template)

        assert await fetch_value(copy, "select to_regclass('seeded')::text") == "seeded"


class TestEmbeddedPostgres:
    async def test_data_directory_survives_a_restart(self, scratch_dir: Path) -> None:
        server = EmbeddedPostgres(scratch_dir / "pgdata", fsync=False)
        try:
            await asyncio.to_thread(server.start)
            url = server.create_database("kept")
            connection = await asyncpg.connect(url)
            try:
                await connection.execute("create table note (body text not null)")
                await connection.execute("insert into note values ('still here')")
                cluster_id = await connection.fetchval(
                    "select system_identifier from pg_control_system()"
                )
            finally:
                await connection.close()
            await asyncio.to_thread(server.stop)
            assert not server.is_running()

            await asyncio.to_thread(server.start)

            assert await fetch_value(
                server.url_for("kept"), "select body from note"
            ) == ("still here")
            # The same cluster, not a re-initialised one that happens to be empty.
            assert (
                await fetch_value(
                    server.url, "select system_identifier from pg_control_system()"
                )
                == cluster_id
            )
        finally:
            await asyncio.to_thread(server.stop)

    async def test_start_adopts_a_server_already_running_on_the_directory(
        self, scratch_dir: Path
    ) -> None:
        first = EmbeddedPostgres(scratch_dir / "pgdata", fsync=False)
        try:
            await asyncio.to_thread(first.start)
            second = EmbeddedPostgres(scratch_dir / "pgdata")

            await asyncio.to_thread(second.start)

            assert second.url == first.url
            assert second.is_running()
        finally:
            await asyncio.to_thread(first.stop)

    def test_start_refuses_a_port_in_use(self, scratch_dir: Path) -> None:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            port = listener.getsockname()[1]
            server = EmbeddedPostgres(scratch_dir / "pgdata", port=port)

            with pytest.raises(PortInUseError, match=str(port)):
                server.start()


class TestBroker:
    async def test_keyed_messages_come_back_in_order_per_partition(
        self, kafka_bootstrap: str
    ) -> None:
        topic = random_topic_name()
        await create_topics(kafka_bootstrap, {topic: 3})
        await create_topics(kafka_bootstrap, {topic: 3})  # idempotent
        produced: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
        partition_of_key: dict[bytes, set[int]] = defaultdict(set)

        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for sequence in range(100):
                key, value = f"order-{sequence % 10}".encode(), str(sequence).encode()
                metadata = await producer.send_and_wait(topic, value, key=key)
                produced[metadata.partition].append((key, value))
                partition_of_key[key].add(metadata.partition)
        finally:
            await producer.stop()

        consumed: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=f"servicetrail.test.{uuid.uuid4().hex[:8]}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Tansu holds a new group's first JoinGroup for half the session timeout
            # (5 s at the default 10 s); a short one keeps this test quick.
            session_timeout_ms=2000,
            heartbeat_interval_ms=500,
        )
        await consumer.start()
        try:
            async with asyncio.timeout(30):
                while sum(map(len, consumed.values())) < 100:
                    batches = await consumer.getmany(timeout_ms=500)
                    for partition, records in batches.items():
                        consumed[partition.partition] += [
                            (record.key, record.value) for record in records
                        ]
            await consumer.commit()
            committed = {
                partition: await consumer.committed(TopicPartition(topic, partition))
                for partition in consumed
            }
        finally:
            await consumer.stop()

        assert consumed == produced
        assert set(produced) == {0, 1, 2}
        assert all(len(partitions) == 1 for partitions in partition_of_key.values())
        assert committed == {p: len(records) for p, records in produced.items()}

    async def test_restart_keeps_the_port_and_forgets_topics(
        self, tmp_path: Path
    ) -> None:
        broker = EmbeddedBroker(port=free_port(), log_file=tmp_path / "tansu.log")
        try:
            await asyncio.to_thread(broker.start)
            bootstrap = broker.bootstrap_servers
            topic = random_topic_name()
            await create_topics(bootstrap, {topic: 1})

            await asyncio.to_thread(broker.kill)
            await asyncio.to_thread(broker.restart)

            assert broker.bootstrap_servers == bootstrap
            admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
            await admin.start()
            try:
                assert topic not in await admin.list_topics()
            finally:
                await admin.close()
        finally:
            broker.stop()
        assert not broker.is_running()
