"""Red team: callers with valid tokens try every known way to break the promises.

One `servicetrail up` from an empty home (embedded PostgreSQL and broker, the four
services as processes) is attacked the way the trust-boundary issue found it could
be: over-long token subjects, dates that overflow or lie, a reopen long after the
warranty, personal data or another customer's vault reference planted as
`contact_ref`, a cancel racing auto-assignment, duplicated `Authorization` headers,
a `system` token, business figures on an open `/metrics`, a forged record produced
straight to the topic, a client vanishing mid-body, a secretless service start.
Every probe must be answered 4xx (never 5xx), and afterwards the ledger must hold
exactly the event store (complete, verified) and the contact vault exactly the
contacts of the orders that were really created.

The tests share the stack and run in file order; the last one checks the aftermath.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # ships no stubs
import httpx
import jwt
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from services.stack import read_secret
from services.stack.postgres import SUPERUSER
from services.stack.servers import free_port
from shared.db.roles import url_as
from shared.events.topics import DEAD_LETTER, ORDER_EVENTS
from tests.builders import random_ref
from tests.e2e.processes import free_port_block, wait_ready
from tests.http_bodies import new_order_body
from tests.http_events import (
    CATEGORY,
    REGION,
    Json,
    Order,
    Services,
    cancelled_data,
    completed_data,
    event_body,
    reopened_data,
)
from tests.http_raw import get_request, read_response

pytestmark = pytest.mark.e2e

SERVICES: Final = ("intake", "dispatch", "ledger", "metrics")
# Short enough to outwait in a test: the reopen probe completes an order, waits past
# the window and reopens with a device `time` just after the completion.
WARRANTY_SECONDS: Final = 3
CONVERGE_SECONDS: Final = 60.0
TOKEN_COMMAND: Final = (sys.executable, "-m", "services.cli", "token")


@dataclass
class Stack:
    """The running stack: its home, URLs and what the probes legitimately created."""

    home: Path
    env: dict[str, str]
    urls: dict[str, str]
    secret: str
    database_url: str
    kafka_bootstrap: str
    contact_refs: set[str] = field(default_factory=set)

    def token(self, role: str, subject: str, **claims: Any) -> str:
        now = datetime.now(UTC)
        payload = {
            "sub": subject,
            "role": role,
            "iss": "servicetrail",
            "iat": now,
            "exp": now + timedelta(hours=1),
            **claims,
        }
        return jwt.encode(payload, self.secret, algorithm="HS256")

    def auth(self, role: str, subject: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(role, subject)}"}

    def port(self, service: str) -> int:
        return int(self.urls[service].rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    # Not under pytest's tmp tree: it is 0700 for root, and PostgreSQL runs as
    # another user (see `scratch_dir`).
    scratch = Path(tempfile.mkdtemp(prefix="servicetrail-red-team-"))
    home = scratch / "home"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "JWT_SECRET")
    }
    base = free_port_block(4)
    env.update(
        SERVICETRAIL_HOME=str(home),
        SERVICETRAIL_BASE_PORT=str(base),
        SERVICETRAIL_POSTGRES_PORT=str(free_port()),
        SERVICETRAIL_BROKER_PORT=str(free_port()),
        WARRANTY_WINDOW=f"PT{WARRANTY_SECONDS}S",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "up"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        urls = {name: f"http://127.0.0.1:{base + n}" for n, name in enumerate(SERVICES)}
        for url in urls.values():
            wait_ready(url, timeout=120)
        state = json.loads((home / "stack.json").read_text())
        owner = url_as(
            state["database_url"],
            SUPERUSER,
            read_secret(Path(state["database_password_file"])),
        )
        yield Stack(
            home=home,
            env=env,
            urls=urls,
            secret=read_secret(home / "jwt-secret"),
            database_url=owner,
            kafka_bootstrap=state["kafka_bootstrap_servers"],
        )
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(scratch, ignore_errors=True)


@asynccontextmanager
async def services(stack: Stack) -> AsyncIterator[Services]:
    async with (
        httpx.AsyncClient(base_url=stack.urls["intake"], timeout=10) as intake,
        httpx.AsyncClient(base_url=stack.urls["dispatch"], timeout=10) as dispatch,
    ):
        yield Services(intake, dispatch, lambda role, sub: stack.auth(role, sub))


def refused(response: httpx.Response, status: int, code: str | None = None) -> None:
    """A problem+json refusal with this status (and stable type)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    if code is not None:
        assert response.json()["type"] == f"urn:servicetrail:problem:{code}"


async def create_order(stack: Stack, customer: str, **overrides: Any) -> Json:
    async with httpx.AsyncClient(base_url=stack.urls["intake"], timeout=10) as client:
        response = await client.post(
            "/v1/orders",
            json=new_order_body(category=CATEGORY, region=REGION, **overrides),
            headers=stack.auth("customer", customer),
        )
    assert response.status_code == 201, response.text
    body: Json = response.json()
    stack.contact_refs.add(body["event"]["data"]["contact_ref"])
    return body


# --- the probes -------------------------------------------------------------------


async def test_a_subject_longer_than_the_envelope_allows_is_refused(
    stack: Stack,
) -> None:
    async with httpx.AsyncClient(base_url=stack.urls["intake"], timeout=10) as client:
        for subject in ("c" * 200, "c" * 129, "has space", "tab\tbed", "ü" * 10):
            response = await client.post(
                "/v1/orders",
                json=new_order_body(),
                headers={"Authorization": f"Bearer {stack.token('customer', subject)}"},
            )
            refused(response, 401)


def test_servicetrail_token_refuses_such_a_subject(stack: Stack) -> None:
    printed = subprocess.run(
        [*TOKEN_COMMAND, "--role", "customer", "--sub", "c" * 200],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert printed.returncode != 0
    assert "c" * 200 not in printed.stdout


async def test_an_overflowing_time_is_a_422_and_the_connection_serves_on(
    stack: Stack,
) -> None:
    body = json.dumps(new_order_body(time="0001-01-01T00:00:00+14:00")).encode()
    token = stack.token("customer", "red-time")
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.port("intake"))
    try:
        writer.write(
            b"POST /v1/orders HTTP/1.1\r\nHost: red\r\n"
            + f"Authorization: Bearer {token}\r\n".encode()
            + b"content-type: application/json\r\n"
            + f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        status, answer = await asyncio.wait_for(read_response(reader), 10)
        assert status == 422, answer
        writer.write(get_request("/healthz"))
        status, _ = await asyncio.wait_for(read_response(reader), 10)
        assert status == 200
    finally:
        writer.close()


async def test_backdated_and_future_times_are_refused(stack: Stack) -> None:
    now = datetime.now(UTC)
    async with httpx.AsyncClient(base_url=stack.urls["intake"], timeout=10) as client:
        for moment in (
            "2001-01-01T00:00:00Z",
            (now - timedelta(hours=73)).isoformat(),
            (now + timedelta(minutes=6)).isoformat(),
            "9999-12-31T23:59:59-23:59",
            "2026-12-31T23:59:60Z",
        ):
            response = await client.post(
                "/v1/orders",
                json=new_order_body(time=moment),
                headers=stack.auth("customer", "red-backdate"),
            )
            assert response.status_code == 422, (moment, response.text)


async def test_a_reopen_after_the_warranty_is_refused_whatever_time_it_claims(
    stack: Stack,
) -> None:
    async with services(stack) as apps:
        order = await real_order(stack, apps)
        await order.to_approved()
        done = await order.technician("completed", completed_data())
        completed_at = datetime.fromisoformat(done["event"]["time"])
        await asyncio.sleep(WARRANTY_SECONDS + 1)
        response = await apps.customer_posts(
            order.order_id,
            order.customer_id,
            event_body(
                "reopened",
                reopened_data(),
                time=completed_at + timedelta(milliseconds=1),
            ),
        )
        refused(response, 409, "warranty_window_expired")


async def test_contact_ref_is_only_a_reference_the_vault_holds_for_that_customer(
    stack: Stack,
) -> None:
    victim = await create_order(stack, "red-victim")
    victims_ref = victim["event"]["data"]["contact_ref"]
    async with httpx.AsyncClient(base_url=stack.urls["intake"], timeout=10) as client:
        for planted in (
            "+86 138 0000 0000",
            "1 Demo Road",
            str(uuid.uuid4()),
            victims_ref,
        ):
            body = new_order_body(contact_ref=planted)
            del body["contact"]
            response = await client.post(
                "/v1/orders", json=body, headers=stack.auth("customer", "red-thief")
            )
            assert response.status_code == 422, (planted, response.text)


async def test_a_cancel_racing_auto_assignment_is_never_lost(stack: Stack) -> None:
    async with services(stack) as apps:
        # A trade of its own, so this technician takes no other probe's orders.
        trade = "red-race-trade"
        await apps.register_technician(random_ref("red-tech"), skills=(trade,))
        outcomes = []
        for _ in range(20):
            customer = random_ref("red-race")
            order_id = await apps.create_order(customer, category=trade)
            stack.contact_refs.add(await contact_ref_of(stack, order_id))
            cancel = event_body("cancelled", cancelled_data())
            first = await apps.customer_posts(order_id, customer, cancel)
            again = await apps.customer_posts(order_id, customer, cancel)
            assert first.status_code == again.status_code == 201, first.text
            outcomes.append((await apps.order(order_id))["status"])
        assert set(outcomes) == {"cancelled"}


async def test_headers_roles_and_operational_endpoints_give_nothing_away(
    stack: Stack,
) -> None:
    customer = stack.auth("customer", "red-headers")["Authorization"]
    other = stack.auth("customer", "red-other")["Authorization"]
    async with httpx.AsyncClient(timeout=10) as client:
        two = await client.get(
            f"{stack.urls['intake']}/v1/orders",
            headers=[("Authorization", customer), ("Authorization", other)],
        )
        refused(two, 400)
        system = await client.get(
            f"{stack.urls['intake']}/v1/orders",
            headers={"Authorization": f"Bearer {stack.token('system', 'intake')}"},
        )
        refused(system, 401)
        exposition = (await client.get(f"{stack.urls['metrics']}/metrics")).text
        assert "servicetrail_indicator{" not in exposition


async def test_a_forged_record_on_the_topic_is_dead_lettered_not_ledgered(
    stack: Stack,
) -> None:
    async with services(stack) as apps:
        order = await real_order(stack, apps)
        await order.assign()
        real = await order.technician(
            "accepted", {"technician_id": order.technician_id, "eta_minutes": 30}
        )
        forged = {
            **real["event"],
            "id": str(uuid.uuid4()),
            "orderversion": real["orderversion"] + 1,
            "type": "servicetrail.order.cancelled",
            "dataschema": "urn:servicetrail:order.cancelled:1",
            "data": {"reason": "forged"},
        }
        producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(
                ORDER_EVENTS,
                json.dumps(forged).encode(),
                key=order.order_id.encode(),
                headers=[("content-type", b"application/cloudevents+json")],
            )
        finally:
            await producer.stop()
        arrived = await order.technician(
            "arrived", {"technician_id": order.technician_id}
        )
    history = await ledger_history(stack, order.order_id, versions=3)
    assert [e["event"]["id"] for e in history][-1] == arrived["event"]["id"]
    assert forged["id"] in await dead_lettered_ids(stack)


async def test_a_client_gone_mid_body_leaves_no_error_in_the_logs(
    stack: Stack,
) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", stack.port("intake"))
    writer.write(
        b"POST /v1/orders HTTP/1.1\r\nHost: red\r\n"
        + f"Authorization: Bearer {stack.token('customer', 'red-gone')}\r\n".encode()
        + b"content-type: application/json\r\ncontent-length: 5000\r\n\r\n{"
    )
    await writer.drain()
    await asyncio.sleep(0.3)
    writer.close()
    await asyncio.sleep(0.5)
    log = (stack.home / "intake.log").read_text(errors="replace")
    assert "Traceback" not in log
    assert "unhandled error" not in log


def test_a_service_without_a_secret_refuses_to_start(stack: Stack) -> None:
    env = {k: v for k, v in stack.env.items() if k != "JWT_SECRET"}
    env.update(PORT=str(free_port()), DATABASE_URL=stack.database_url)
    started = subprocess.run(
        [sys.executable, "-m", "services.intake"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode != 0
    assert "JWT_SECRET" in started.stdout + started.stderr


# --- the aftermath ----------------------------------------------------------------


async def test_afterwards_the_ledger_is_complete_and_the_vault_holds_only_real_orders(
    stack: Stack,
) -> None:
    auditor = stack.auth("auditor", "red-auditor")
    deadline = time.monotonic() + CONVERGE_SECONDS
    async with httpx.AsyncClient(base_url=stack.urls["ledger"], timeout=30) as client:
        while True:
            complete = await client.get("/v1/ledger/completeness", headers=auditor)
            assert complete.status_code == 200, complete.text
            figures = complete.json()
            if figures["missing_from_ledger"] == 0:
                break
            assert time.monotonic() < deadline, figures
            await asyncio.sleep(0.5)
        verdict = await client.get("/v1/ledger/verify", headers=auditor)
        assert verdict.status_code == 200
        assert '"valid": true' in verdict.text.replace('"valid":true', '"valid": true')
    conn = await asyncpg.connect(stack.database_url)
    try:
        vault = {
            str(r["contact_ref"])
            for r in await conn.fetch("SELECT contact_ref FROM intake.contact")
        }
        stored = await conn.fetchval("SELECT count(*) FROM event_store.order_event")
        ledgered = await conn.fetchval("SELECT count(*) FROM ledger.ledger_entry")
    finally:
        await conn.close()
    assert vault == stack.contact_refs
    assert stored == ledgered


# --- helpers ----------------------------------------------------------------------


async def real_order(stack: Stack, apps: Services) -> Order:
    """An order created the honest way, its contact noted as expected in the vault."""
    order = await Order.create(apps)
    stack.contact_refs.add(await contact_ref_of(stack, order.order_id))
    return order


async def contact_ref_of(stack: Stack, order_id: str) -> str:
    conn = await asyncpg.connect(stack.database_url)
    try:
        ref: str = await conn.fetchval(
            "SELECT envelope->'data'->>'contact_ref' FROM event_store.order_event "
            "WHERE order_id = $1 AND version = 1",
            uuid.UUID(order_id),
        )
    finally:
        await conn.close()
    return ref


async def ledger_history(
    stack: Stack, order_id: str, *, versions: int
) -> list[dict[str, Any]]:
    auditor = stack.auth("auditor", "red-auditor")
    deadline = time.monotonic() + CONVERGE_SECONDS
    async with httpx.AsyncClient(base_url=stack.urls["ledger"], timeout=10) as client:
        while True:
            response = await client.get(
                f"/v1/orders/{order_id}/history", headers=auditor
            )
            if response.status_code == 200:
                entries: list[dict[str, Any]] = response.json()["entries"]
                if len(entries) >= versions + 1:
                    return entries
            assert time.monotonic() < deadline, response.text
            await asyncio.sleep(0.2)


async def dead_lettered_ids(stack: Stack) -> set[str]:
    consumer = AIOKafkaConsumer(
        DEAD_LETTER,
        bootstrap_servers=stack.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    try:
        found: set[str] = set()
        batches = await consumer.getmany(timeout_ms=3000)
        for records in batches.values():
            for record in records:
                try:
                    found.add(json.loads(record.value or b"{}")["id"])
                except (ValueError, KeyError):
                    continue
        return found
    finally:
        await consumer.stop()
