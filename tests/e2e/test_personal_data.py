"""Planted phone numbers and addresses never leave the contact vault, and erasure works.

Several customers post orders with a canary contact (a random name, phone number and
address no other data can contain) and drive them through the lifecycle over HTTP,
writing the free-text fields a person types. The four services run as real processes
at debug log level against a broker of this test's own, so every record and every log
line is this test's. Afterwards no canary may appear anywhere but `intake.contact`:
not in any other table (event store, outbox, ledger bytes, metrics, dispatch), not in
any Kafka record's value, key or headers on any topic, not in any process's log, not
in any `/metrics` exposition. Then one customer's contact is erased: the vault keeps
no trace of it, the erasure logs nothing of it, and the order and the ledger still
read and verify.

This extends `tests/integration/test_thin_path.py` (which looks at one event and one
record in-process) to every place the data could travel.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # ships no stubs
import httpx
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.stack import Stack
from services.stack.broker import EmbeddedBroker, create_topics
from shared.domain.actors import Role
from shared.events.topics import DEFAULT_PARTITIONS
from shared.http.auth import issue_token
from shared.settings import CommonSettings
from tests.e2e.processes import free_port_block, wait_ready
from tests.fixtures.stack import TEST_JWT_SECRET
from tests.http_bodies import new_order_body
from tests.http_events import (
    CATEGORY,
    REGION,
    Json,
    Services,
    accepted_data,
    arrived_data,
    cancelled_data,
    complaint_filed_data,
    complaint_resolved_data,
    completed_data,
    created,
    diagnosed_data,
    event_body,
    priced_data,
    quote_decision_data,
    rated_data,
    reopened_data,
)

pytestmark = pytest.mark.e2e

SERVICES: Final = ("intake", "dispatch", "ledger", "metrics")
CUSTOMERS: Final = 4
TECHNICIANS: Final = ("pd-tech-1", "pd-tech-2")
VAULT: Final = ("intake", "contact")
CONVERGE_SECONDS: Final = 60.0
# Where customer ids (not personal data) must show up: proof the search sees data.
PLAIN_PATHS: Final = (
    "table event_store.order_event",
    "table event_store.outbox_message",
    "table ledger.ledger_entry",
    "topic servicetrail.order-events",
)


@dataclass(frozen=True, slots=True)
class Canary:
    """One customer's planted contact: strings nothing else can contain by chance."""

    customer_id: str
    name: str
    phone: str
    address: str

    @classmethod
    def plant(cls, customer_id: str) -> Canary:
        digits = "".join(secrets.choice("0123456789") for _ in range(10))
        token = secrets.token_hex(8)
        return cls(
            customer_id=customer_id,
            name=f"Canary Name {secrets.token_hex(6)}",
            phone=f"+86 1{digits[:2]} {digits[2:6]} {digits[6:]}",
            address=f"{token} Canary Lane, Room {secrets.randbelow(900) + 100}",
        )

    @property
    def contact(self) -> Json:
        return {"name": self.name, "phone": self.phone, "address": self.address}

    @property
    def needles(self) -> tuple[bytes, ...]:
        """What a leak would contain: whole values, and the parts a reformat keeps."""
        digits = "".join(c for c in self.phone if c.isdigit())
        token = self.address.split(" ", 1)[0]
        name_token = self.name.rsplit(" ", 1)[1]
        return tuple(
            s.encode()
            for s in (self.name, self.phone, self.address, digits, token, name_token)
        )


def leaks(
    canaries: Iterable[Canary], haystacks: Iterable[tuple[str, bytes]]
) -> list[str]:
    """`where: needle` for every needle of every canary found in a haystack."""
    needles = [(c, n) for c in canaries for n in c.needles]
    return [
        f"{where}: {canary.customer_id} {needle.decode()!r}"
        for where, haystack in haystacks
        for canary, needle in needles
        if needle in haystack
    ]


# --- where the data could travel ---------------------------------------------------


def _value_bytes(value: object) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode()


def _blob(rows: Iterable[Mapping[str, object]]) -> bytes:
    """Rows as one searchable byte string, every column included."""
    return b"\n".join(b"\t".join(_value_bytes(v) for v in row.values()) for row in rows)


async def table_rows(
    database_url: str, *, skip: Iterable[tuple[str, str]] = ()
) -> dict[str, bytes]:
    """Every row of every table of every application schema, as one blob per table.

    Read with asyncpg so that bytea (the ledger's canonical bytes, the outbox's
    record values) arrives as raw bytes, and JSONB as its text.
    """
    conn = await asyncpg.connect(database_url)
    try:
        tables = await conn.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE' AND table_schema NOT IN "
            "('pg_catalog', 'information_schema')"
        )
        skipped = set(skip)
        blobs: dict[str, bytes] = {}
        for schema, name in ((t["table_schema"], t["table_name"]) for t in tables):
            if (schema, name) in skipped:
                continue
            rows = await conn.fetch(f'SELECT * FROM "{schema}"."{name}"')
            blobs[f"table {schema}.{name}"] = _blob(dict(row) for row in rows)
        return blobs
    finally:
        await conn.close()


async def vault_rows(database_url: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch('SELECT * FROM "{}"."{}"'.format(*VAULT))
        return [dict(row) for row in rows]
    finally:
        await conn.close()


async def kafka_records(bootstrap: str) -> dict[str, bytes]:
    """Every record on every topic, from the beginning: value, key and headers."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    try:
        partitions = [
            TopicPartition(topic, partition)
            for topic in await consumer.topics()
            for partition in consumer.partitions_for_topic(topic) or ()
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        blobs: dict[str, list[bytes]] = {tp.topic: [] for tp in partitions}
        async with asyncio.timeout(30):
            while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
                batches = await consumer.getmany(timeout_ms=500)
                for tp, records in batches.items():
                    for record in records:
                        parts = [record.key or b"", record.value or b""]
                        parts += [k.encode() + b"=" + v for k, v in record.headers]
                        blobs[tp.topic].append(b"\t".join(parts))
        return {f"topic {t}": b"\n".join(r) for t, r in blobs.items()}
    finally:
        await consumer.stop()


def log_files(home: Path, extra: Iterable[Path]) -> dict[str, bytes]:
    paths = [home / f"{name}.log" for name in SERVICES] + list(extra)
    return {f"log {p.name}": p.read_bytes() for p in paths if p.exists()}


async def postgres_log(database_url: str) -> Path | None:
    """The server's log when it runs on this machine (the embedded test server)."""
    conn = await asyncpg.connect(database_url)
    try:
        data_dir = Path(await conn.fetchval("SHOW data_directory"))
    finally:
        await conn.close()
    path = data_dir / "postgresql.log"
    return path if path.exists() else None


async def metrics_expositions(urls: Mapping[str, str]) -> dict[str, bytes]:
    async with httpx.AsyncClient(timeout=10) as client:
        return {
            f"/metrics of {name}": (await client.get(f"{url}/metrics")).content
            for name, url in urls.items()
        }


# --- the stack ------------------------------------------------------------------


@dataclass
class RunningStack:
    stack: Stack
    settings: CommonSettings
    broker: EmbeddedBroker
    urls: dict[str, str]

    def auth(self, role: Role, subject: str) -> dict[str, str]:
        token = issue_token(self.settings, role=role, subject=subject)
        return {"Authorization": f"Bearer {token}"}


@pytest_asyncio.fixture(loop_scope="session")
async def running_stack(
    database_url: str, tmp_path: Path
) -> AsyncIterator[RunningStack]:
    """The four services at debug level, on this test's database and own broker."""
    broker = EmbeddedBroker(log_file=tmp_path / "broker.log")
    broker.start()
    stack: Stack | None = None
    try:
        await create_topics(broker.bootstrap_servers, DEFAULT_PARTITIONS)
        settings = CommonSettings(
            database_url=database_url,
            kafka_bootstrap_servers=broker.bootstrap_servers,
            jwt_secret=TEST_JWT_SECRET,
        )
        stack = Stack(
            home=tmp_path,
            database_url=database_url,
            kafka_bootstrap=broker.bootstrap_servers,
            extra_env={
                # Debug is where a careless `logger.debug(body)` would show.
                "LOG_LEVEL": "debug",
                "JWT_SECRET": settings.hs256_secret(),
                "KAFKA_SESSION_TIMEOUT_MS": "2000",
                "KAFKA_HEARTBEAT_INTERVAL_MS": "500",
            },
        )
        base = free_port_block(len(SERVICES))
        for n, name in enumerate(SERVICES):
            stack.start_service(name, base + n)
        for service in stack.services.values():
            await asyncio.to_thread(wait_ready, service.url)
        yield RunningStack(
            stack, settings, broker, {n: s.url for n, s in stack.services.items()}
        )
    finally:
        if stack is not None:
            stack.stop()
        broker.stop()


# --- driving orders ----------------------------------------------------------------


async def wait_assigned(services: Services, order_id: str) -> str:
    """The technician auto-assignment picked (dispatch consumes `created`)."""
    async with asyncio.timeout(CONVERGE_SECONDS):
        while True:
            order = await services.order(order_id)
            if order["status"] == "assigned":
                return str(order["technician_id"])
            await asyncio.sleep(0.1)


async def full_lifecycle(services: Services, canary: Canary) -> str:
    """Create, assign, visit, re-quote, complete, rate, complain, reopen."""
    customer = canary.customer_id
    order_id = await services.create_order(
        customer,
        contact=canary.contact,
        description="空调不制冷 - please call before coming, the doorbell is broken",
    )

    async def tech(technician: str, type_: str, data: Json) -> Json:
        return created(
            await services.technician_posts(
                order_id, technician, event_body(type_, data)
            )
        )

    async def cust(type_: str, data: Json) -> Json:
        return created(
            await services.customer_posts(order_id, customer, event_body(type_, data))
        )

    technician = await wait_assigned(services, order_id)
    await tech(technician, "accepted", accepted_data(technician))
    await tech(technician, "arrived", arrived_data(technician))
    await tech(technician, "diagnosed", diagnosed_data())
    first = await tech(technician, "priced", priced_data(30_000))
    await cust("quote_rejected", quote_decision_data(first["event"]["id"]))
    second = await tech(technician, "priced", priced_data(24_000))
    await cust("quote_approved", quote_decision_data(second["event"]["id"]))
    await tech(technician, "completed", completed_data(24_000))
    await cust(
        "rated",
        {**rated_data(2), "comment": "来得很晚 - arrived late, rude on the phone"},
    )
    complaint = f"pd-{secrets.token_hex(4)}"
    await cust("complaint_filed", complaint_filed_data(complaint))
    resolved = await services.dispatch.post(
        f"/v1/orders/{order_id}/events",
        headers=services.dispatcher,
        json=event_body("complaint_resolved", complaint_resolved_data(complaint)),
    )
    created(resolved)
    await cust("reopened", reopened_data())
    return order_id


async def cancelled_order(services: Services, canary: Canary) -> str:
    """Created, then cancelled by the customer; the retry and the misuses refused."""
    body = new_order_body(category=CATEGORY, region=REGION, contact=canary.contact)
    headers = services.customer(canary.customer_id)
    order_id = str(
        created(await services.intake.post("/v1/orders", headers=headers, json=body))[
            "order_id"
        ]
    )
    # A mobile retry of the same request: the stored event, no second contact row.
    retry = await services.intake.post("/v1/orders", headers=headers, json=body)
    assert created(retry)["order_id"] == order_id
    # The same id with another contact is refused: the refusal keeps no contact.
    other = {**canary.contact, "address": canary.address + " (moved)"}
    reused = await services.intake.post(
        "/v1/orders", headers=headers, json={**body, "contact": other}
    )
    assert reused.status_code == 409, reused.text
    # A malformed phone is refused by validation; the problem must not echo it.
    malformed = {**canary.contact, "phone": canary.phone + " ext " + canary.name}
    refused = await services.intake.post(
        "/v1/orders",
        headers=headers,
        json=new_order_body(contact=malformed),
    )
    assert refused.status_code == 422, refused.text
    assert leaks([canary], [("422 body", refused.content)]) == []
    # Cancelled once assigned: racing the auto-assignment would be a version conflict.
    await wait_assigned(services, order_id)
    created(
        await services.customer_posts(
            order_id, canary.customer_id, event_body("cancelled", cancelled_data())
        )
    )
    return order_id


async def converged(
    database_url: str, metrics_url: str, auth: Mapping[str, str]
) -> int:
    """Wait until the ledger holds the event store and metrics counted every order."""
    conn = await asyncpg.connect(database_url)
    try:
        async with (
            asyncio.timeout(CONVERGE_SECONDS),
            httpx.AsyncClient(timeout=10) as client,
        ):
            while True:
                stored = await conn.fetchval(
                    "SELECT count(*) FROM event_store.order_event"
                )
                ledger = await conn.fetchval("SELECT count(*) FROM ledger.ledger_entry")
                orders = await conn.fetchval(
                    "SELECT count(DISTINCT order_id) FROM event_store.order_event"
                )
                indicators = (
                    await client.get(
                        f"{metrics_url}/v1/indicators?window=all", headers=auth
                    )
                ).json()
                counted = indicators["indicators"]["orders_created"]["value"]
                if stored == ledger and counted == orders:
                    return int(stored)
                await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def verify_ledger(ledger_url: str, headers: Mapping[str, str]) -> Json:
    """The last line of the streamed whole-ledger verification."""
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(f"{ledger_url}/v1/ledger/verify", headers=headers)
    assert response.status_code == 200, response.text
    lines = [json.loads(line) for line in response.text.splitlines() if line]
    result: Json = lines[-1]["result"]
    return result


def listing(found: list[str]) -> str:
    """One line per leak, so a failure reads as the list of places."""
    return "\n".join(sorted(set(found)))


# --- the test -------------------------------------------------------------------


async def test_planted_contacts_stay_in_the_vault_and_erasure_removes_them(
    running_stack: RunningStack, database_url: str, tmp_path: Path
) -> None:
    urls = running_stack.urls
    canaries = [
        Canary.plant(f"pd-cust-{n}-{secrets.token_hex(3)}") for n in range(CUSTOMERS)
    ]
    async with (
        httpx.AsyncClient(base_url=urls["intake"], timeout=15) as intake,
        httpx.AsyncClient(base_url=urls["dispatch"], timeout=15) as dispatch,
    ):
        services = Services(intake, dispatch, running_stack.auth)
        for technician in TECHNICIANS:
            await services.register_technician(technician)
        orders: dict[str, list[str]] = {}
        for canary in canaries:
            orders[canary.customer_id] = [
                await full_lifecycle(services, canary),
                await cancelled_order(services, canary),
            ]
        events = await converged(
            database_url,
            urls["metrics"],
            running_stack.auth(Role.DISPATCHER, "pd-dispatcher"),
        )
        assert events >= CUSTOMERS * 16

        # The canaries were really planted: the vault holds every one of them.
        vault = _blob(await vault_rows(database_url))
        for canary in canaries:
            assert canary.phone.encode() in vault
            assert canary.address.encode() in vault

        pg_log = await postgres_log(database_url)
        extra_logs = (
            [running_stack.broker.log_file] if running_stack.broker.log_file else []
        )
        extra_logs += [pg_log] if pg_log is not None else []
        haystacks = {
            **await table_rows(database_url, skip=[VAULT]),
            **await kafka_records(running_stack.broker.bootstrap_servers),
            **log_files(tmp_path, extra_logs),
            **await metrics_expositions(urls),
        }
        # The search can find what is there: every customer id travels through the
        # event store, the outbox, the ledger and Kafka. (The relay sends record
        # batches, which aiokafka does not log record by record, so no log is known
        # to hold an id; the logs are searched at debug level, their most verbose.)
        for where in PLAIN_PATHS:
            assert all(c.customer_id.encode() in haystacks[where] for c in canaries), (
                where
            )
        assert all(f"log {name}.log" in haystacks for name in SERVICES)
        relay_logs = haystacks["log intake.log"] + haystacks["log dispatch.log"]
        assert b" DEBUG " in relay_logs, "the services do not log at debug level"
        assert listing(leaks(canaries, haystacks.items())) == ""

        # Erasure: the first customer's contact leaves the vault for good.
        erased, kept = canaries[0], canaries[1:]
        response = await intake.delete(
            f"/v1/customers/{erased.customer_id}/contact",
            headers=running_stack.auth(Role.ADMIN, "pd-admin"),
        )
        assert response.status_code == 200, response.text
        assert response.json()["contacts_erased"] == 2  # one row per order
        rows = await vault_rows(database_url)
        assert not [r for r in rows if r["customer_id"] == erased.customer_id]
        vault = _blob(rows)
        assert leaks([erased], [("vault", vault)]) == []
        assert all(c.phone.encode() in vault for c in kept)

        # Nothing else changed: the orders still read, the ledger still verifies.
        statuses = []
        for order_id in orders[erased.customer_id]:
            own = await intake.get(
                f"/v1/orders/{order_id}", headers=services.customer(erased.customer_id)
            )
            assert own.status_code == 200, own.text
            assert own.json() == await services.order(order_id)  # as a dispatcher
            statuses.append(own.json()["status"])
        # A reopened order is offered again (dispatch's consumer may not have got
        # to it yet); the other one was cancelled.
        assert statuses[0] in ("created", "assigned")
        assert statuses[1] == "cancelled"
        auditor = running_stack.auth(Role.AUDITOR, "pd-auditor")
        verified = await verify_ledger(urls["ledger"], auditor)
        assert verified["valid"] is True, verified
        assert verified["events"] >= events

        # The erasure itself left no copy behind in any log.
        after = log_files(tmp_path, extra_logs)
        assert listing(leaks(canaries, after.items())) == ""
